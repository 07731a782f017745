"""Qt adapters over the Qt-free services: they hold the services and expose signals."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from qasync import asyncSlot

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.core.settings import SessionDefaults
from avaturn_desktop.services.runtime import AvatarSlot
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.ui.messages import MessageBus

log = logging.getLogger("avaturn.ui")


class SessionPresenter(QObject):
    """The session controller as the widgets see it."""

    #: The controller's new snapshot (a :class:`SessionSnapshot`).
    snapshot_changed = Signal(object)
    #: The session went live (focus goes to the composer).
    went_live = Signal()

    def __init__(
        self, slot: AvatarSlot, messages: MessageBus, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._slot = slot
        self._controller = controller = slot.controller
        self._messages = messages
        self._unsubscribe = controller.subscribe(self._on_snapshot)

    @property
    def snapshot(self) -> SessionSnapshot:
        return self._controller.snapshot

    @property
    def controller(self) -> SessionController:
        return self._controller

    def _on_snapshot(self, snap: SessionSnapshot) -> None:
        self.snapshot_changed.emit(snap)
        if snap.state is SessionState.LIVE:
            self.went_live.emit()
        elif snap.state is SessionState.FAILED:
            self._messages.error(f"Session failed: {snap.reason}. {snap.detail or ''}".strip())

    # -- thin async entry points (the coroutines on the controller are what tests drive) ---

    def start(self, defaults: SessionDefaults) -> None:
        """Start a session with the form's fields (the slot runs the start)."""
        try:
            self._slot.start_session(defaults)
        except AppError as exc:
            self._messages.warning(exc.user_message)

    @asyncSlot()
    async def terminate(self) -> None:
        await self._controller.terminate()

    def busy_lines(self) -> str:
        """What the avatar is doing that ending the session would cut, in words ("" if
        nothing): speaking, and how many lines wait."""
        from avaturn_desktop.core.queue import ItemState

        items = self._slot.queue.items
        speaking = any(i.state is ItemState.SPEAKING for i in items)
        waiting = sum(
            1 for i in items if i.state in (ItemState.WAITING, ItemState.SENDING, ItemState.SENT)
        )
        parts = (["speaking"] if speaking else []) + (
            [f"{waiting} line(s) waiting"] if waiting else []
        )
        return " with ".join(parts) if len(parts) == 2 else "".join(parts)

    def cancel(self) -> None:
        self._controller.cancel()

    def close(self) -> None:
        self._unsubscribe()
