"""The control API's token: made on first use, kept in ``control-token`` in the data directory
(mode 0600), shown and renewable in Settings; ``AVATURN_DESKTOP_CONTROL_TOKEN`` overrides it.

Never logged, printed in a URL, or put on a command line. Both doors read it from here (the
control API checks it; the window shows and renews it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger("avaturn.control")

TOKEN_ENV = "AVATURN_DESKTOP_CONTROL_TOKEN"
TOKEN_FILE = "control-token"
#: Where a running app with the control API on says where it listens.
DISCOVERY_FILE = "control.json"


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def load_token(data_dir: Path, *, create: bool = True) -> str | None:
    """The control token: the environment's, else the file's (made now if ``create``)."""
    override = os.environ.get(TOKEN_ENV, "").strip()
    if override:
        return override
    path = token_path(data_dir)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        log.warning("Could not read the control token file (%s)", exc.strerror)
        token = ""
    if token or not create:
        return token or None
    return renew_token(data_dir)


def renew_token(data_dir: Path) -> str:
    """A new random token, written to ``control-token`` with mode 0600 (no one else reads it)."""
    token = secrets.token_urlsafe(32)
    path = token_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token


def read_discovery(data_dir: Path) -> dict[str, Any] | None:
    """``control.json`` of the app running on ``data_dir``, if any (None when absent/broken)."""
    try:
        raw = json.loads((data_dir / DISCOVERY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
        return None
    return raw
