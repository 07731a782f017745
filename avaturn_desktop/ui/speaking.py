"""Speaking, assembled: the speech queue's Qt adapter and the composer, queue and log docks.

``SpeakingUi`` builds the Qt-free :class:`~avaturn_desktop.services.speech_queue.SpeechQueue`
over the shell's client, store, controller and stage, and the three panels over it. The shell
passes :attr:`SpeakingUi.docks` to ``MainWindow(extra_docks=...)`` and awaits
:meth:`SpeakingUi.shutdown` before closing the store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QWidget
from qasync import asyncSlot

from avaturn_desktop.core.chunker import split_sentences
from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.export import ExportFormat, export_log
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.services.speech_queue import (
    QueueChange,
    QueueItem,
    SpeechQueue,
    TaskClient,
)
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.docks.composer_panel import ComposerPanel
from avaturn_desktop.ui.docks.log_panel import LogPanel
from avaturn_desktop.ui.docks.queue_panel import QueuePanel
from avaturn_desktop.ui.log_model import LogModel
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.presenters import SessionPresenter
from avaturn_desktop.ui.web.stage import Stage

log = logging.getLogger("avaturn.ui")


class QueuePresenter(QObject):
    """The speech queue as the panels see it: its changes as signals, its actions reported."""

    #: A :class:`QueueChange` (an item added, changed, moved or removed; or pause changed).
    changed = Signal(object)
    #: ``(row_id, new)``: a task-log row was written.
    row_written = Signal(int, bool)

    def __init__(
        self,
        queue: SpeechQueue,
        messages: MessageBus,
        settings: Settings,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.queue = queue
        self._messages = messages
        self.settings = settings
        self._unsubscribe = (
            queue.subscribe(self._on_change),
            queue.subscribe_rows(self.row_written.emit),
        )

    def _on_change(self, change: QueueChange) -> None:
        self.changed.emit(change)

    # -- reading ---------------------------------------------------------------------------

    @property
    def items(self) -> tuple[QueueItem, ...]:
        return self.queue.items

    @property
    def paused(self) -> bool:
        return self.queue.paused

    @property
    def live(self) -> bool:
        return self.queue.live

    @property
    def voice_id(self) -> str | None:
        return self.queue.voice_id

    def chunks(self, text: str) -> list[str]:
        """``text`` as it will be sent: cut into sentences when the setting says so."""
        if self.settings.split_sentences:
            return split_sentences(text, self.settings.max_chunk_chars)
        stripped = text.strip()
        return [stripped] if stripped else []

    # -- actions (errors are reported here, and the result says whether it worked) ---------

    def enqueue(self, texts: Sequence[str]) -> list[QueueItem] | None:
        try:
            return self.queue.enqueue(texts)
        except AppError as exc:
            self._messages.warning(exc.user_message)
            return None

    def resend(self, text: str) -> None:
        """Queue a logged line again (from the log's Re-send)."""
        if self.enqueue([text]) is not None:
            self._messages.info("Queued again: " + (text if len(text) <= 60 else text[:59] + "…"))

    def remove(self, item_id: int) -> bool:
        return self.queue.remove(item_id)

    def move(self, item_id: int, delta: int) -> bool:
        return self.queue.move(item_id, delta)

    def retry(self, item_id: int) -> None:
        self.queue.retry(item_id)

    def resume(self) -> None:
        self.queue.resume()

    def clear_finished(self) -> None:
        self.queue.clear_finished()

    async def stop(self) -> bool:
        try:
            await self.queue.stop()
        except AppError as exc:
            self._messages.error(f"Could not stop the avatar: {exc.user_message}")
            return False
        return True

    async def speak_now(self, texts: Sequence[str]) -> list[QueueItem] | None:
        try:
            return await self.queue.speak_now(texts)
        except AppError as exc:
            self._messages.error(exc.user_message)
            return None

    async def change_voice(self, voice_id: str) -> bool:
        try:
            await self.queue.change_voice(voice_id)
        except AppError as exc:
            self._messages.error(exc.user_message)
            return False
        self._messages.info(f"Voice changed to {voice_id}.")
        return True

    @asyncSlot()
    async def request_stop(self) -> None:
        await self.stop()

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()


class SpeakingUi:
    """The composer, queue and log docks over one speech queue, ready for the main window."""

    def __init__(
        self,
        *,
        client: TaskClient,
        store: TaskLogStore,
        controller: SessionController,
        stage: Stage,
        settings: Settings,
        messages: MessageBus,
        session_presenter: SessionPresenter,
    ) -> None:
        self._store = store
        self._messages = messages
        self.queue = SpeechQueue(
            client, store, controller, stage=stage, policy=settings.offline_policy
        )
        self.presenter = QueuePresenter(self.queue, messages, settings)
        self.composer = ComposerPanel(self.presenter)
        self.queue_panel = QueuePanel(self.presenter)
        self.log_model = LogModel(store)
        self.log_panel = LogPanel(self.log_model, sessions=self._session_ids, exporter=self.export)
        self.docks: tuple[tuple[str, str, QWidget, Qt.DockWidgetArea], ...] = (
            ("composer", "Composer", self.composer, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("queue", "Speech queue", self.queue_panel, Qt.DockWidgetArea.RightDockWidgetArea),
            ("log", "Task log", self.log_panel, Qt.DockWidgetArea.BottomDockWidgetArea),
        )
        # Stage.event carries every page event; the queue picks the speech ones.
        stage.event.connect(self.queue.handle_page_event)
        session_presenter.went_live.connect(self.composer.focus_editor)
        session_presenter.went_live.connect(self.log_panel.refresh_sessions)
        self.presenter.row_written.connect(self.log_model.row_written)
        self.presenter.row_written.connect(self.log_panel.row_written)
        self.log_panel.resend_requested.connect(self.presenter.resend)

    def apply_settings(self, settings: Settings) -> None:
        """New settings from the dialog: chunking and the offline policy take effect now."""
        self.presenter.settings = settings
        self.queue.policy = settings.offline_policy
        self.composer.settings_changed()

    def _session_ids(self) -> list[str]:
        known = [record.session_id for record in self._store.sessions()]
        return list(dict.fromkeys([*known, *self._store.session_ids()]))

    def export(self, path: Path, fmt: str, session_id: str | None) -> int:
        """Write the log (or one session) to ``path``; returns how many rows (SRT: cues)."""
        with path.open("w", encoding="utf-8", newline="") as out:
            return export_log(self._store, ExportFormat(fmt), out, session_id=session_id)

    async def shutdown(self) -> None:
        """Stop sending (in-flight sends are logged as unclear), then let go of the queue."""
        await self.queue.shutdown()
        self.presenter.close()
