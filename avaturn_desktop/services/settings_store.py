"""The user's settings as one live value that the runtime's parts subscribe to (Qt-free).

Whoever changes a setting (the Settings dialog, the session panel's Create, a test) goes
through :meth:`SettingsStore.update`; every part that depends on a setting (the session
controller's keep-alive, the speech queue's policy, the window's warning time) listens and
applies it at once, not at the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avaturn_desktop.core import settings as settings_mod
from avaturn_desktop.core.settings import Settings

log = logging.getLogger("avaturn.settings")

#: ``(new, old)`` after every change.
SettingsListener = Callable[[Settings, Settings], None]


class SettingsStore:
    """Holds the current :class:`Settings`; saves them when a config dir is given."""

    def __init__(self, settings: Settings, config_dir: Path | None = None) -> None:
        self._settings = settings
        self._config_dir = config_dir
        self._listeners: list[SettingsListener] = []

    @property
    def value(self) -> Settings:
        return self._settings

    def subscribe(self, listener: SettingsListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def replace(self, new: Settings) -> None:
        """Take ``new`` as the settings, save them, and tell every listener.

        Raises ``OSError`` when the file could not be written; the new value is in force
        all the same (the caller says so to the user).
        """
        old, self._settings = self._settings, new
        for listener in list(self._listeners):
            try:
                listener(new, old)
            except Exception:
                log.exception("A settings listener failed")
        if self._config_dir is not None:
            settings_mod.save(new, self._config_dir)

    def update(self, **changes: Any) -> Settings:
        """Change some fields (validated by the schema) and apply them as :meth:`replace`."""
        new = self._settings.model_copy(update=changes)
        new = Settings.model_validate(new.model_dump())
        self.replace(new)
        return new
