"""The staff PIN that keeps the console of a kiosk away from its audience (Qt-free).

Only a salted slow hash of the PIN is kept (scrypt from :mod:`hashlib`, a fresh random salt
for every PIN), in ``staff-pin.json`` in the data directory, readable by its owner alone
(mode 0600, written atomically). A guess is hashed the same way and compared in constant time
(:func:`hmac.compare_digest`).

Guesses are limited: after ``free_tries`` wrong PINs in a row, each further wrong one locks the
PIN for a while that doubles every time, from ``first_lock_s`` up to ``max_lock_s``; a PIN
entered while locked is refused unchecked (:class:`PinLockedError`), so a lock cannot be
raced. The count and the lock live in the same file, so restarting the app does not reset
them; the right PIN does. A clock set back cannot stretch a lock beyond ``max_lock_s``.

The hash costs about 0.15 s and 32 MiB on a small PC: nothing for one person at a PIN pad,
and offline guessing of a stolen file is slow. Run :meth:`StaffPin.verify` off the GUI thread
(``asyncio.to_thread``). A hash made with weaker parameters than the current ones is made
again, with the current ones, the next time the right PIN is entered.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from avaturn_desktop.core.errors import AppError, ConfigError
from avaturn_desktop.core.paths import data_dir

log = logging.getLogger("avaturn.pin")

PIN_FILE_NAME: Final = "staff-pin.json"
MIN_DIGITS: Final = 4
MAX_DIGITS: Final = 12
_FORMAT: Final = 1
_SALT_BYTES: Final = 16


class PinLockedError(AppError):
    """Too many wrong PINs: the next try is refused for ``seconds_left`` seconds."""

    def __init__(self, seconds_left: float) -> None:
        wait = max(1, round(seconds_left))
        super().__init__(f"Too many wrong PINs. Try again in {_duration(wait)}.")
        self.seconds_left = seconds_left


class PinNotSetError(AppError):
    """No staff PIN has been set yet."""


class PinFileError(AppError):
    """The PIN file cannot be read: access stays closed until it is replaced."""


@dataclasses.dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost: ``n`` (CPU and memory), ``r`` (block size), ``p`` (parallelism)."""

    n: int = 2**15
    r: int = 8
    p: int = 1
    dklen: int = 32

    @property
    def maxmem(self) -> int:
        # scrypt needs 128·r·n bytes (plus a little); OpenSSL refuses above 32 MiB unless told
        return 128 * self.r * (self.n + self.p + 2) + 1024 * 1024

    def weaker_than(self, other: ScryptParams) -> bool:
        return (self.n, self.r, self.p, self.dklen) < (other.n, other.r, other.p, other.dklen)

    def hash(self, pin: str, salt: bytes) -> bytes:
        return hashlib.scrypt(
            pin.encode("utf-8"),
            salt=salt,
            n=self.n,
            r=self.r,
            p=self.p,
            dklen=self.dklen,
            maxmem=self.maxmem,
        )


@dataclasses.dataclass(frozen=True)
class LockoutPolicy:
    free_tries: int = 5
    first_lock_s: float = 30.0
    max_lock_s: float = 3600.0

    def lock_for(self, failures: int) -> float:
        """How long ``failures`` wrong PINs in a row lock it (0: not locked)."""
        extra = failures - self.free_tries
        if extra < 0:
            return 0.0
        return min(self.max_lock_s, self.first_lock_s * 2.0 ** min(extra, 64))


def check_pin(pin: str) -> str:
    """``pin`` if it can be a staff PIN (4 to 12 digits), else :class:`ConfigError`."""
    if not (pin.isascii() and pin.isdigit()):
        raise ConfigError("A staff PIN is made of digits only (0–9).")
    if not MIN_DIGITS <= len(pin) <= MAX_DIGITS:
        raise ConfigError(f"A staff PIN has {MIN_DIGITS} to {MAX_DIGITS} digits.")
    return pin


