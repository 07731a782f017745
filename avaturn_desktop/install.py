"""``avaturn-desktop install-desktop``: the menu entry, the icon and an autostart entry.

Installs for the current user, where the freedesktop.org specifications say desktops look:

* the menu entry: ``$XDG_DATA_HOME/applications/avaturn-desktop.desktop``;
* the icon: ``$XDG_DATA_HOME/icons/hicolor/scalable/apps/avaturn-desktop.svg``;
* with ``--autostart``: ``$XDG_CONFIG_HOME/autostart/avaturn-desktop.desktop`` (started at
  login; with ``--kiosk`` it starts the app in kiosk mode).

``XDG_DATA_HOME`` defaults to ``~/.local/share`` and ``XDG_CONFIG_HOME`` to ``~/.config``; as
the XDG Base Directory specification asks, a relative path in them is ignored. The entries
start this very installation by its absolute path (a virtual environment's script is rarely on
the desktop session's ``PATH``). Installing again replaces the files; ``--remove`` takes them
away.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from avaturn_desktop.core.paths import APP_NAME, resource

DESKTOP_FILE: Final = f"{APP_NAME}.desktop"
ICON_FILE: Final = f"{APP_NAME}.svg"
#: What the Desktop Entry spec lets stand unquoted in an Exec argument.
_PLAIN: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+,:=@")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Install the menu entry and the icon for the current user (into XDG_DATA_HOME), and "
        "with --autostart an entry that starts the app at login (into XDG_CONFIG_HOME)."
    )
    parser.add_argument(
        "--autostart", action="store_true", help="also start the app when the user logs in"
    )
    parser.add_argument(
        "--kiosk",
        action="store_true",
        help="the autostart entry starts the app in kiosk mode (needs --autostart)",
    )
    parser.add_argument(
        "--remove", action="store_true", help="remove what install-desktop installed"
    )


def run(args: argparse.Namespace) -> int:
    if args.kiosk and not args.autostart:
        print("avaturn-desktop: --kiosk needs --autostart", file=sys.stderr)  # noqa: T201
        return 2
    targets = Targets.from_environment(os.environ)
    try:
        if args.remove:
            removed = remove(targets)
            for path in removed:
                print(f"removed {path}")  # noqa: T201
            if not removed:
                print("nothing to remove")  # noqa: T201
            return 0
        for path in install(targets, autostart=args.autostart, kiosk=args.kiosk):
            print(f"installed {path}")  # noqa: T201
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"avaturn-desktop: could not install{where}: {exc.strerror}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


class Targets:
    """Where the files go, from the XDG base directories."""

    def __init__(self, data_home: Path, config_home: Path) -> None:
        self.desktop = data_home / "applications" / DESKTOP_FILE
        self.icon = data_home / "icons" / "hicolor" / "scalable" / "apps" / ICON_FILE
        self.autostart = config_home / "autostart" / DESKTOP_FILE

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Targets:
        home = Path(env.get("HOME") or Path.home())
        return cls(
            _xdg(env, "XDG_DATA_HOME", home / ".local" / "share"),
            _xdg(env, "XDG_CONFIG_HOME", home / ".config"),
        )


def _xdg(env: Mapping[str, str], name: str, default: Path) -> Path:
    value = env.get(name, "")
    # the spec: unset or empty means the default; a relative path is invalid and ignored
    return Path(value) if value and os.path.isabs(value) else default


def install(targets: Targets, *, autostart: bool = False, kiosk: bool = False) -> list[Path]:
    """Write the entries and the icon; returns the paths written."""
    command = launch_command()
    template = resource(DESKTOP_FILE).read_text(encoding="utf-8")
    written = [
        _write(targets.desktop, desktop_entry(template, command)),
        _write(targets.icon, resource("icons", ICON_FILE).read_text(encoding="utf-8")),
    ]
    if autostart:
        args = [*command, "--kiosk"] if kiosk else command
        written.append(_write(targets.autostart, desktop_entry(template, args, autostart=True)))
    elif targets.autostart.exists():
        targets.autostart.unlink()  # installed without --autostart: no longer at login
    return written


def remove(targets: Targets) -> list[Path]:
    removed = []
    for path in (targets.desktop, targets.icon, targets.autostart):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def launch_command() -> list[str]:
    """How a desktop starts this installation: its console script, else ``python -m``."""
    script = Path(sys.executable).parent / APP_NAME
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "avaturn_desktop"]


def desktop_entry(template: str, command: Sequence[str], *, autostart: bool = False) -> str:
    """The shipped entry, its ``Exec`` (and ``TryExec``) starting ``command``."""
    lines = []
    group = ""
    for line in template.splitlines():
        if line.startswith("["):
            group = line.strip()
        main = group == "[Desktop Entry]"
        if main and line.startswith("TryExec="):
            continue
        if main and line.startswith("Exec="):
            lines.append("TryExec=" + _escape_value(command[0]))
            lines.append("Exec=" + _escape_value(" ".join(_quote(arg) for arg in command)))
            if autostart:
                lines.append("X-GNOME-Autostart-enabled=true")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    """One Exec argument as the Desktop Entry spec wants it: ``%`` doubled (it starts field
    codes), and quoted when it holds anything but plain characters."""
    arg = arg.replace("%", "%%")
    if arg and all(c in _PLAIN for c in arg):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def _escape_value(value: str) -> str:
    """A string value of a desktop file: backslashes and control characters escaped (this
    applies on top of the Exec quoting, so a literal backslash there becomes four)."""
    return (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
