"""One path for messages to the user: logged, then shown by whoever listens (the window)."""

from __future__ import annotations

import logging
from enum import StrEnum

from PySide6.QtCore import QObject, Signal

log = logging.getLogger("avaturn.ui")


class Level(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


_LOG_LEVELS = {Level.INFO: logging.INFO, Level.WARNING: logging.WARNING, Level.ERROR: logging.ERROR}


class MessageBus(QObject):
    """Messages raised before the window listens are kept and replayed when it connects."""

    message = Signal(str, str)  # level, text

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._early: list[tuple[Level, str]] = []
        self._listening = False

    def post(self, level: Level, text: str) -> None:
        log.log(_LOG_LEVELS[level], "%s", text)
        if self._listening:
            self.message.emit(level.value, text)
        else:
            self._early.append((level, text))

    def info(self, text: str) -> None:
        self.post(Level.INFO, text)

    def warning(self, text: str) -> None:
        self.post(Level.WARNING, text)

    def error(self, text: str) -> None:
        self.post(Level.ERROR, text)

    def start_listening(self) -> None:
        self._listening = True
        early, self._early = self._early, []
        for level, text in early:
            self.message.emit(level.value, text)
