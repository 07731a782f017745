"""The built-in simulator, spawned as soon as the window's frame is on screen when this run
will very probably use it.

The child needs about half a second to import and start its server. Started only once the
settings (pydantic's models) and the keyring said there is no cloud key, it came up after the
rest of the app and the first session waited for it; started before them, it comes up while
they are loaded and built, on the other core. (Not before the frame: on a loaded machine its
imports slowed the window's first paint.) What decides the
backend (the keyring above all) is too slow to wait for, so the guess is made from what is
cheap to read, and checked once the settings and the key are known:

* ``--api-base``, or a key in the environment: not the simulator (no early child), unless the
  settings file says ``"backend": "simulator"``;
* the last run's backend, remembered in ``last-backend`` in the data directory: a run after a
  cloud run does not guess the simulator (its key is probably in the keyring);
* otherwise (a first run, a run after a simulator run, ``--simulator``): the simulator.

A wrong guess costs one child killed at once (:meth:`ChildSimulator.kill`); the child also
dies with the app in every case (see ``simulator.child``). Nothing here imports pydantic or
asyncio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avaturn_desktop.simulator.child import ChildSimulator, start_child

__all__ = ["LAST_BACKEND_FILE", "EarlyChild", "child_args", "remember", "spawn_if_likely"]

log = logging.getLogger("avaturn.app")

#: In the data directory: the backend kind of the last run ("simulator", "cloud", "external").
LAST_BACKEND_FILE = "last-backend"
#: The language model stand-in's speed when the settings do not say (the settings' default).
DEFAULT_TOKENS_PER_SECOND = 20.0


@dataclass
class EarlyChild:
    """A child simulator started before the settings were read, with what it was started for."""

    child: ChildSimulator
    key: str
    args: list[str]


def child_args(tokens_per_second: float) -> list[str]:
    """The simulator flags the app starts its child with (from the settings)."""
    return ["--llm-tokens-per-second", f"{tokens_per_second:g}"]


def _peek_settings(config_dir: Path) -> dict[str, Any]:
    """The settings file's raw JSON object, or {} (the real load validates and reports)."""
    try:
        raw = json.loads((config_dir / "settings.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _tokens_per_second(raw: dict[str, Any]) -> float:
    llm = raw.get("llm")
    value = llm.get("sim_tokens_per_second") if isinstance(llm, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_TOKENS_PER_SECOND
    return float(value)


def _last_backend(data_dir: Path) -> str | None:
    try:
        return (data_dir / LAST_BACKEND_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def likely_simulator(
    args: argparse.Namespace, raw_settings: dict[str, Any], data_dir: Path, env_key: bool
) -> bool:
    """Whether this run will very probably use the built-in simulator (see the module)."""
    if args.api_base:
        return False
    if args.simulator or raw_settings.get("backend") == "simulator":
        return True
    return not env_key and _last_backend(data_dir) in (None, "simulator")


def spawn_if_likely(
    args: argparse.Namespace, config_dir: Path, data_dir: Path, env_key: bool
) -> EarlyChild | None:
    """Start the child simulator now if the run will very probably use it, else None."""
    raw = _peek_settings(config_dir)
    if not likely_simulator(args, raw, data_dir, env_key):
        return None
    key = secrets.token_urlsafe(24)  # new each run, never on a command line
    wanted = child_args(_tokens_per_second(raw))
    # its socket bound here: its URL is known at once, and nothing waits for it to come up
    child = start_child(api_key=key, extra_args=wanted, prebind=True)
    log.info("The built-in simulator was started early (pid %d)", child.pid)
    return EarlyChild(child, key, wanted)


def remember(data_dir: Path, kind: str) -> None:
    """Note this run's backend kind for the next start's guess (best effort)."""
    path = data_dir / LAST_BACKEND_FILE
    if _last_backend(data_dir) == kind:
        return
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(kind + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("Could not note the backend in %s: %s", path, exc)
