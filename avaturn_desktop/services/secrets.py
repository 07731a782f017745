"""The API key: from ``AVATURN_API_KEY`` or the OS keyring, never from or into a file."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Literal

log = logging.getLogger("avaturn.secrets")

ENV_VAR = "AVATURN_API_KEY"
KEYRING_SERVICE = "avaturn-desktop"
KEYRING_USER = "api-key"

KeySource = Literal["environment", "keyring", "none"]

#: The environment's key, once :func:`withdraw_from_environment` took it out of the environment.
_withdrawn: str | None = None


def _keyring() -> tuple[Any, type[Exception]]:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        return None, Exception
    return keyring, KeyringError


def load_api_key() -> tuple[str | None, KeySource]:
    """The key and where it came from. The environment wins over the keyring."""
    env = os.environ.get(ENV_VAR, "").strip() or _withdrawn
    if env:
        return env, "environment"
    keyring, keyring_error = _keyring()
    if keyring is None:
        return None, "none"
    try:
        stored = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
    except (keyring_error, RuntimeError, OSError) as exc:
        log.info("No OS keyring available (%s); set %s instead", type(exc).__name__, ENV_VAR)
        return None, "none"
    return (stored.strip() or None, "keyring") if stored else (None, "none")


def withdraw_from_environment() -> bool:
    """Take the key out of this process's environment; :func:`load_api_key` still has it.

    Every process the app starts inherits its environment, QtWebEngine's renderers included
    (and with Chromium's sandbox off, as it is for root, a renderer can read the app's). True
    when there was a key to take. ``qtenv.scrub_secrets`` also wipes it from the copy of the
    environment the kernel shows in ``/proc/<pid>/environ``.
    """
    global _withdrawn
    value = os.environ.pop(ENV_VAR, None)
    if value is None:
        return False
    _withdrawn = value.strip() or None
    return True


class KeyringUnavailableError(RuntimeError):
    """The OS has no usable keyring; the key can still come from the environment."""


def store_api_key(key: str | None) -> None:
    """Save the key in the OS keyring, or delete it when ``key`` is empty."""
    keyring, keyring_error = _keyring()
    if keyring is None:
        raise KeyringUnavailableError("no keyring module")
    try:
        if key:
            keyring.set_password(KEYRING_SERVICE, KEYRING_USER, key.strip())
        else:
            with contextlib.suppress(keyring_error):
                keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
    except (keyring_error, RuntimeError, OSError) as exc:
        raise KeyringUnavailableError(
            f"the OS keyring is not available ({type(exc).__name__}); "
            f"set the {ENV_VAR} environment variable instead"
        ) from None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret replaced, for log lines built from foreign text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
