"""The actions a presenter can bind to keys, their default keys, and conflicts (Qt-free).

Keys are written as Qt's portable key sequences (``"Ctrl+Shift+G"``); the window captures and
normalises them, and the settings keep only what differs from the defaults. Two actions on one
key is a conflict: the Settings dialog flags it and does not save until it is solved.

Keys that belong to one widget (Space = GO in the cue list, Ctrl+Enter in the composer, Esc,
Delete in the queue) are not here: they work only where the focus is and cannot clash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final


@dataclasses.dataclass(frozen=True)
class Action:
    name: str
    label: str
    default: str
    group: str


ACTIONS: Final[tuple[Action, ...]] = (
    Action("go", "GO: speak the standby cue", "Ctrl+G", "Show"),
    Action("go_now", "GO now: cut in with the standby cue", "Ctrl+Shift+G", "Show"),
    Action("back", "Back: the previous cue stands by", "Ctrl+Shift+B", "Show"),
    Action("skip", "Skip: the next cue stands by", "Ctrl+Shift+J", "Show"),
    Action("stop", "Stop the avatar now", "Ctrl+.", "Speech"),
    Action("speak_now", "Speak the composer's text now", "Ctrl+Shift+Return", "Speech"),
    Action("create", "Create a session", "Ctrl+Shift+N", "Session"),
    Action("terminate", "Terminate the session", "Ctrl+Shift+W", "Session"),
    Action("audience", "Audience output on / off", "Ctrl+Shift+O", "Output"),
    Action("captions", "Captions on / off", "Ctrl+Shift+C", "Output"),
    Action("show_mode", "Show mode on / off", "Ctrl+Shift+M", "Show"),
    Action("open_script", "Open a script", "Ctrl+O", "Script"),
    Action("save_script", "Save the script", "Ctrl+S", "Script"),
    Action("full_screen", "Full screen (the console)", "F11", "Window"),
)
BY_NAME: Final = {action.name: action for action in ACTIONS}
#: Keys the app keeps for itself (not rebindable): an action bound to one is a conflict too.
RESERVED: Final = {"Ctrl+Q": "Quit"}
RESERVED_PREFIX: Final = "reserved:"


def label(name: str) -> str:
    """An action's label, or a reserved key's (``reserved:Quit`` → ``Quit``)."""
    if name.startswith(RESERVED_PREFIX):
        return name[len(RESERVED_PREFIX) :]
    return BY_NAME[name].label if name in BY_NAME else name


def bindings(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every action's key: the default unless ``overrides`` says otherwise (``""``: none).
    Overrides for actions that do not exist (an older or newer version) are ignored."""
    keys = {action.name: action.default for action in ACTIONS}
    for name, key in (overrides or {}).items():
        if name in keys:
            keys[name] = key.strip()
    return keys


def overrides_of(keys: Mapping[str, str]) -> dict[str, str]:
    """Only what differs from the defaults (what the settings file keeps)."""
    return {
        name: key.strip()
        for name, key in keys.items()
        if name in BY_NAME and key.strip() != BY_NAME[name].default
    }


def _norm(key: str) -> str:
    return key.strip().casefold()


def conflicts(keys: Mapping[str, str]) -> dict[str, list[str]]:
    """For each action whose key another action (or a reserved key, named
    ``reserved:LABEL``) has too: those others, by name. Reserved keys get no entry."""
    holders: dict[str, list[str]] = {}
    for key, what in RESERVED.items():
        holders.setdefault(_norm(key), []).append(RESERVED_PREFIX + what)
    for name, key in keys.items():
        if _norm(key):
            holders.setdefault(_norm(key), []).append(name)
    clashes: dict[str, list[str]] = {}
    for names in holders.values():
        if len(names) > 1:
            for name in names:
                if not name.startswith(RESERVED_PREFIX):
                    clashes[name] = [other for other in names if other != name]
    return clashes


__all__ = ["ACTIONS", "BY_NAME", "RESERVED", "Action", "bindings", "conflicts", "label"]
