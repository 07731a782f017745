"""Speaking, assembled: one avatar slot's queue as Qt signals, and the composer, queue and log
docks over it.

``SpeakingUi`` builds nothing of the services: the runtime's slot has the queue and the
speaker; this module adapts them to Qt and builds the three panels. The shell passes
:attr:`SpeakingUi.docks` to ``MainWindow(extra_docks=...)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QWidget
from qasync import asyncSlot

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.queue import QueueChange, QueueItem
from avaturn_desktop.services.answers import AnswerService, AnswerView
from avaturn_desktop.services.export import ExportFormat, export_log
from avaturn_desktop.services.runtime import AvatarSlot
from avaturn_desktop.services.speech import Batch, Speaker
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.docks.composer_panel import ComposerPanel
from avaturn_desktop.ui.docks.log_panel import LogPanel
from avaturn_desktop.ui.docks.queue_panel import QueuePanel
from avaturn_desktop.ui.log_model import LogModel
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.presenters import SessionPresenter

log = logging.getLogger("avaturn.ui")


class QueuePresenter(QObject):
    """The speech queue as the panels see it: its changes as signals, its actions reported."""

    #: A :class:`QueueChange` (an item added, changed, moved or removed; or pause changed).
    changed = Signal(object)
    #: ``(row_id, new)``: a task-log row was written.
    row_written = Signal(int, bool)
    #: An :class:`AnswerView`: Ask mode's answer changed (a sentence queued, or it ended).
    answer_changed = Signal(object)

    def __init__(
        self,
        speaker: Speaker,
        messages: MessageBus,
        parent: QObject | None = None,
        *,
        answers: AnswerService | None = None,
    ) -> None:
        super().__init__(parent)
        self.speaker = speaker
        self.queue = queue = speaker.queue
        self.answers = answers
        self._messages = messages
        #: Why the last say or speak-now was refused (the services' own words), if it was.
        self.refusal: str | None = None
        self._unsubscribe = (
            queue.subscribe(self._on_change),
            queue.subscribe_rows(self.row_written.emit),
        ) + (() if answers is None else (answers.subscribe(self.answer_changed.emit),))

    def _on_change(self, change: QueueChange) -> None:
        self.changed.emit(change)

    # -- reading ---------------------------------------------------------------------------

    @property
    def items(self) -> tuple[QueueItem, ...]:
        return self.queue.items

    @property
    def item_ids(self) -> tuple[int, ...]:
        return self.queue.item_ids()

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
        """``text`` as it will be sent (the speaker's rules)."""
        return self.speaker.chunks(text)

    # -- actions (errors are reported here, and the result says whether it worked) ---------

    def say(self, text: str) -> Batch | None:
        """Queue ``text`` as a batch; None (and a message) when it was refused."""
        self.refusal = None
        try:
            return self.speaker.say(text)
        except AppError as exc:
            self.refusal = exc.user_message
            self._messages.warning(exc.user_message)
            return None

    def resend(self, text: str) -> None:
        """Queue a logged line again (from the log's Re-send)."""
        if self.say(text) is not None:
            self._messages.info("Queued again: " + (text if len(text) <= 60 else text[:59] + "…"))

    def remove(self, item_id: int) -> bool:
        return self.queue.remove(item_id)

    def move(self, item_id: int, delta: int) -> bool:
        return self.queue.move(item_id, delta)

    def retry(self, item_id: int) -> None:
        self.queue.retry(item_id)

    def resume(self) -> None:
        self.queue.resume()

    def unfinished(self) -> int:
        """Lines the last ended session had taken and not said to their end."""
        return self.queue.unfinished()

    def say_unfinished_again(self) -> None:
        self.queue.say_unfinished_again()

    def clear_finished(self) -> None:
        self.queue.clear_finished()

    async def stop(self) -> bool:
        try:
            await self.queue.stop()
        except AppError as exc:
            self._messages.error(f"Could not stop the avatar: {exc.user_message}")
            return False
        return True

    async def speak_now(self, text: str) -> Batch | None:
        self.refusal = None
        try:
            return await self.speaker.speak_now(text)
        except AppError as exc:
            self.refusal = exc.user_message
            self._messages.error(exc.user_message)
            return None

    async def ask(self, text: str) -> AnswerView | None:
        """Ask mode: put ``text`` to the language model; None (and a message) when refused."""
        if self.answers is None:
            self._messages.warning("Ask is not available here.")
            return None
        try:
            return await self.answers.ask(text)
        except AppError as exc:
            self._messages.warning(exc.user_message)
            return None

    def prepare_ask(self) -> None:
        """Ask was chosen: load the language model's client now, not at the first question."""
        if self.answers is not None:
            self.answers.prepare()

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
    """The composer, queue and log docks over one avatar slot, ready for the main window."""

    def __init__(
        self,
        *,
        slot: AvatarSlot,
        store: TaskLogStore,
        messages: MessageBus,
        session_presenter: SessionPresenter,
        composer_presenter: QueuePresenter | None = None,
    ) -> None:
        self._store = store
        self._messages = messages
        self.slot = slot
        self.queue = slot.queue
        self.presenter = QueuePresenter(slot.speaker, messages, answers=slot.answers)
        #: What the composer speaks through (the slot's presenter, or one that routes).
        self.composer_presenter = composer_presenter or self.presenter
        self.composer = ComposerPanel(self.composer_presenter)
        self.queue_panel = QueuePanel(self.presenter)
        self.log_model = LogModel(store)
        self.log_panel = LogPanel(self.log_model, sessions=self._session_ids, exporter=self.export)
        self.docks: tuple[tuple[str, str, QWidget, Qt.DockWidgetArea], ...] = (
            ("composer", "Composer", self.composer, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("queue", "Speech queue", self.queue_panel, Qt.DockWidgetArea.RightDockWidgetArea),
            ("log", "Task log", self.log_panel, Qt.DockWidgetArea.BottomDockWidgetArea),
        )
        session_presenter.went_live.connect(self.composer.focus_editor)
        session_presenter.went_live.connect(self.log_panel.refresh_sessions)
        self.presenter.row_written.connect(self.log_model.row_written)
        self.presenter.row_written.connect(self.log_panel.row_written)
        self.log_panel.resend_requested.connect(self.presenter.resend)

    def settings_changed(self) -> None:
        """New settings are in force (the runtime applied them): redraw what shows them."""
        self.composer.settings_changed()

    def _session_ids(self) -> list[str]:
        known = [record.session_id for record in self._store.sessions()]
        return list(dict.fromkeys([*known, *self._store.session_ids()]))

    def export(self, path: Path, fmt: str, session_id: str | None) -> int:
        """Write the log (or one session) to ``path``; returns how many rows (SRT: cues)."""
        with path.open("w", encoding="utf-8", newline="") as out:
            return export_log(self._store, ExportFormat(fmt), out, session_id=session_id)

    def close(self) -> None:
        self.presenter.close()
        self.log_model.close()
        self.log_panel.close_panel()
        if self.composer_presenter is not self.presenter:
            self.composer_presenter.close()
