"""The API keys: from the environment or the OS keyring, never from or into a file.

Two keys, each with its own variable and keyring entry (service ``avaturn-desktop``):

* Avaturn's: ``AVATURN_API_KEY``, keyring user ``api-key``.
* The language model's (Ask mode): ``AVATURN_DESKTOP_LLM_API_KEY``, keyring user
  ``llm-api-key``. Deliberately not ``OPENAI_API_KEY``: the key goes to whatever endpoint the
  settings name, and a key that happens to be in a developer's shell should not start paid
  requests (or go to another host) unasked.
* ElevenLabs' (optional: the voice library imports the account's voices with their names):
  ``ELEVENLABS_API_KEY``, keyring user ``elevenlabs-api-key``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Literal

log = logging.getLogger("avaturn.secrets")

ENV_VAR = "AVATURN_API_KEY"
KEYRING_SERVICE = "avaturn-desktop"
KEYRING_USER = "api-key"
LLM_ENV_VAR = "AVATURN_DESKTOP_LLM_API_KEY"
LLM_KEYRING_USER = "llm-api-key"
ELEVENLABS_ENV_VAR = "ELEVENLABS_API_KEY"
ELEVENLABS_KEYRING_USER = "elevenlabs-api-key"

KeySource = Literal["environment", "keyring", "none"]

#: The environment's keys, by variable, once :func:`withdraw_from_environment` took them out.
_withdrawn: dict[str, str] = {}


def _keyring() -> tuple[Any, type[Exception]]:
    if sys.platform != "darwin":
        # keyring loads its macOS backend everywhere, and that backend looks for the Security
        # framework at import: ctypes.util.find_library runs ldconfig, gcc and ld for each of
        # three frameworks (~80 ms before the first session, on Linux). A None entry makes
        # that one import fail at once, as it fails there anyway (the backend then says it is
        # unavailable, as before); nothing else of keyring changes.
        sys.modules.setdefault("keyring.backends.macOS.api", None)  # type: ignore[arg-type]
    if not _session_bus_address_known():
        # keyring's Secret Service backend reaches the desktop's keyring over D-Bus through
        # secretstorage and jeepney, which find the session bus from DBUS_SESSION_BUS_ADDRESS
        # alone. Without it that backend cannot work, yet importing secretstorage (it brings
        # cryptography) costs ~35 ms before the first session. The same None entry makes it
        # unavailable at once, as it would be after failing to connect.
        sys.modules.setdefault("secretstorage", None)  # type: ignore[arg-type]
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        return None, Exception
    return keyring, KeyringError


def _session_bus_address_known() -> bool:
    """Whether a D-Bus session bus can be found the way jeepney finds it (see ``_keyring``);
    the usual socket of a systemd user session counts too, in case jeepney learns it."""
    if sys.platform in ("darwin", "win32") or os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return True
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return runtime_dir is not None and os.path.exists(os.path.join(runtime_dir, "bus"))


def load_api_key() -> tuple[str | None, KeySource]:
    """The key and where it came from. The environment wins over the keyring."""
    return _load(ENV_VAR, KEYRING_USER)


def has_environment_key() -> bool:
    """Whether the environment gave an Avaturn key (cheap: no keyring is asked)."""
    return bool(_from_environment(ENV_VAR))


def load_llm_api_key() -> tuple[str | None, KeySource]:
    """The language model's key and where it came from. The environment wins."""
    return _load(LLM_ENV_VAR, LLM_KEYRING_USER)


def load_elevenlabs_key() -> tuple[str | None, KeySource]:
    """The ElevenLabs key (optional) and where it came from; the environment wins."""
    return _load(ELEVENLABS_ENV_VAR, ELEVENLABS_KEYRING_USER)


def _from_environment(env_var: str) -> str:
    """The key the environment gives (or gave, before it was withdrawn), or ""."""
    return os.environ.get(env_var, "").strip() or _withdrawn.get(env_var, "")


def _load(env_var: str, user: str) -> tuple[str | None, KeySource]:
    env = _from_environment(env_var)
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


#: Every variable that may hold a secret the app reads.
SECRET_ENV_VARS: tuple[str, ...] = (ENV_VAR, LLM_ENV_VAR, ELEVENLABS_ENV_VAR)


def withdraw_from_environment(name: str = ENV_VAR) -> bool:
    """Take a key out of this process's environment; :func:`load_api_key` (or
    :func:`load_llm_api_key`) still has it.

    Every process the app starts inherits its environment, QtWebEngine's renderers included
    (and with Chromium's sandbox off, as it is for root, a renderer can read the app's). True
    when there was a key to take. ``qtenv.scrub_secrets`` also wipes it from the copy of the
    environment the kernel shows in ``/proc/<pid>/environ``.
    """
    value = os.environ.pop(name, None)
    if value is None:
        return False
    if value.strip():
        _withdrawn[name] = value.strip()
    return True


class KeyringUnavailableError(RuntimeError):
    """The OS has no usable keyring; the key can still come from the environment."""


def store_api_key(key: str | None) -> None:
    """Save the key in the OS keyring, or delete it when ``key`` is empty."""
    _store(key, ENV_VAR, KEYRING_USER)


def store_llm_api_key(key: str | None) -> None:
    """Save the language model's key in the OS keyring, or delete it when ``key`` is empty."""
    _store(key, LLM_ENV_VAR, LLM_KEYRING_USER)


def store_elevenlabs_key(key: str | None) -> None:
    """Save the ElevenLabs key in the OS keyring, or delete it when ``key`` is empty."""
    _store(key, ELEVENLABS_ENV_VAR, ELEVENLABS_KEYRING_USER)


def _store(key: str | None, env_var: str, user: str) -> None:
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
