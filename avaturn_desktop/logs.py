"""Logging: named loggers under ``avaturn.*``, a console handler and a rotating file.

The handlers run on a thread of their own (the standard library's ``QueueHandler`` and
``QueueListener``): a record logged on the GUI thread is only put in a queue, and the file's
checks, writes and rotation never take a frame from the window.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_listener: logging.handlers.QueueListener | None = None
_records: queue.Queue[logging.LogRecord] | None = None


def setup(level: str = "INFO", log_dir: Path | None = None) -> Path | None:
    """Configure the root logger once; returns the log file's path when one is written."""
    global _listener, _records
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler()
    console.setLevel(level.upper())
    console.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    handlers: list[logging.Handler] = [console]
    path = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "avaturn-desktop.log"
        file = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter(FORMAT))
        handlers.append(file)
    shutdown()  # a second set-up replaces the first
    _records = queue.Queue()
    _listener = logging.handlers.QueueListener(_records, *handlers, respect_handler_level=True)
    _listener.start()
    root.addHandler(logging.handlers.QueueHandler(_records))
    # Third-party chatter stays at warnings unless asked for.
    for noisy in ("httpx", "httpcore", "uvicorn", "asyncio", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path


def flush() -> None:
    """Wait until every record logged so far is written."""
    if _records is not None and _listener is not None:
        _records.join()
        for handler in _listener.handlers:
            handler.flush()


def shutdown() -> None:
    """Write what is left and stop the writing thread (at exit, or before a new set-up)."""
    global _listener, _records
    listener, _listener = _listener, None
    if listener is not None:
        listener.stop()
        for handler in listener.handlers:
            handler.close()
    if _records is not None:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if isinstance(handler, logging.handlers.QueueHandler) and handler.queue is _records:
                root.removeHandler(handler)
        _records = None


atexit.register(shutdown)
