"""The composer: type, queue or speak now, stop, recall, and change the voice.

Keys in the editor: Ctrl+Enter queues, Enter adds a line, Ctrl+Shift+Enter speaks now (cancels
what plays and what is queued), Esc stops, Ctrl+Up / Ctrl+Down walk the history. Ctrl+. stops
from anywhere in the app.

Text leaves the box only once the service has acknowledged every sentence of it. While it is
on its way the box is read-only; when the speaker gives the batch back (a sentence failed, or
was removed or cancelled before the service took it: ``services/speech.py`` has the rule), the
text not sent is put back in the box, marked, with the reason, ready to send again.

Echo / Ask (as in the seed's demo): in Echo the avatar says the text; in Ask the text is a
question for the language model, whose answer the avatar speaks sentence by sentence while it
is written (``services/answers.py``). Ctrl+Enter asks; asking again replaces the answer under
way; Stop ends it. The question leaves the box once it is taken, and comes back, marked, when
its answer failed before a word of it was said.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from avaturn_desktop.core import catalog
from avaturn_desktop.core.tasks import QuestionState
from avaturn_desktop.services.answers import AnswerView
from avaturn_desktop.services.speech import Batch, BatchOutcome
from avaturn_desktop.ui.status_text import StatusText

if TYPE_CHECKING:
    from avaturn_desktop.ui.speaking import QueuePresenter

log = logging.getLogger("avaturn.ui")

#: Stops the avatar from anywhere in the app (Esc works in the composer).
STOP_SHORTCUT: Final = "Ctrl+."
HISTORY_LIMIT: Final = 200
ECHO_HINT: Final = (
    "Type what the avatar should say. Ctrl+Enter queues it, Ctrl+Shift+Enter says it now."
)
ASK_HINT: Final = (
    "Ask a question: the avatar speaks the answer while it is written. Ctrl+Enter asks; "
    "asking again replaces the answer."
)
_FAILED_STYLE: Final = "QPlainTextEdit { border: 2px solid #c62828; }"
_STOP_STYLE: Final = (
    "QPushButton { background: #c62828; color: white; font-weight: bold; font-size: 16px;"
    " padding: 8px 18px; }"
)


class VoiceChangeDialog:
    """Confirms a voice change, which clears the queue (tests replace ``ask``)."""

    @classmethod
    def ask(cls, parent: QWidget | None, voice_label: str) -> bool:
        answer = QMessageBox.question(
            parent,
            "Change voice",
            f"Change the voice to {voice_label}?\n\nThe avatar drops what is queued on the "
            "service; the sentence being spoken finishes in the old voice.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.Yes,
        )
        return answer == QMessageBox.StandardButton.Yes


class ComposerEdit(QPlainTextEdit):
    """The editor; its keys are intents, handled by the panel."""

    submit_requested = Signal()
    speak_now_requested = Signal()
    stop_requested = Signal()
    history_requested = Signal(int)  # -1 older, +1 newer

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        mods = event.modifiers()
        ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and ctrl:
            (self.speak_now_requested if shift else self.submit_requested).emit()
        elif key == Qt.Key.Key_Escape:
            self.stop_requested.emit()
        elif key == Qt.Key.Key_Up and ctrl:
            self.history_requested.emit(-1)
        elif key == Qt.Key.Key_Down and ctrl:
            self.history_requested.emit(1)
        else:
            super().keyPressEvent(event)
            return
        event.accept()


class ComposerPanel(QWidget):
    def __init__(self, presenter: QueuePresenter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer_panel")
        self._presenter = presenter
        self._history: list[str] = []
        self._history_pos = 0
        self._draft = ""
        #: The texts on their way (the speaker tracks their sentences), oldest first, each with
        #: its unsubscribe; the newest is the one the status line speaks of.
        self._batches: dict[Batch, Callable[[], None]] = {}
        self._batch: Batch | None = None
        #: The text last put back in the box, marked (an edit of it clears the mark).
        self._batch_text = ""
        self._busy = False
        #: Ask mode: the question asked last from here (its answer is shown in the status).
        self._question_id: str | None = None

        self.editor = ComposerEdit()
        self.editor.setObjectName("composer.editor")
        self.editor.setPlaceholderText(ECHO_HINT)
        self.editor.setTabChangesFocus(True)
        # Both change with each text typed and sent: text that never relays the window out.
        self.count_label = StatusText(chars=30, align=Qt.AlignmentFlag.AlignRight)
        self.count_label.setObjectName("composer.count")
        self.status_label = StatusText(lines=2, chars=40)
        self.status_label.setObjectName("composer.status")

        self.echo_button = QPushButton("Echo")
        self.echo_button.setObjectName("composer.echo")
        self.echo_button.setToolTip("The avatar says what you type")
        self.ask_button = QPushButton("Ask")
        self.ask_button.setObjectName("composer.ask")
        self.ask_button.setToolTip(
            "What you type is a question for the language model; the avatar speaks its answer"
        )
        self.mode = QButtonGroup(self)
        for button in (self.echo_button, self.ask_button):
            button.setCheckable(True)
            self.mode.addButton(button)
        self.echo_button.setChecked(True)
        self.ask_button.setEnabled(presenter.answers is not None)

        self.queue_button = QPushButton("Queue")
        self.queue_button.setToolTip("Add to the speech queue (Ctrl+Enter)")
        self.speak_now_button = QPushButton("Speak now")
        self.speak_now_button.setToolTip(
            "Cancel what is playing and queued, then say this (Ctrl+Shift+Enter)"
        )
        self.stop_button = QPushButton("■ Stop")
        self.stop_button.setObjectName("composer.stop")
        self.stop_button.setStyleSheet(_STOP_STYLE)
        self.stop_button.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Expanding)
        self.stop_button.setToolTip(f"Stop the avatar now (Esc, or {STOP_SHORTCUT} anywhere)")
        self.stop_shortcut = QShortcut(QKeySequence(STOP_SHORTCUT), self)
        self.stop_shortcut.setContext(Qt.ShortcutContext.ApplicationShortcut)

        self.voice_combo = QComboBox()
        self.voice_combo.setObjectName("composer.voice")
        self.voice_combo.setEditable(True)
        self.voice_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.voice_combo.setToolTip("Pick a voice, or type an ElevenLabs voice id")
        for preset in catalog.VOICES:
            self.voice_combo.addItem(f"{preset.name} ({preset.id})", preset.id)
        self.voice_button = QPushButton("Change voice")
        self.voice_button.setToolTip("Switch the live session's voice (clears the queue)")

        modes = QHBoxLayout()
        modes.setSpacing(0)
        modes.addWidget(self.echo_button)
        modes.addWidget(self.ask_button)
        buttons = QVBoxLayout()
        buttons.addLayout(modes)
        buttons.addWidget(self.queue_button)
        buttons.addWidget(self.speak_now_button)
        buttons.addWidget(self.stop_button, 1)
        top = QHBoxLayout()
        top.addWidget(self.editor, 1)
        top.addLayout(buttons)
        info = QHBoxLayout()
        info.addWidget(self.status_label, 1)
        info.addWidget(self.count_label)
        voice = QHBoxLayout()
        self._voice_row = voice
        voice.addWidget(QLabel("Voice:"))
        voice.addWidget(self.voice_combo, 1)
        voice.addWidget(self.voice_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top, 1)
        layout.addLayout(info)
        layout.addLayout(voice)

        self.editor.submit_requested.connect(self.queue_text)
        self.editor.speak_now_requested.connect(self._on_speak_now)
        self.editor.stop_requested.connect(presenter.request_stop)
        self.editor.history_requested.connect(self.recall)
        self.editor.textChanged.connect(self._update_count)
        self.queue_button.clicked.connect(self.queue_text)
        self.speak_now_button.clicked.connect(self._on_speak_now)
        self.stop_button.clicked.connect(presenter.request_stop)
        self.stop_shortcut.activated.connect(presenter.request_stop)
        self.voice_button.clicked.connect(self._on_change_voice_clicked)
        self.ask_button.toggled.connect(self._on_mode)
        presenter.answer_changed.connect(self._show_answer)
        self._update_count()

    def add_target_selector(self, selector: QWidget) -> None:
        """Put the "speak to" selector (avatars side by side) first in the voice row."""
        self._voice_row.insertWidget(0, selector)

    # -- state shown -------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """The text in the box is marked: its last send failed."""
        return bool(self.editor.property("failed"))

    @property
    def asking(self) -> bool:
        """Ask mode: the text is a question for the language model."""
        return self.ask_button.isChecked()

    def set_ask_mode(self, ask: bool) -> None:
        (self.ask_button if ask else self.echo_button).setChecked(True)

    @property
    def pending(self) -> bool:
        """Text is on its way: queued and not yet all taken by the service (the box stays
        free for the next line), or Speak now / Ask is being handed over (the box waits)."""
        return bool(self._batches) or self._busy

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _mark_failed(self, failed: bool) -> None:
        self.editor.setProperty("failed", failed)
        self.editor.setStyleSheet(_FAILED_STYLE if failed else "")

    def _lock(self, locked: bool) -> None:
        self.editor.setReadOnly(locked)
        self.queue_button.setEnabled(not locked)
        self.speak_now_button.setEnabled(not locked and not self.asking)
        self.echo_button.setEnabled(not locked)
        self.ask_button.setEnabled(not locked and self._presenter.answers is not None)

    def _on_mode(self, ask: bool) -> None:
        self.editor.setPlaceholderText(ASK_HINT if ask else ECHO_HINT)
        self.queue_button.setText("Ask" if ask else "Queue")
        self.queue_button.setToolTip(
            "Ask the language model; the avatar speaks the answer (Ctrl+Enter)"
            if ask
            else "Add to the speech queue (Ctrl+Enter)"
        )
        self.speak_now_button.setEnabled(not ask and not self.pending)
        self._update_count()
        if ask:
            self._presenter.prepare_ask()

    def _update_count(self) -> None:
        text = self.editor.toPlainText()
        if self.asking:
            self.count_label.setText(f"{len(text)} characters")
            if self.failed and text != self._batch_text:
                self._mark_failed(False)
            return
        sentences = len(self._presenter.chunks(text)) if text.strip() else 0
        plural = "" if sentences == 1 else "s"
        self.count_label.setText(f"{len(text)} characters · {sentences} sentence{plural}")
        if self.failed and text != self._batch_text:
            self._mark_failed(False)

    def settings_changed(self) -> None:
        self._update_count()

    def focus_editor(self) -> None:
        self.editor.setFocus(Qt.FocusReason.OtherFocusReason)

    # -- sending -----------------------------------------------------------------------------

    def _take_text(self) -> str | None:
        if self._busy:
            self._set_status("The last text is still being handed over; a moment.")
            return None
        return self.editor.toPlainText()

    def _refused(self, what: str) -> None:
        """The services refused the text (their words say why); it stays in the box."""
        self._mark_failed(True)
        why = self._presenter.refusal or "see the message"
        self._set_status(f"{what}: {why} The text is kept.")

    def queue_text(self) -> bool:
        """Ctrl+Enter: queue the text (as sentences), or in Ask mode ask it (the asking runs
        on). True when it was queued, or the question is on its way."""
        if self.asking:
            if self._take_text() is None:
                return False
            self._ask()
            return True
        text = self._take_text()
        if text is None:
            return False
        batch = self._presenter.say(text)
        if batch is None:
            self._refused("Not queued")
            return False
        self._track(batch)
        return True

    @asyncSlot()
    async def _on_speak_now(self) -> None:
        await self.speak_now()

    async def speak_now(self) -> bool:
        """Ctrl+Shift+Enter: cancel what plays and is queued, then say the text first."""
        text = self._take_text()
        if text is None:
            return False
        self._busy = True
        self._lock(True)
        try:
            batch = await self._presenter.speak_now(text)
        finally:
            self._busy = False
        if batch is None:
            self._lock(False)
            self._refused("Not spoken")
            return False
        self._track(batch)
        return True

    # -- asking ------------------------------------------------------------------------------

    @asyncSlot()
    async def _ask(self) -> None:
        await self.ask()

    async def ask(self) -> bool:
        """Ask mode's Ctrl+Enter: the text is a question; True when the question was taken."""
        text = self._take_text()
        if text is None:
            return False
        self._busy = True
        self._lock(True)
        try:
            view = await self._presenter.ask(text)
        finally:
            self._busy = False
            self._lock(False)
        if view is None:
            self._mark_failed(True)
            self._batch_text = text
            self._set_status("Not asked (see the message). The question is kept.")
            return False
        self._question_id = view.question_id
        self._remember(text)
        self._batch_text = ""
        self._mark_failed(False)
        if self.editor.toPlainText() == text:
            self.editor.setPlainText("")
        self._show_answer(view)
        return True

    def _show_answer(self, view: AnswerView) -> None:
        if view.question_id != self._question_id:
            return
        n = len(view.sentences)
        said = f"{n} sentence{'' if n == 1 else 's'}"
        if view.state is QuestionState.ANSWERING:
            waiting = "Asked; waiting for the answer…"
            self._set_status(f"Answering… {said} queued." if n else waiting)
        elif view.state is QuestionState.ANSWERED:
            note = f" {view.reason}" if view.reason else ""
            self._set_status(f"Answered ({said}).{note}")
        elif view.state is QuestionState.STOPPED:
            self._set_status(f"Stopped after {said}.")
        elif view.state is QuestionState.REPLACED:
            self._set_status(f"Replaced by a newer question after {said}.")
        else:
            self._set_status(f"The answer failed: {view.reason}")
            if not n and not self.editor.toPlainText().strip() and not self.pending:
                # nothing of it was said: the question comes back, ready to ask again
                self.editor.setPlainText(view.question)
                self._batch_text = view.question
                self._mark_failed(True)
                self.focus_editor()

    def _track(self, batch: Batch) -> None:
        """The text is in the queue now (where it can still be moved or removed): the box is
        free for the next line. Should the text not be sent after all, what was not sent
        comes back here, marked."""
        self._lock(False)
        self._batch = batch
        self._mark_failed(False)
        self._remember(batch.text)
        if self.editor.toPlainText() == batch.text:
            self.editor.setPlainText("")
        self._batches[batch] = batch.subscribe(self._show_batch)
        self._show_batch(batch)

    def _show_batch(self, batch: Batch) -> None:
        # the status speaks of the newest text, unless something came back to the box
        latest = batch is self._batch and not self.failed
        if batch.outcome is not BatchOutcome.PENDING:
            unsubscribe = self._batches.pop(batch, None)
            if unsubscribe is not None:
                unsubscribe()
        if batch.outcome is BatchOutcome.TAKEN:
            if latest:
                n = len(batch.items)
                self._set_status(f"Sent ({n} sentence{'' if n == 1 else 's'}).")
        elif batch.outcome is BatchOutcome.GIVEN_BACK:
            self._give_back(batch)
        elif latest and batch.held:
            self._set_status(
                "Held in the queue: no session is live. It is sent when one is (remove it "
                "from the queue to drop it)."
            )
        elif latest:
            waiting = sum(1 for item in batch.items if not item.ever_sent)
            self._set_status(
                f"In the queue ({waiting} sentence{'' if waiting == 1 else 's'} still to send)."
                if waiting
                else "Sending…"
            )

    def _give_back(self, batch: Batch) -> None:
        """What was not sent of ``batch`` goes back in the box, marked, above anything typed
        since (nothing is lost, and nothing typed is overwritten)."""
        typed = self.editor.toPlainText()
        unsent = batch.unsent_text
        self._batch_text = unsent if not typed.strip() else f"{unsent}\n{typed}"
        self.editor.setPlainText(self._batch_text)
        self._mark_failed(True)
        sent = batch.sent_count
        done = f" {sent} sentence(s) before it were sent." if sent else ""
        self._set_status(f"Not sent: {batch.reason}.{done} The rest is back here; send it again.")
        self.focus_editor()

    # -- history -----------------------------------------------------------------------------

    def _remember(self, text: str) -> None:
        if text.strip() and (not self._history or self._history[-1] != text):
            self._history.append(text)
            del self._history[:-HISTORY_LIMIT]
        self._history_pos = len(self._history)
        self._draft = ""

    @property
    def history(self) -> tuple[str, ...]:
        return tuple(self._history)

    def recall(self, step: int) -> None:
        """Ctrl+Up (-1) / Ctrl+Down (+1): walk the sent texts; past the newest, the draft."""
        if self.pending or not self._history:
            return
        if self._history_pos == len(self._history):
            self._draft = self.editor.toPlainText()
        pos = max(0, min(len(self._history), self._history_pos + step))
        if pos == self._history_pos:
            return
        self._history_pos = pos
        text = self._draft if pos == len(self._history) else self._history[pos]
        self.editor.setPlainText(text)
        self.editor.moveCursor(self.editor.textCursor().MoveOperation.End)

    # -- voice -------------------------------------------------------------------------------

    def selected_voice(self) -> tuple[str, str]:
        """``(voice_id, label)`` of the picked preset, or the id typed in the box."""
        text = self.voice_combo.currentText().strip()
        index = self.voice_combo.findText(text)
        if index >= 0:
            return str(self.voice_combo.itemData(index)), text
        return text, text

    def _on_change_voice_clicked(self) -> None:
        voice_id, label = self.selected_voice()
        if not voice_id:
            self._set_status("Pick a voice or type a voice id first.")
            return
        if not VoiceChangeDialog.ask(self, label):
            return
        self._change_voice(voice_id)

    @asyncSlot(str)
    async def _change_voice(self, voice_id: str) -> None:
        await self.change_voice(voice_id)

    async def change_voice(self, voice_id: str) -> bool:
        self.voice_button.setEnabled(False)
        try:
            ok = await self._presenter.change_voice(voice_id)
        finally:
            self.voice_button.setEnabled(True)
        self._set_status(
            f"Voice changed to {voice_id}."
            if ok
            else "The voice was not changed (see the message)."
        )
        return ok
