"""The composer's Ask mode: the toggle, a question answered sentence by sentence into the queue
(the language model is the simulator's, over real loopback HTTP), Stop, and a failed question
kept for another try."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import qasync
from PySide6.QtCore import Qt
from speaking_fakes import QueueRig, until

from avaturn_desktop.core.chunker import split_sentences
from avaturn_desktop.core.settings import LlmSettings
from avaturn_desktop.core.tasks import QuestionState
from avaturn_desktop.services.answers import AnswerService, LlmEndpoint, SpeechQueueSink
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech import Speaker
from avaturn_desktop.simulator.llm import LlmConfig, answer_for
from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer
from avaturn_desktop.ui.docks.composer_panel import ASK_HINT, ECHO_HINT, ComposerPanel
from avaturn_desktop.ui.speaking import QueuePresenter

CTRL = Qt.KeyboardModifier.ControlModifier
QUESTION = "Why is the sky blue?"
SENTENCES = split_sentences(answer_for([{"role": "user", "content": QUESTION}], 4))


@pytest.fixture
def llm_sim() -> Iterator[SimulatorServer]:
    server = SimulatorServer(SimulatorConfig(llm=LlmConfig(tokens_per_second=100.0)))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def llm(request: pytest.FixtureRequest) -> LlmSettings:
    return LlmSettings(model=getattr(request, "param", "sim-chat"))


@pytest.fixture
def composer(
    queue_rig: QueueRig,
    llm_sim: SimulatorServer,
    llm: LlmSettings,
    qtbot: Any,
    qloop: qasync.QEventLoop,
) -> Iterator[ComposerPanel]:
    endpoint = LlmEndpoint(llm_sim.base_url + "/v1", "simulator", keyless=True)
    answers = AnswerService(
        SpeechQueueSink(queue_rig.queue),
        endpoint=lambda: endpoint,
        settings=lambda: llm,
        session=lambda: queue_rig.queue.session_id,
        max_retries=0,
    )
    unfollow = answers.follow_queue_stops(queue_rig.queue)
    speaker = Speaker(queue_rig.queue, SettingsStore(queue_rig.settings))
    presenter = QueuePresenter(speaker, queue_rig.bus, answers=answers)
    panel = ComposerPanel(presenter)
    qtbot.addWidget(panel)
    yield panel
    unfollow()
    presenter.close()
    qloop.run_until_complete(answers.shutdown())


def ask_by_keyboard(qtbot: Any, composer: ComposerPanel, text: str) -> None:
    qtbot.keyClicks(composer.editor, text)
    qtbot.keyClick(composer.editor, Qt.Key.Key_Return, CTRL)


def test_the_toggle_switches_between_echo_and_ask(composer: ComposerPanel, qtbot: Any) -> None:
    assert not composer.asking and composer.editor.placeholderText() == ECHO_HINT
    qtbot.mouseClick(composer.ask_button, Qt.MouseButton.LeftButton)
    assert composer.asking and composer.editor.placeholderText() == ASK_HINT
    assert composer.queue_button.text() == "Ask" and not composer.speak_now_button.isEnabled()
    qtbot.keyClicks(composer.editor, "Two. Sentences.")
    assert composer.count_label.text() == "15 characters"
    qtbot.mouseClick(composer.echo_button, Qt.MouseButton.LeftButton)
    assert not composer.asking and composer.queue_button.text() == "Queue"
    assert composer.speak_now_button.isEnabled()
    assert composer.count_label.text() == "15 characters · 2 sentences"


def test_a_question_is_answered_into_the_queue_sentence_by_sentence(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    composer.set_ask_mode(True)
    ask_by_keyboard(qtbot, composer, QUESTION)
    qloop.run_until_complete(until(lambda: "Answering…" in composer.status_label.text()))
    assert composer.editor.toPlainText() == "" and composer.history == (QUESTION,)
    qloop.run_until_complete(until(lambda: "Answered" in composer.status_label.text()))
    assert composer.status_label.text() == "Answered (4 sentences)."
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 4))
    assert [text for _, text in queue_rig.client.calls] == SENTENCES
    questions = {item.question_id for item in queue_rig.queue.items}
    assert len(questions) == 1 and None not in questions


def test_stop_ends_the_answer(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    composer.set_ask_mode(True)
    ask_by_keyboard(qtbot, composer, QUESTION)
    qloop.run_until_complete(until(lambda: "Answering… 1 sentence" in composer.status_label.text()))
    qtbot.keyClick(composer.editor, Qt.Key.Key_Escape)
    qloop.run_until_complete(until(lambda: "Stopped after" in composer.status_label.text()))
    answers = composer._presenter.answers
    assert answers is not None and answers.current is not None
    assert answers.current.state is QuestionState.STOPPED
    assert queue_rig.queue.paused


@pytest.mark.parametrize("llm", ["gpt-9-ultra"], indirect=True)
def test_a_failed_question_comes_back_marked(
    composer: ComposerPanel, queue_rig: QueueRig, qtbot: Any, qloop: qasync.QEventLoop
) -> None:
    queue_rig.controller.go_live()
    composer.set_ask_mode(True)
    ask_by_keyboard(qtbot, composer, QUESTION)
    qloop.run_until_complete(until(lambda: "failed" in composer.status_label.text()))
    assert "The model “gpt-9-ultra” does not exist" in composer.status_label.text()
    assert composer.editor.toPlainText() == QUESTION and composer.failed
    assert queue_rig.client.calls == []
