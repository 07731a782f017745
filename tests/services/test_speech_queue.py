"""The speech queue: order, states and the task log under failures, with small typed fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClient, FakeController, FakeStage

from avaturn_desktop.core.errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnclearOutcomeError,
)
from avaturn_desktop.core.events import (
    AvatarEndedSpeaking,
    AvatarEndedSpeakingPhrase,
    AvatarStartedSpeaking,
    AvatarStartedSpeakingPhrase,
)
from avaturn_desktop.core.session_state import EndReason
from avaturn_desktop.core.tasks import TaskState
from avaturn_desktop.services.speech_queue import (
    REASON_SESSION_ENDED,
    REASON_SPEAK_NOW,
    REASON_STOPPED,
    REASON_VOICE,
    ChangeKind,
    ItemState,
    NotLiveError,
    QueueChange,
    QueueRefusedError,
    SpeechQueue,
)
from avaturn_desktop.services.tasklog import TaskLogStore

St = ItemState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    queue: SpeechQueue
    client: FakeClient
    stage: FakeStage
    controller: FakeController
    store: TaskLogStore
    clock: Clock
    sleeps: list[float]
    changes: list[QueueChange]

    def states(self) -> list[ItemState]:
        return [item.state for item in self.queue.items]

    def rows(self) -> list[tuple[str, TaskState, str | None]]:
        return [(r.text, r.state, r.reason) for r in self.store.query()]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    client, stage, controller, clock = FakeClient(), FakeStage(), FakeController(), Clock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    queue = SpeechQueue(client, store, controller, stage=stage, clock=clock, sleep=sleep)
    changes: list[QueueChange] = []
    queue.subscribe(changes.append)
    yield Rig(queue, client, stage, controller, store, clock, sleeps, changes)
    store.close()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def until(predicate: Callable[[], bool], rounds: int = 500) -> None:
    """Let the loop run until ``predicate`` holds (a condition, never a timed sleep)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def settle(rig: Rig) -> None:
    await until(lambda: not any(s in (St.SENDING, St.WAITING) for s in rig.states()))


def test_sends_in_order_one_at_a_time_and_logs_every_state(rig: Rig) -> None:
    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two.", "Three."])
        await until(lambda: len(rig.client.calls) == 1)
        # one in flight: the others wait, but they are logged already
        assert rig.states() == [St.SENDING, St.WAITING, St.WAITING]
        assert [r.state for r in rig.store.query()] == [TaskState.QUEUED] * 3
        rig.clock.now = 1001.0
        gate.set_result("t-one")
        await settle(rig)

    run(scenario())
    assert [text for _, text in rig.client.calls] == ["One.", "Two.", "Three."]
    assert rig.states() == [St.SENT] * 3
    first = rig.store.query()[0]
    assert (first.state, first.task_id, first.sent_at, first.acked_at) == (
        TaskState.SENT,
        "t-one",
        1000.0,
        1001.0,
    )
    assert {r.voice_id for r in rig.store.query()} == {"v-old"}


def test_speaking_matched_by_task_id_and_latency(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = ["a", "b"]
        rig.controller.go_live()
        rig.queue.enqueue(["First.", "Second."])
        await settle(rig)
        rig.clock.now = 1000.25
        # the service says "b" starts first: the id wins over the order
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="b"))
        rig.clock.now = 1001.0
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="b"))

    run(scenario())
    assert rig.states() == [St.SENT, St.SPOKEN]
    second = rig.store.query()[1]
    assert second.state is TaskState.SPOKEN
    assert second.latency_ms == pytest.approx(250.0)
    assert second.duration_s == pytest.approx(0.75)


def test_speaking_matched_by_order_when_ids_differ(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(["First.", "Second."])
        await settle(rig)
        rig.queue.handle_page_event(AvatarStartedSpeaking())  # adopted by the phrase event
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="ph-1"))
        assert rig.states() == [St.SPEAKING, St.SENT]
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="ph-1"))
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="ph-2"))
        assert rig.states() == [St.SPOKEN, St.SPEAKING]
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="ph-2"))
        rig.queue.handle_page_event(AvatarEndedSpeaking())  # phrase events seen: ignored

    run(scenario())
    assert rig.states() == [St.SPOKEN, St.SPOKEN]


def test_plain_speaking_events_matched_by_order(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(["First.", "Second."])
        await settle(rig)
        for _ in range(2):
            rig.queue.handle_page_event(AvatarStartedSpeaking())
            rig.queue.handle_page_event(AvatarEndedSpeaking())
        rig.queue.handle_page_event(AvatarEndedSpeaking())  # nothing speaking: ignored

    run(scenario())
    assert rig.states() == [St.SPOKEN, St.SPOKEN]


def test_speaking_before_the_answer_arrives(rig: Rig) -> None:
    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate]
        rig.controller.go_live()
        rig.queue.enqueue("Quick.")
        await until(lambda: rig.states() == [St.SENDING])
        rig.clock.now = 1000.1
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t-quick"))
        assert rig.states() == [St.SPEAKING]
        gate.set_result("t-quick")
        await until(lambda: rig.queue.items[0].acknowledged)
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t-quick"))

    run(scenario())
    record = rig.store.query()[0]
    assert (record.state, record.task_id) == (TaskState.SPOKEN, "t-quick")
    assert record.latency_ms == pytest.approx(100.0)


