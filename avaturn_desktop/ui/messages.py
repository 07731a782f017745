"""Messages to the user, as Qt signals: the runtime's notices, for the window to show."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from avaturn_desktop.services.runtime import Level, Notices, Poster

log = logging.getLogger("avaturn.ui")

__all__ = ["Level", "MessageBus"]


class MessageBus(QObject, Poster):
    """The runtime's :class:`Notices` as a signal. Posting goes through the notices (one
    path: logged, then shown); what was posted before the window listens is replayed."""

    message = Signal(str, str)  # level, text

    def __init__(self, notices: Notices | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.notices = notices or Notices()
        self._unsubscribe: Callable[[], None] | None = None

    def post(self, level: Level, text: str) -> None:
        self.notices.post(level, text)

    def start_listening(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.notices.subscribe(self._emit)

    def _emit(self, level: Level, text: str) -> None:
        self.message.emit(level.value, text)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
