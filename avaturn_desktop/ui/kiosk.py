"""Kiosk mode's window: the avatar alone, full screen, no chrome, no cursor; the console behind
the staff PIN (Ctrl+Alt+Shift+S, or a long press in the top-left corner)."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, QTimer
from PySide6.QtGui import QCursor, QKeySequence, QMouseEvent, QShortcut
from PySide6.QtWidgets import QInputDialog, QLineEdit, QMainWindow, QWidget
from qasync import asyncSlot

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.pin import StaffPin
from avaturn_desktop.ui.messages import MessageBus

log = logging.getLogger("avaturn.ui")

STAFF_SHORTCUT: Final = "Ctrl+Alt+Shift+S"
#: How long a press in the top-left corner opens the PIN prompt (touch screens).
LONG_PRESS_MS: Final = 3000
CORNER_PX: Final = 80


class PinPrompt:
    """Asks for the staff PIN (tests replace ``ask``); None when cancelled."""

    @classmethod
    def ask(cls, parent: QWidget | None) -> str | None:
        pin, ok = QInputDialog.getText(parent, "Staff", "Staff PIN:", QLineEdit.EchoMode.Password)
        return pin if ok else None


class KioskChrome(QObject):
    """Locks ``window`` to the stage; :meth:`unlock` brings the console back after the PIN."""

    def __init__(
        self, window: QMainWindow, stage: QWidget, pin: StaffPin, messages: MessageBus
    ) -> None:
        super().__init__(window)
        self._window = window
        self._stage = stage
        self._pin = pin
        self._messages = messages
        self.locked = False
        self._asking = False
        self._hidden: list[QWidget] = []
        self.shortcut = QShortcut(QKeySequence(STAFF_SHORTCUT), window)
        self.shortcut.setContext(Qt.ShortcutContext.ApplicationShortcut)
        self.shortcut.activated.connect(self.request_unlock)
        self._press = QTimer(self)
        self._press.setSingleShot(True)
        self._press.setInterval(LONG_PRESS_MS)
        self._press.timeout.connect(self.request_unlock)
        stage.installEventFilter(self)

    def lock(self) -> None:
        """The avatar alone: full screen, no menus, docks, status bar or cursor."""
        window = self._window
        self._hidden = [
            w
            for w in (window.menuBar(), window.statusBar(), *window.findChildren(QWidget))
            if w.objectName().startswith("dock.") or w in (window.menuBar(), window.statusBar())
        ]
        for widget in self._hidden:
            widget.hide()
        for action in window.actions():
            action.setEnabled(False)
        window.setCursor(QCursor(Qt.CursorShape.BlankCursor))
        self._stage.setCursor(QCursor(Qt.CursorShape.BlankCursor))
        window.showFullScreen()
        self.locked = True
        log.info("Kiosk: locked to the stage (staff: %s)", STAFF_SHORTCUT)

    def unlock(self) -> None:
        for widget in self._hidden:
            widget.show()
        for action in self._window.actions():
            action.setEnabled(True)
        self._window.unsetCursor()
        self._stage.unsetCursor()
        self.locked = False
        log.info("Kiosk: console opened by staff")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if self.locked and isinstance(event, QMouseEvent):
            if event.type() == QEvent.Type.MouseButtonPress and _in_corner(event.position()):
                self._press.start()
            elif event.type() == QEvent.Type.MouseButtonRelease:
                self._press.stop()
        return False

    @asyncSlot()
    async def request_unlock(self) -> None:
        if not self.locked or self._asking:
            return
        self._asking = True
        try:
            await self._check()
        finally:
            self._asking = False

    async def _check(self) -> None:
        if not self._pin.is_set:
            self._messages.warning(
                "No staff PIN is set, so the console opened without one. Set it with "
                "'avaturn-desktop pin set'."
            )
            self.unlock()
            return
        pin = PinPrompt.ask(self._window)
        if pin is None:
            return
        try:
            ok = await asyncio.to_thread(self._pin.verify, pin)
        except AppError as exc:
            self._messages.warning(exc.user_message)
            return
        if ok:
            self.unlock()
        else:
            self._messages.warning("Wrong staff PIN.")


def _in_corner(pos: object) -> bool:
    point = pos.toPoint() if hasattr(pos, "toPoint") else QPoint(0, 0)
    return point.x() <= CORNER_PX and point.y() <= CORNER_PX
