"""The API key: from ``AVATURN_API_KEY`` or the OS keyring, never from or into a file.

The optional ElevenLabs key (to import an account's voices with their names into the voice
library) is kept the same way: ``ELEVENLABS_API_KEY`` or the OS keyring.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Literal

log = logging.getLogger("avaturn.secrets")

ENV_VAR = "AVATURN_API_KEY"
KEYRING_SERVICE = "avaturn-desktop"
KEYRING_USER = "api-key"

ELEVENLABS_ENV_VAR = "ELEVENLABS_API_KEY"
ELEVENLABS_KEYRING_USER = "elevenlabs-api-key"

KeySource = Literal["environment", "keyring", "none"]


def _keyring() -> tuple[Any, type[Exception]]:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        return None, Exception
    return keyring, KeyringError


def load_api_key() -> tuple[str | None, KeySource]:
    """The key and where it came from. The environment wins over the keyring."""
    return _load(ENV_VAR, KEYRING_USER)


def load_elevenlabs_key() -> tuple[str | None, KeySource]:
    """The ElevenLabs key (optional) and where it came from; the environment wins."""
    return _load(ELEVENLABS_ENV_VAR, ELEVENLABS_KEYRING_USER)


def _load(env_var: str, user: str) -> tuple[str | None, KeySource]:
    env = os.environ.get(env_var, "").strip()
    if env:
        return env, "environment"
    keyring, keyring_error = _keyring()
    if keyring is None:
        return None, "none"
    try:
        stored = keyring.get_password(KEYRING_SERVICE, user)
    except (keyring_error, RuntimeError, OSError) as exc:
        log.info("No OS keyring available (%s); set %s instead", type(exc).__name__, env_var)
        return None, "none"
    return (stored.strip() or None, "keyring") if stored else (None, "none")


class KeyringUnavailableError(RuntimeError):
    """The OS has no usable keyring; the key can still come from the environment."""


def store_api_key(key: str | None) -> None:
    """Save the key in the OS keyring, or delete it when ``key`` is empty."""
    _store(key, KEYRING_USER, ENV_VAR)


def store_elevenlabs_key(key: str | None) -> None:
    """Save the ElevenLabs key in the OS keyring, or delete it when ``key`` is empty."""
    _store(key, ELEVENLABS_KEYRING_USER, ELEVENLABS_ENV_VAR)


def _store(key: str | None, user: str, env_var: str) -> None:
    keyring, keyring_error = _keyring()
    if keyring is None:
        raise KeyringUnavailableError("no keyring module")
    try:
        if key:
            keyring.set_password(KEYRING_SERVICE, user, key.strip())
        else:
            with contextlib.suppress(keyring_error):
                keyring.delete_password(KEYRING_SERVICE, user)
    except (keyring_error, RuntimeError, OSError) as exc:
        raise KeyringUnavailableError(
            f"the OS keyring is not available ({type(exc).__name__}); "
            f"set the {env_var} environment variable instead"
        ) from None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret replaced, for log lines built from foreign text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
