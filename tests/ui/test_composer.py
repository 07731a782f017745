"""The composer's keyboard flow: queue, new lines, refusals, history, stop, text kept on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import qasync
from PySide6.QtCore import Qt
from speaking_fakes import QueueRig, until

from avaturn_desktop.core.errors import InvalidRequestError, ServerError
from avaturn_desktop.core.events import AvatarEndedSpeakingPhrase, AvatarStartedSpeakingPhrase
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech import Speaker
from avaturn_desktop.ui.docks import composer_panel
from avaturn_desktop.ui.docks.composer_panel import ComposerPanel
from avaturn_desktop.ui.docks.queue_panel import QueuePanel
from avaturn_desktop.ui.speaking import QueuePresenter

CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def presenter(queue_rig: QueueRig) -> Iterator[QueuePresenter]:
    speaker = Speaker(queue_rig.queue, SettingsStore(queue_rig.settings))
    presenter = QueuePresenter(speaker, queue_rig.bus)
    yield presenter
    presenter.close()


@pytest.fixture
def composer(presenter: QueuePresenter, qtbot: Any) -> ComposerPanel:
    panel = ComposerPanel(presenter)
    qtbot.addWidget(panel)
    return panel


def type_text(qtbot: Any, composer: ComposerPanel, text: str) -> None:
    qtbot.keyClicks(composer.editor, text)


def settle(qloop: qasync.QEventLoop, composer: ComposerPanel) -> None:
    qloop.run_until_complete(until(lambda: not composer.pending))


def test_enter_adds_a_line_and_ctrl_enter_queues(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    type_text(qtbot, composer, "Hello there.")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return)
    type_text(qtbot, composer, "Second line")
    assert composer.editor.toPlainText() == "Hello there.\nSecond line"
    assert queue_rig.queue.items == ()
    assert composer.count_label.text() == "24 characters · 2 sentences"

    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    # in the queue now: the box is free for the next line at once
    assert composer.pending and not composer.editor.isReadOnly()
    assert composer.editor.toPlainText() == ""
    settle(qloop, composer)
    assert [text for _, text in queue_rig.client.calls] == ["Hello there.", "Second line"]
    assert composer.editor.toPlainText() == ""
    assert not composer.editor.isReadOnly()
    assert composer.history == ("Hello there.\nSecond line",)
    assert "Sent (2 sentences)" in composer.status_label.text()


def test_empty_or_blank_text_is_refused(composer: ComposerPanel, qtbot: Any) -> None:
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    assert "Nothing to say" in composer.status_label.text()
    type_text(qtbot, composer, "   ")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return)
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    assert "Nothing to say" in composer.status_label.text()
    assert composer.editor.toPlainText() == "   \n"
    assert not composer.pending


def test_text_stays_marked_when_the_send_fails(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    queue_rig.client.script = ["t1", ServerError("The service failed (502).", status=502)]
    type_text(qtbot, composer, "One is fine. Two fails. Three waits.")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    settle(qloop, composer)
    # the sentence that failed and the one behind it are back in the box, marked
    assert composer.editor.toPlainText() == "Two fails.\nThree waits."
    assert composer.failed
    assert "The service failed (502)" in composer.status_label.text()
    assert [i.text for i in queue_rig.queue.items] == ["One is fine.", "Two fails."]
    assert [text for _, text in queue_rig.client.calls] == ["One is fine.", "Two fails."]
    # ready to retry: Ctrl+Enter sends the rest
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    assert not composer.failed
    settle(qloop, composer)
    assert composer.editor.toPlainText() == ""
    assert [text for _, text in queue_rig.client.calls][2:] == ["Two fails.", "Three waits."]


def test_a_line_spoken_before_its_answer_arrives_counts_as_sent(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    gate = asyncio.Event()
    queue_rig.client.gate = gate
    type_text(qtbot, composer, "Short line.")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 1))
    # The avatar says it, start to end, before the POST's answer is back.
    for kind in (AvatarStartedSpeakingPhrase, AvatarEndedSpeakingPhrase):
        queue_rig.queue.handle_page_event(kind(phrase_id="p-1"))
    gate.set()
    settle(qloop, composer)
    assert composer.editor.toPlainText() == ""
    assert not composer.failed
    assert [i.state for i in queue_rig.queue.items] == [ItemState.SPOKEN]


def test_refused_without_a_session_keeps_the_text(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any
) -> None:
    queue_rig.queue.policy = "refuse"
    type_text(qtbot, composer, "Anyone there?")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    assert composer.editor.toPlainText() == "Anyone there?"
    assert composer.failed and not composer.pending
    assert any("No session is live" in text for _, text in queue_rig.messages)


def test_held_until_live_then_sent(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    type_text(qtbot, composer, "Early bird.")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    assert composer.pending
    assert "Held" in composer.status_label.text()
    assert composer.editor.toPlainText() == ""  # it waits in the queue, visibly
    assert [i.text for i in queue_rig.queue.items] == ["Early bird."]
    queue_rig.controller.go_live()
    settle(qloop, composer)
    assert composer.editor.toPlainText() == ""


def test_history_recall_with_ctrl_up_and_down(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    for text in ("First.", "Second."):
        type_text(qtbot, composer, text)
        qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
        settle(qloop, composer)
    type_text(qtbot, composer, "draft")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Up, CTRL)
    assert composer.editor.toPlainText() == "Second."
    qtbot.keyClick(composer.editor, Qt.Key.Key_Up, CTRL)
    assert composer.editor.toPlainText() == "First."
    qtbot.keyClick(composer.editor, Qt.Key.Key_Up, CTRL)
    assert composer.editor.toPlainText() == "First."
    qtbot.keyClick(composer.editor, Qt.Key.Key_Down, CTRL)
    qtbot.keyClick(composer.editor, Qt.Key.Key_Down, CTRL)
    assert composer.editor.toPlainText() == "draft"


def test_escape_stops_the_avatar(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    with qtbot.waitSignal(composer.editor.stop_requested):
        qtbot.keyClick(composer.editor, Qt.Key.Key_Escape)
    qloop.run_until_complete(until(lambda: queue_rig.stage.cancels == 1))
    assert queue_rig.queue.paused


def test_speak_now_goes_first(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    qloop.run_until_complete(queue_rig.queue.stop())  # paused: the next line waits
    queue_rig.queue.enqueue("Later.")
    type_text(qtbot, composer, "Now!")
    assert qloop.run_until_complete(composer.speak_now())
    settle(qloop, composer)
    assert [text for _, text in queue_rig.client.calls] == ["Now!"]
    assert queue_rig.stage.cancels == 2
    assert composer.editor.toPlainText() == ""


def test_voice_change_asks_first_and_reports_errors(
    composer: ComposerPanel,
    queue_rig: QueueRig,
    qloop: qasync.QEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def refuse(_cls: object, _parent: object, label: str) -> bool:
        asked.append(label)
        return False

    monkeypatch.setattr(composer_panel.VoiceChangeDialog, "ask", classmethod(refuse))
    composer.voice_combo.setCurrentIndex(1)
    composer.voice_button.click()
    assert asked == ["Sarah (EXAVITQu4vr4xnSDxMaL)"]
    assert queue_rig.stage.voices == []

    queue_rig.controller.go_live()
    assert qloop.run_until_complete(composer.change_voice("EXAVITQu4vr4xnSDxMaL"))
    assert queue_rig.stage.voices == ["EXAVITQu4vr4xnSDxMaL"]
    queue_rig.stage.voice_error = InvalidRequestError(
        "Could not change the voice: Unknown voice id 'nope'", status=400, detail="x"
    )
    composer.voice_combo.setEditText("nope")
    assert composer.selected_voice() == ("nope", "nope")
    assert not qloop.run_until_complete(composer.change_voice("nope"))
    assert queue_rig.queue.voice_id == "EXAVITQu4vr4xnSDxMaL"
    assert any("Unknown voice id 'nope'" in text for _, text in queue_rig.messages)


def test_queue_panel_keys_remove_and_move(
    presenter: QueuePresenter, queue_rig: QueueRig, qtbot: Any
) -> None:
    panel = QueuePanel(presenter)
    qtbot.addWidget(panel)
    queue_rig.queue.enqueue(["A.", "B.", "C."])
    qtbot.waitUntil(lambda: panel.model.rowCount() == 3)
    assert "held" in panel.model.index(0).data()
    panel.list.setCurrentIndex(panel.model.index(2))
    qtbot.keyClick(panel.list, Qt.Key.Key_Up, Qt.KeyboardModifier.AltModifier)
    assert [i.text for i in queue_rig.queue.items] == ["A.", "C.", "B."]
    assert panel.list.currentIndex().row() == 1
    qtbot.keyClick(panel.list, Qt.Key.Key_Delete)
    assert [i.text for i in queue_rig.queue.items] == ["A.", "B."]
    assert panel.model.rowCount() == 2
    assert not panel.resume_button.isVisibleTo(panel)
    assert {i.state for i in queue_rig.queue.items} == {ItemState.WAITING}


def test_queue_panel_takes_a_thousand_lines_in_one_redraw(
    presenter: QueuePresenter, queue_rig: QueueRig, qtbot: Any
) -> None:
    panel = QueuePanel(presenter)
    qtbot.addWidget(panel)
    changes: list[str] = []
    panel.model.modelReset.connect(lambda: changes.append("reset"))
    panel.model.layoutChanged.connect(lambda: changes.append("layout"))
    panel.model.rowsInserted.connect(lambda _p, first, last: changes.append(f"{first}-{last}"))
    for n in range(1000):
        queue_rig.queue.enqueue([f"Line {n}."])
    qtbot.waitUntil(lambda: panel.model.rowCount() == 1000)
    assert changes == ["0-999"]  # gathered: one insertion, not a thousand rebuilds
    assert panel.summary.text().startswith("1000 waiting")


def test_the_next_line_is_typed_and_queued_while_one_waits_and_nothing_typed_is_lost(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    """The box never goes read-only; a text that comes back (not sent) lands above what was
    typed since, marked, and overwrites nothing."""
    queue_rig.controller.go_live()
    gate: asyncio.Future[str] = qloop.create_future()
    queue_rig.client.script = ["t1", gate]
    type_text(qtbot, composer, "One is fine. Two waits on the service.")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    assert composer.pending and not composer.editor.isReadOnly()
    type_text(qtbot, composer, "A second text.")
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)
    assert composer.editor.toPlainText() == ""
    type_text(qtbot, composer, "Typed meanwhile.")
    # the first text's second sentence is refused: it comes back, above what was typed
    gate.set_exception(ServerError("The service failed (502).", status=502))
    qloop.run_until_complete(until(lambda: composer.failed))
    assert composer.editor.toPlainText() == "Two waits on the service.\nTyped meanwhile."
    assert "The service failed (502)" in composer.status_label.text()
    settle(qloop, composer)
    assert [text for _, text in queue_rig.client.calls] == [
        "One is fine.",
        "Two waits on the service.",
        "A second text.",
    ]
