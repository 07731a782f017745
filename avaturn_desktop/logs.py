"""Logging: named loggers under ``avaturn.*``, a console handler and a rotating file."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(level: str = "INFO", log_dir: Path | None = None) -> Path | None:
    """Configure the root logger once; returns the log file's path when one is written."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler()
    console.setLevel(level.upper())
    console.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    root.addHandler(console)
    path = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "avaturn-desktop.log"
        file = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(file)
    # Third-party chatter stays at warnings unless asked for.
    for noisy in ("httpx", "httpcore", "uvicorn", "asyncio", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path