class StaffPin:
    """The staff PIN in its file (see the module docs). Not thread-safe: one caller at a time."""

    def __init__(
        self,
        path: Path,
        *,
        params: ScryptParams | None = None,
        policy: LockoutPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.params = params or ScryptParams()
        self.policy = policy or LockoutPolicy()
        self._clock = clock

    @classmethod
    def open_default(cls) -> StaffPin:
        """The PIN of this data directory (``AVATURN_DESKTOP_HOME`` wins)."""
        return cls(data_dir() / PIN_FILE_NAME)

    # -- reading ---------------------------------------------------------------------------

    @property
    def is_set(self) -> bool:
        return self.path.exists()

    @property
    def failures(self) -> int:
        """Wrong PINs in a row since the last right one."""
        return self._load().failures

    def locked_for(self) -> float:
        """Seconds until a PIN may be tried again (0 when it may now)."""
        if not self.is_set:
            return 0.0
        return self._locked_for(self._load())

    # -- changing --------------------------------------------------------------------------

    def set(self, pin: str) -> None:
        """Set (or replace) the PIN; the wrong-try count starts again."""
        check_pin(pin)
        self._save(self._fresh(pin))
        log.info("Staff PIN set")

    def clear(self) -> None:
        """Remove the PIN (the console is then not guarded)."""
        self.path.unlink(missing_ok=True)
        log.info("Staff PIN removed")

    def verify(self, pin: str) -> bool:
        """Whether ``pin`` is the staff PIN; a wrong one counts toward the lock.

        Raises :class:`PinLockedError` while locked (the PIN is not looked at),
        :class:`PinNotSetError` when no PIN is set, :class:`PinFileError` when the file is
        damaged (access stays closed).
        """
        stored = self._load()
        wait = self._locked_for(stored)
        if wait > 0:
            raise PinLockedError(wait)
        plausible = pin.isascii() and pin.isdigit() and MIN_DIGITS <= len(pin) <= MAX_DIGITS
        # A guess that cannot be a PIN is still hashed: the answer takes as long either way.
        guess = stored.params.hash(pin if plausible else "", stored.salt)
        if hmac.compare_digest(guess, stored.digest) and plausible:
            if stored.failures or stored.params.weaker_than(self.params):
                self._save(self._fresh(pin))
            return True
        failures = stored.failures + 1
        lock = self.policy.lock_for(failures)
        self._save(
            dataclasses.replace(stored, failures=failures, locked_until=self._clock() + lock)
        )
        if lock:
            log.warning("Staff PIN: %d wrong in a row; locked for %.0f s", failures, lock)
        return False

    # -- the file --------------------------------------------------------------------------

    def _locked_for(self, stored: _Stored) -> float:
        left = stored.locked_until - self._clock()
        return max(0.0, min(left, self.policy.max_lock_s))

    def _fresh(self, pin: str) -> _Stored:
        salt = secrets.token_bytes(_SALT_BYTES)
        return _Stored(self.params, salt, self.params.hash(pin, salt), 0, 0.0)

    def _load(self) -> _Stored:
        damaged = PinFileError(
            f"The staff PIN file {self.path} is damaged, so the console stays locked. "
            "Delete it to set a new PIN."
        )
        try:
            mode = self.path.stat().st_mode
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PinNotSetError("No staff PIN is set. Set one in the settings first.") from None
        except (OSError, ValueError) as exc:
            raise damaged from exc
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("The staff PIN file was readable by others; it is now owner-only")
            os.chmod(self.path, 0o600)
        try:
            if raw["format"] != _FORMAT or raw["kdf"] != "scrypt":
                raise ValueError("unknown format")
            digest = base64.b64decode(raw["hash"], validate=True)
            stored = _Stored(
                params=ScryptParams(
                    n=int(raw["n"]), r=int(raw["r"]), p=int(raw["p"]), dklen=len(digest)
                ),
                salt=base64.b64decode(raw["salt"], validate=True),
                digest=digest,
                failures=int(raw["failures"]),
                locked_until=float(raw["locked_until"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged from exc
        if not stored.salt or len(digest) < 16 or stored.params.n < 2 or stored.failures < 0:
            raise damaged
        return stored

    def _save(self, stored: _Stored) -> None:
        text = json.dumps(
            {
                "format": _FORMAT,
                "kdf": "scrypt",
                "n": stored.params.n,
                "r": stored.params.r,
                "p": stored.params.p,
                "salt": base64.b64encode(stored.salt).decode("ascii"),
                "hash": base64.b64encode(stored.digest).decode("ascii"),
                "failures": stored.failures,
                "locked_until": stored.locked_until,
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@dataclasses.dataclass(frozen=True)
class _Stored:
    """What the file holds."""

    params: ScryptParams
    salt: bytes
    digest: bytes
    failures: int
    locked_until: float


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min"