def test_rate_limited_is_sent_again_after_retry_after(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = [RateLimitedError("Too many requests.", retry_after=2.5), "t1"]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two."])
        await settle(rig)

    run(scenario())
    assert rig.sleeps == [2.5]
    assert [text for _, text in rig.client.calls] == ["One.", "One.", "Two."]
    assert rig.states() == [St.SENT, St.SENT]
    assert [r.task_id for r in rig.store.query()] == ["t1", "t3"]


def test_unclear_outcome_is_not_sent_again(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = [UnclearOutcomeError("The connection dropped.")]
        rig.controller.go_live()
        rig.queue.enqueue(["Maybe.", "Next."])
        await settle(rig)
        assert [text for _, text in rig.client.calls] == ["Maybe.", "Next."]
        # the user retries it: a new item and a new row
        retried = rig.queue.retry(rig.queue.items[0].item_id)
        assert retried[0].row_id is not None
        await settle(rig)

    run(scenario())
    assert [text for _, text in rig.client.calls] == ["Maybe.", "Next.", "Maybe."]
    first, _, again = rig.store.query()
    assert first.state is TaskState.FAILED
    assert first.reason is not None and "may or may not have been spoken" in first.reason
    assert first.sent_at is not None
    assert again.state is TaskState.SENT


def test_not_found_ends_the_session(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = ["t1", NotFoundError("Session gone.", status=404)]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two.", "Three."])
        await until(lambda: rig.controller.remote_ends != [])

    run(scenario())
    assert rig.controller.remote_ends == [(EndReason.SERVER, "Session gone.")]
    assert rig.states() == [St.CANCELLED, St.FAILED, St.WAITING]
    assert rig.queue.items[0].reason == REASON_SESSION_ENDED
    assert rig.queue.items[2].held  # kept for the next session, not sent, not lost
    assert [r.state for r in rig.store.query()] == [TaskState.CANCELLED] * 1 + [
        TaskState.FAILED,
        TaskState.CANCELLED,
    ]


def test_other_errors_fail_with_the_message_and_go_on(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = [ServerError("The service failed (500).", status=500)]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two."])
        await settle(rig)

    run(scenario())
    assert rig.states() == [St.FAILED, St.SENT]
    assert rig.queue.items[0].reason == "The service failed (500)."


def test_hold_waits_visibly_and_sends_when_live(rig: Rig) -> None:
    async def scenario() -> None:
        items = rig.queue.enqueue("Early.")
        assert items[0].held and rig.client.calls == []
        assert rig.store.count() == 0
        rig.controller.go_live("s9")
        await settle(rig)

    run(scenario())
    assert rig.client.calls == [("s9", "Early.")]
    assert rig.store.query()[0].session_id == "s9"


def test_refuse_policy_refuses_with_a_message(rig: Rig) -> None:
    rig.queue.policy = "refuse"
    with pytest.raises(QueueRefusedError, match="No session is live"):
        rig.queue.enqueue("Nobody listens.")
    assert rig.queue.items == ()


def test_empty_text_is_refused(rig: Rig) -> None:
    with pytest.raises(ConfigError, match="empty"):
        rig.queue.enqueue(["Fine.", "   \n"])
    assert rig.queue.items == ()


def test_remove_and_reorder_waiting_items(rig: Rig) -> None:
    a, b, c = rig.queue.enqueue(["A.", "B.", "C."])
    assert rig.queue.move(c.item_id, -1)
    assert rig.queue.move(c.item_id, -5)
    assert not rig.queue.move(c.item_id, -1)  # already first
    assert [i.text for i in rig.queue.items] == ["C.", "A.", "B."]
    assert rig.queue.remove(a.item_id)
    assert [i.text for i in rig.queue.items] == ["C.", "B."]
    assert any(ch.kind is ChangeKind.REMOVED for ch in rig.changes)

    async def scenario() -> None:
        rig.controller.go_live()
        await settle(rig)

    run(scenario())
    assert [text for _, text in rig.client.calls] == ["C.", "B."]
    assert not rig.queue.remove(b.item_id)  # sent: no longer editable


def test_stop_cancels_and_pauses_what_was_not_sent(rig: Rig) -> None:
    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = ["t1", "t2", gate]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two.", "Three.", "Four."])
        await until(lambda: len(rig.client.calls) == 3)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.stop()
        assert rig.stage.cancels == 1
        assert rig.states() == [St.CANCELLED, St.CANCELLED, St.SENDING, St.WAITING]
        gate.set_result("t3")  # reached the service after the cancel: cancelled again
        await until(lambda: rig.states()[2] is St.CANCELLED)
        assert rig.stage.cancels == 2
        # a late event for the stopped phrase does not bring it back
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t1"))
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t2"))
        assert rig.queue.paused and len(rig.client.calls) == 3
        rig.queue.resume()
        await settle(rig)

    run(scenario())
    assert rig.states() == [St.CANCELLED, St.CANCELLED, St.CANCELLED, St.SENT]
    assert [item.reason for item in rig.queue.items[:3]] == [REASON_STOPPED] * 3
    assert [r.state for r in rig.store.query()] == [TaskState.CANCELLED] * 3 + [TaskState.SENT]
    assert rig.store.query()[0].ended_at is not None


def test_speak_now_cancels_everything_and_goes_first(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(["Old one."])
        await settle(rig)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.stop()  # paused, so the next one waits
        rig.queue.enqueue(["Old two."])
        await rig.queue.speak_now(["Urgent!", "Really."])
        await settle(rig)

    run(scenario())
    texts = [(i.text, i.state, i.reason) for i in rig.queue.items]
    assert texts == [
        ("Old one.", St.CANCELLED, REASON_STOPPED),
        ("Old two.", St.CANCELLED, REASON_SPEAK_NOW),
        ("Urgent!", St.SENT, None),
        ("Really.", St.SENT, None),
    ]
    assert [text for _, text in rig.client.calls] == ["Old one.", "Urgent!", "Really."]
    assert not rig.queue.paused


def test_voice_change_clears_the_service_queue_and_new_rows_carry_it(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two."])
        await settle(rig)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.change_voice("v-new")
        rig.queue.enqueue("Three.")
        await settle(rig)

    run(scenario())
    assert rig.stage.voices == ["v-new"]
    assert rig.states() == [St.SPEAKING, St.CANCELLED, St.SENT]
    assert rig.queue.items[1].reason == REASON_VOICE
    assert [r.voice_id for r in rig.store.query()] == ["v-old", "v-old", "v-new"]
    assert rig.queue.voice_id == "v-new"


def test_voice_change_error_keeps_the_old_voice(rig: Rig) -> None:
    rig.stage.voice_error = InvalidRequestError(
        "Could not change the voice: Unknown voice id 'nope'",
        status=400,
        detail="Unknown voice id 'nope'",
    )

    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue("One.")
        await settle(rig)
        with pytest.raises(InvalidRequestError, match="Unknown voice id"):
            await rig.queue.change_voice("nope")
        rig.queue.enqueue("Two.")
        await settle(rig)

    run(scenario())
    assert rig.states() == [St.SENT, St.SENT]
    assert rig.queue.voice_id == "v-old"
    assert [r.voice_id for r in rig.store.query()] == ["v-old", "v-old"]


def test_voice_change_needs_a_live_session(rig: Rig) -> None:
    with pytest.raises(NotLiveError):
        run(rig.queue.change_voice("v-new"))


def test_session_end_cancels_what_was_not_spoken(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two."])
        await settle(rig)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        rig.controller.end()
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t1"))  # too late

    run(scenario())
    assert rig.states() == [St.CANCELLED, St.CANCELLED]
    assert {i.reason for i in rig.queue.items} == {REASON_SESSION_ENDED}
    assert [r.state for r in rig.store.query()] == [TaskState.CANCELLED] * 2


def test_every_change_is_announced(rig: Rig) -> None:
    rows: list[tuple[int, bool]] = []
    rig.queue.subscribe_rows(lambda row_id, new: rows.append((row_id, new)))

    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue("One.")
        await settle(rig)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.shutdown()

    run(scenario())
    states = [ch.item.state for ch in rig.changes if ch.item is not None]
    assert states == [St.WAITING, St.SENDING, St.SENT, St.SPEAKING, St.SPOKEN]
    row_id = rig.store.query()[0].row_id
    # added, sent, acknowledged, speaking, spoken
    assert rows == [(row_id, True)] + [(row_id, False)] * 4


def test_a_cut_phrase_ending_before_cancel_all_answers_is_cancelled(rig: Rig) -> None:
    rig.stage.during_cancel = lambda: rig.queue.handle_page_event(
        AvatarEndedSpeakingPhrase(phrase_id="t1")
    )

    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue("Cut me off.")
        await settle(rig)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.stop()

    run(scenario())
    record = rig.store.query()[0]
    assert (record.state, record.reason) == (TaskState.CANCELLED, REASON_STOPPED)
    assert record.duration_s is not None
