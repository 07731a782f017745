"""One app per data directory: a lock held for the app's whole life (Qt-free).

The lock is an OS file lock on ``app.lock`` in the data directory: the kernel lets it go when
the process ends, however it ends (kill -9 included), so a stale file never blocks a start.
The file holds the owner's pid, for the message a second start prints. While a process holds
the lock, no other live app owns the sessions recorded in that directory; so the leftover
session reaper runs only under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

LOCK_FILE = "app.lock"


class InstanceLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock now; False when another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def owner_pid(self) -> int | None:
        """The pid written by the holder (None when unknown)."""
        try:
            return int(self.path.read_text(encoding="ascii").strip() or "0") or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def server_name(data_dir: Path) -> str:
    """The local socket name the first app listens on (for "bring the window to the front")."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return f"avaturn-desktop-{digest}"


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
