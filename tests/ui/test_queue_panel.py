"""The queue panel's wait after a 429 (countdown, Send now), its Retry of a line that may have
been spoken, and the sender's errors: on qasync's real loop, where asyncio sleeps are QTimers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import qasync
from speaking_fakes import QueueRig, until

from avaturn_desktop.core.errors import RETRY_AFTER_CEILING_S, RateLimitedError, UnclearOutcomeError
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech import Speaker
from avaturn_desktop.ui.docks import queue_panel
from avaturn_desktop.ui.docks.queue_panel import QueuePanel, describe
from avaturn_desktop.ui.speaking import QueuePresenter


@pytest.fixture
def panel(queue_rig: QueueRig, qtbot: Any) -> Iterator[QueuePanel]:
    speaker = Speaker(queue_rig.queue, SettingsStore(queue_rig.settings))
    presenter = QueuePresenter(speaker, queue_rig.bus)
    widget = QueuePanel(presenter)
    qtbot.addWidget(widget)
    yield widget
    presenter.close()


def select(panel: QueuePanel, item_id: int) -> None:
    panel.refresh()
    row = panel.model.row_of(item_id)
    assert row is not None
    panel.list.setCurrentIndex(panel.model.index(row))


@pytest.mark.parametrize("retry_after", [1e9, 3e6, float("inf"), 3600.0])
def test_a_huge_retry_after_waits_at_most_the_ceiling_and_can_be_skipped(
    panel: QueuePanel, queue_rig: QueueRig, qloop: qasync.QEventLoop, retry_after: float
) -> None:
    """On qasync a 1e9 s sleep overflowed Qt's timer and killed the sender for good."""
    queue_rig.client.script = [RateLimitedError("Busy.", retry_after=retry_after)]
    queue_rig.controller.go_live()
    first, _ = queue_rig.queue.enqueue(["Busy one.", "Behind it."])
    qloop.run_until_complete(until(lambda: queue_rig.queue.items[0].retry_at is not None))
    item = queue_rig.queue.items[0]
    assert item.retry_at is not None
    import time

    assert item.retry_at - time.time() <= RETRY_AFTER_CEILING_S + 1
    select(panel, first.item_id)
    shown = panel.model.data(panel.model.index(0))
    assert "sending again in 30 s" in shown or "sending again in 29 s" in shown
    assert panel._countdown.isActive()
    assert panel.skip_button.isEnabled()
    panel.skip_button.click()
    qloop.run_until_complete(
        until(lambda: [i.state for i in queue_rig.queue.items] == [ItemState.SENT] * 2)
    )
    assert [text for _, text in queue_rig.client.calls] == ["Busy one.", "Busy one.", "Behind it."]
    panel.refresh()
    assert not panel._countdown.isActive()  # nothing counts down any more


def test_the_countdown_counts_down() -> None:
    from avaturn_desktop.core.queue import QueueItem

    item = QueueItem(item_id=1, text="Hi.", state=ItemState.WAITING, row_id=1, retry_at=1012.2)
    assert describe(item, now=1000.0).startswith("[waiting: the service is busy; sending again")
    assert "in 13 s" in describe(item, now=1000.0)
    assert "in 0 s" in describe(item, now=1013.0)


def test_retry_of_a_line_that_may_have_been_spoken_asks_first(
    panel: QueuePanel,
    queue_rig: QueueRig,
    qloop: qasync.QEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: list[bool] = []
    asked: list[str] = []

    def ask(cls: Any, parent: Any, text: str) -> bool:
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(queue_panel.RetryUnclearDialog, "ask", classmethod(ask))
    queue_rig.client.script = [UnclearOutcomeError("The connection broke.")]
    queue_rig.controller.go_live()
    (item,) = queue_rig.queue.enqueue("Maybe said.")
    qloop.run_until_complete(until(lambda: queue_rig.queue.items[0].state is ItemState.FAILED))
    select(panel, item.item_id)
    answers[:] = [False, True]
    panel.retry_button.click()  # the person says no: nothing is sent
    assert len(queue_rig.queue.items) == 1
    panel.retry_button.click()  # yes: sent again, knowingly
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 2))
    assert asked == ["Maybe said.", "Maybe said."]


def test_a_sender_error_is_shown_above_the_list(
    panel: QueuePanel, queue_rig: QueueRig, qloop: qasync.QEventLoop
) -> None:
    queue_rig.client.script = [RuntimeError("a bug")]
    queue_rig.controller.go_live()
    queue_rig.queue.enqueue(["Broken.", "Fine."])
    qloop.run_until_complete(
        until(lambda: [i.state for i in queue_rig.queue.items][-1] is ItemState.SENT)
    )
    assert not panel.error_label.isHidden()
    assert "RuntimeError" in panel.error_label.text()


def test_lines_a_dead_session_cut_off_are_offered_once_and_said_again_ahead(
    panel: QueuePanel, queue_rig: QueueRig, qloop: qasync.QEventLoop
) -> None:
    from avaturn_desktop.core.events import AvatarStartedSpeakingPhrase

    queue = queue_rig.queue
    queue_rig.controller.go_live("s1")
    queue.enqueue(["Cut off here.", "Never started."])
    qloop.run_until_complete(until(lambda: all(i.task_id for i in queue.items)))
    queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
    panel.refresh()
    assert panel.again_button.isHidden()
    queue_rig.controller.end("killed")
    panel.refresh()
    assert not panel.again_button.isHidden()
    assert "2 lines were said" in panel.unfinished_label.text()
    queue_rig.controller.go_live("s2")
    panel.again_button.click()
    panel.refresh()
    assert panel.again_button.isHidden()  # offered once: a second click cannot double them
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 4))
    assert [text for sid, text in queue_rig.client.calls if sid == "s2"] == [
        "Cut off here.",
        "Never started.",
    ]


def test_the_look_ahead_timer_runs_on_the_apps_qt_loop(
    queue_rig: QueueRig, qloop: qasync.QEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost end event: the timer that lets the next line go is armed on qasync's loop (whose
    handles differ from asyncio's), and the line goes."""
    from avaturn_desktop.services import speech_queue

    monkeypatch.setattr(speech_queue, "LOOKAHEAD_GRACE_S", 0.3)
    monkeypatch.setattr(speech_queue, "SLOWEST_CHARS_PER_S", 1e9)
    queue = queue_rig.queue
    queue.lookahead = 2
    queue_rig.controller.go_live()
    long = "is a line long enough to take its time."
    queue.enqueue([f"One {long}", f"Two {long}", f"Three {long}"])
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 2))
    queue.enqueue([f"Four {long}"])  # the sender looks again while the timer is armed
    qloop.run_until_complete(until(lambda: len(queue_rig.client.calls) == 4))
    assert not queue.paused and [i.state for i in queue.items] == [ItemState.SENT] * 4
