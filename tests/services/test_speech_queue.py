"""The speech queue: order, states and the task log under failures, with small typed fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClient, FakeController, FakeStage, until

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
from avaturn_desktop.core.queue import StopResult, StopUnconfirmedError, UnclearRetryError
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


async def settle(rig: Rig) -> None:
    await until(lambda: not any(s in (St.SENDING, St.WAITING) for s in rig.states()))


LONG = ["One is the first line.", "Two is the second line.", "Three is the third line."]


def test_sends_in_order_one_at_a_time_and_logs_every_state(rig: Rig) -> None:
    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate]
        rig.controller.go_live()
        rig.queue.enqueue(LONG)
        await until(lambda: len(rig.client.calls) == 1)
        # one in flight: the others wait, but they are logged already
        assert rig.states() == [St.SENDING, St.WAITING, St.WAITING]
        assert [r.state for r in rig.store.query()] == [TaskState.QUEUED] * 3
        rig.clock.now = 1001.0
        gate.set_result("t-one")
        # the look-ahead: the line to speak and the next are on the service, no more
        await until(lambda: rig.states() == [St.SENT, St.SENT, St.WAITING])
        assert len(rig.client.calls) == 2
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t-one"))
        await asyncio.sleep(0)
        assert len(rig.client.calls) == 2  # speaking still counts
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t-one"))
        await settle(rig)

    run(scenario())
    assert [text for _, text in rig.client.calls] == LONG
    assert rig.states() == [St.SPOKEN, St.SENT, St.SENT]
    first = rig.store.query()[0]
    assert (first.state, first.task_id, first.sent_at, first.acked_at) == (
        TaskState.SPOKEN,
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
        # not logged as speaking before the service has it: its answer decides
        assert rig.states() == [St.SENDING]
        rig.clock.now = 1000.2
        gate.set_result("t-quick")
        await until(lambda: rig.queue.items[0].acknowledged)
        assert rig.states() == [St.SPEAKING]
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
        # it may have been spoken: Retry asks first, then sends it when confirmed
        maybe = rig.queue.items[0]
        assert maybe.unclear and maybe.ever_sent
        with pytest.raises(UnclearRetryError, match="may already have been spoken"):
            rig.queue.retry(maybe.item_id)
        assert len(rig.queue.items) == 2
        retried = rig.queue.retry(maybe.item_id, confirm=True)
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
        rig.client.script = ["t1", gate]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two.", "Three."])
        await until(lambda: len(rig.client.calls) == 2)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.stop()
        assert rig.stage.cancels == 1
        assert rig.states() == [St.CANCELLED, St.SENDING, St.WAITING]
        gate.set_result("t2")  # reached the service after the cancel: cancelled again
        await until(lambda: rig.states()[1] is St.CANCELLED and rig.stage.cancels == 2)
        assert rig.client.cancels == ["token-s1"] * 2  # the service's own cancel, each time
        # a late event for the stopped phrase does not bring it back
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t1"))
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t2"))
        assert rig.queue.paused and len(rig.client.calls) == 2
        rig.queue.resume()
        await settle(rig)

    run(scenario())
    assert rig.states() == [St.CANCELLED, St.CANCELLED, St.SENT]
    assert [item.reason for item in rig.queue.items[:2]] == [REASON_STOPPED] * 2
    assert [r.state for r in rig.store.query()] == [TaskState.CANCELLED] * 2 + [TaskState.SENT]
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


# -- one owner of "this item may be sent" ------------------------------------------------------


def ended_unsent_while_in_flight(rig: Rig) -> list[str]:
    """Watch for the window behind a doubled line: an item seen ending unsent while another
    item's request is still on its way (a door that hands unsent lines back, as the composer
    does, would then hand back the one in flight too)."""
    seen: list[str] = []

    def watch(change: QueueChange) -> None:
        item = change.item
        if item is None or not item.state.finished or item.ever_sent or item.acknowledged:
            return
        flying = [i.text for i in rig.queue.items if i.state is St.SENDING]
        if flying:
            seen.append(f"{item.text} ended while {flying} in flight")

    rig.queue.subscribe(watch)
    return seen


@pytest.mark.parametrize(
    "answer",
    [
        "t-late",
        UnclearOutcomeError("The connection broke."),
        RateLimitedError("Busy.", retry_after=1),
        ServerError("Refused.", status=400),
    ],
    ids=["acknowledged", "unclear", "refused-429", "refused-4xx"],
)
def test_speak_now_over_a_line_in_flight_ends_the_rest_only_once_it_is_answered(
    rig: Rig, answer: str | Exception
) -> None:
    """The window of the doubled line: Speak now lands while line 2 of a batch is on its way.
    Lines 3 and 4 end as replaced only after line 2's answer, and line 2 is never sent again."""
    window = ended_unsent_while_in_flight(rig)

    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = ["t1", gate]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two.", "Three.", "Four."])
        await until(lambda: rig.states()[1] is St.SENDING)
        await rig.queue.speak_now("Now!")
        # replaced, but not ended while "Two." may still arrive
        by_text = {i.text: i for i in rig.queue.items}
        assert by_text["Two."].state is St.SENDING
        assert [(by_text[t].state, by_text[t].reason) for t in ("Three.", "Four.")] == [
            (St.WAITING, REASON_SPEAK_NOW)
        ] * 2
        if isinstance(answer, Exception):
            gate.set_exception(answer)
        else:
            gate.set_result(answer)
        await settle(rig)

    run(scenario())
    assert window == []
    texts = [text for _, text in rig.client.calls]
    assert texts == ["One.", "Two.", "Now!"]  # "Two." once; "Three."/"Four." never
    by_text = {i.text: i for i in rig.queue.items}
    assert by_text["Two."].state in (St.CANCELLED, St.FAILED)
    assert [by_text[t].state for t in ("Three.", "Four.")] == [St.CANCELLED] * 2
    assert by_text["Now!"].state is St.SENT


def test_stop_resume_and_a_new_session_never_send_a_line_that_left(rig: Rig) -> None:
    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate]
        rig.controller.go_live("s1")
        rig.queue.enqueue(["Flying.", "Next."])
        await until(lambda: rig.states()[0] is St.SENDING)
        await rig.queue.stop()
        rig.queue.resume()
        rig.controller.end()
        rig.controller.go_live("s2")
        rig.queue.resume()
        await asyncio.sleep(0)
        assert [text for _, text in rig.client.calls] == ["Flying."]  # nothing else in flight
        gate.set_result("t-flying")
        await settle(rig)

    run(scenario())
    assert [text for _, text in rig.client.calls] == ["Flying.", "Next."]
    assert [(sid, text) for sid, text in rig.client.calls][1] == ("s2", "Next.")
    assert rig.queue.items[0].state is St.CANCELLED and rig.queue.items[0].ever_sent


def test_a_line_refused_with_429_never_left_and_goes_again(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = [RateLimitedError("Busy.", retry_after=0.5), "t1"]
        rig.controller.go_live()
        (item,) = rig.queue.enqueue("Again.")
        await until(lambda: rig.queue.item(item.item_id) is not None and rig.client.calls)
        await settle(rig)

    run(scenario())
    assert [text for _, text in rig.client.calls] == ["Again.", "Again."]
    assert rig.queue.items[0].ever_sent and not rig.queue.items[0].unclear


# -- Retry-After: clamped, visible, skippable ----------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "waited"),
    [
        (2.5, 2.5),
        (None, 1.0),
        (-3.0, 0.0),
        (1e9, 30.0),
        (float("inf"), 30.0),
        (float("nan"), 1.0),
        (3600.0, 30.0),
    ],
)
def test_any_wait_after_429_is_clamped(rig: Rig, retry_after: float | None, waited: float) -> None:
    """Whatever a client passes on (the real one clamps already): at most the ceiling."""

    async def scenario() -> None:
        rig.client.script = [RateLimitedError("Busy.", retry_after=retry_after), "t1"]
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two."])
        await settle(rig)

    run(scenario())
    assert rig.sleeps == [waited]
    assert rig.states() == [St.SENT, St.SENT]
    shown = [c.item.retry_at for c in rig.changes if c.item and c.item.retry_at is not None]
    assert all(at - 1000.0 <= 30.0 for at in shown)


def test_the_wait_says_what_the_service_asked_for(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = [RateLimitedError("Busy.", retry_after=30.0, advised=3600.0), "t1"]
        rig.controller.go_live()
        rig.queue.enqueue("One.")
        await settle(rig)

    run(scenario())
    reasons = [c.item.reason for c in rig.changes if c.item and c.item.retry_at is not None]
    assert reasons == ["the service is busy (it asked for 3600 s); sending again in 30 s"]


@dataclass
class HeldSleep:
    """A sleep that only ends when told (a long wait, for real)."""

    started: list[float]
    release: asyncio.Event | None = None

    async def __call__(self, seconds: float) -> None:
        self.started.append(seconds)
        if self.release is None:
            self.release = asyncio.Event()
        await self.release.wait()


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Rig, HeldSleep]]:
    store = TaskLogStore(tmp_path / "held.sqlite3")
    client, stage, controller, clock = FakeClient(), FakeStage(), FakeController(), Clock()
    sleep = HeldSleep([])
    queue = SpeechQueue(client, store, controller, stage=stage, clock=clock, sleep=sleep)
    changes: list[QueueChange] = []
    queue.subscribe(changes.append)
    yield Rig(queue, client, stage, controller, store, clock, sleep.started, changes), sleep
    store.close()


@pytest.mark.parametrize("how", ["skip", "remove", "resume", "stop-resume", "speak-now"])
def test_a_long_wait_can_be_cut_short(held: tuple[Rig, HeldSleep], how: str) -> None:
    rig, sleep = held

    async def scenario() -> None:
        rig.client.script = [RateLimitedError("Busy.", retry_after=30.0)]
        rig.controller.go_live()
        first, _second = rig.queue.enqueue(["Busy one.", "Behind it."])
        await until(lambda: rig.queue.items[0].retry_at is not None and sleep.started != [])
        assert rig.queue.items[0].retry_at == 1030.0  # visible: when it goes again
        if how == "skip":
            assert rig.queue.skip_wait(first.item_id)
            assert not rig.queue.skip_wait(first.item_id)  # no wait left
        elif how == "remove":
            assert rig.queue.remove(first.item_id)
        elif how == "resume":
            rig.queue.resume()
        elif how == "stop-resume":
            await rig.queue.stop()
            rig.queue.resume()
        else:
            await rig.queue.speak_now("Instead.")
        await settle(rig)

    run(scenario())
    sent = [text for _, text in rig.client.calls]
    expected = {
        "skip": ["Busy one.", "Busy one.", "Behind it."],
        "remove": ["Busy one.", "Behind it."],
        "resume": ["Busy one.", "Busy one.", "Behind it."],
        "stop-resume": ["Busy one.", "Busy one.", "Behind it."],
        "speak-now": ["Busy one.", "Instead."],
    }[how]
    assert sent == expected
    assert sleep.release is None or not sleep.release.is_set()  # nobody waited it out


# -- the sender never ends silently ---------------------------------------------------------------


def test_an_unexpected_error_in_a_send_is_shown_and_the_sender_goes_on(rig: Rig) -> None:
    async def scenario() -> None:
        rig.client.script = [RuntimeError("bug in a client"), "t2"]
        rig.controller.go_live()
        rig.queue.enqueue(["Broken.", "Fine."])
        await settle(rig)

    run(scenario())
    assert rig.states() == [St.FAILED, St.SENT]
    first = rig.queue.items[0]
    assert first.unclear and "may or may not have been spoken" in (first.reason or "")
    errors = [c for c in rig.changes if c.kind is ChangeKind.ERROR]
    assert errors and "RuntimeError" in (errors[0].message or "")


def test_a_broken_timer_does_not_stall_the_queue(tmp_path: Path) -> None:
    """qasync turns asyncio sleeps into QTimers; a wait too long for one raised OverflowError
    and killed the sender. Any error of the wait itself: reported, and the line goes now."""
    store = TaskLogStore(tmp_path / "log.sqlite3")
    client, stage, controller = FakeClient(), FakeStage(), FakeController()

    async def broken_sleep(seconds: float) -> None:
        raise OverflowError("timer interval out of range")

    queue = SpeechQueue(client, store, controller, stage=stage, sleep=broken_sleep)
    changes: list[QueueChange] = []
    queue.subscribe(changes.append)

    async def scenario() -> None:
        client.script = [RateLimitedError("Busy.", retry_after=5.0), "t1"]
        controller.go_live()
        queue.enqueue(["One.", "Two."])
        await until(lambda: [i.state for i in queue.items] == [St.SENT, St.SENT])

    run(scenario())
    store.close()
    assert [text for _, text in client.calls] == ["One.", "One.", "Two."]
    assert any(c.kind is ChangeKind.ERROR and "OverflowError" in (c.message or "") for c in changes)


def test_a_failing_log_write_mid_send_is_shown_and_the_sender_goes_on(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = rig.store.mark_acked
    calls = {"n": 0}

    def flaky(row_id: int, task_id: str, *, at: float | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real(row_id, task_id, at=at)

    monkeypatch.setattr(rig.store, "mark_acked", flaky)

    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(["One.", "Two."])
        await settle(rig)

    run(scenario())
    assert rig.states() == [St.FAILED, St.SENT]
    assert rig.queue.items[0].unclear  # it left: never sent again
    assert [text for _, text in rig.client.calls] == ["One.", "Two."]
    assert any(c.kind is ChangeKind.ERROR for c in rig.changes)


# -- Stop gets through ---------------------------------------------------------------------------


def test_stop_tries_both_paths_and_retries_the_page(rig: Rig) -> None:
    rig.stage.cancel_errors = [ServerError("503 from the SDK", status=503)] * 2

    async def scenario() -> StopResult:
        rig.controller.go_live()
        rig.queue.enqueue("Talking.")
        await settle(rig)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        return await rig.queue.stop()

    result = run(scenario())
    assert result.confirmed and set(result.confirmed_by) == {"page", "service"}
    assert rig.stage.cancels == 3 and rig.client.cancels == ["token-s1"]
    assert rig.sleeps == [0.2, 0.2]
    assert rig.states() == [St.CANCELLED]


@pytest.mark.parametrize("page_fails", [True, False])
def test_stop_is_confirmed_by_either_path(rig: Rig, page_fails: bool) -> None:
    if page_fails:
        rig.stage.cancel_errors = [ServerError("503", status=503)] * 3
    else:
        rig.client.cancel_errors = [ServerError("503", status=503)]

    async def scenario() -> StopResult:
        rig.controller.go_live()
        rig.queue.enqueue("Talking.")
        await settle(rig)
        return await rig.queue.stop()

    result = run(scenario())
    assert result.confirmed and not result.may_still_be_talking
    assert result.confirmed_by == (("service",) if page_fails else ("page",))
    assert len(result.problems) == 1


def test_stop_that_gets_through_nowhere_says_the_avatar_may_still_talk(rig: Rig) -> None:
    rig.stage.cancel_errors = [ServerError("The page's SDK failed (503).", status=503)] * 3
    rig.client.cancel_errors = [ServerError("The service failed (503).", status=503)]

    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(["Talking.", "Later."])
        await until(lambda: rig.states()[0] is St.SENT)
        await rig.queue.stop()

    with pytest.raises(StopUnconfirmedError) as info:
        run(scenario())
    err = info.value
    assert err.result.may_still_be_talking
    assert "may still be talking" in err.user_message and "Press Stop again" in err.user_message
    assert "page's SDK failed" in err.user_message and "service failed" in err.user_message
    assert rig.queue.paused  # nothing more is sent
    assert rig.queue.items[0].state is St.SENT  # not claimed cancelled: it may still play


def test_speak_now_whose_cancel_fails_changes_nothing(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        await rig.queue.stop()
        rig.queue.enqueue("Waiting.")
        rig.stage.cancel_errors = [ServerError("503", status=503)] * 3
        rig.client.cancel_errors = [ServerError("503", status=503)]
        with pytest.raises(StopUnconfirmedError):
            await rig.queue.speak_now("Urgent.")

    run(scenario())
    assert [(i.text, i.state) for i in rig.queue.items] == [("Waiting.", St.WAITING)]


@pytest.mark.parametrize("ids", ["task", "own"])
def test_a_phrase_that_ends_before_the_answer_is_spoken_once_acknowledged(
    rig: Rig, ids: str
) -> None:
    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate]
        rig.controller.go_live()
        rig.queue.enqueue("Quick.")
        await until(lambda: rig.states() == [St.SENDING])
        phrase = "t-q" if ids == "task" else "ph-1"
        rig.clock.now = 1000.1
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id=phrase))
        rig.clock.now = 1000.5
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id=phrase))
        assert rig.states() == [St.SENDING]
        rig.clock.now = 1000.7
        gate.set_result("t-q")
        await settle(rig)

    run(scenario())
    (row,) = rig.store.query()
    assert row.state is TaskState.SPOKEN
    assert (row.started_at, row.ended_at) == (1000.1, 1000.5)


@pytest.mark.parametrize(
    "answer",
    [
        RateLimitedError("Busy.", retry_after=0),
        UnclearOutcomeError("Reset."),
        NotFoundError("Gone.", status=404),
        InvalidRequestError("Bad.", status=400),
    ],
    ids=["429", "unclear", "404", "400"],
)
def test_a_phrase_meanwhile_is_not_the_line_in_flight_if_the_service_did_not_take_it(
    rig: Rig, answer: Exception
) -> None:
    """With phrase ids unrelated to task ids, a stray phrase (one the app no longer counts)
    used to be pinned on the line in flight; a line whose POST then failed was logged as
    spoken though the service never had it."""

    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate, "t2"]
        rig.controller.go_live()
        rig.queue.enqueue("Never taken.")
        await until(lambda: rig.states() == [St.SENDING])
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="ph-stray"))
        rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="ph-stray"))
        gate.set_exception(answer)
        await until(lambda: rig.queue.items[0].state is not St.SENDING)
        rig.controller.end()

    run(scenario())
    first = rig.store.query()[0]
    assert first.state is not TaskState.SPOKEN and first.started_at is None


def test_refused_while_its_session_ended_it_is_not_sent_to_the_next(rig: Rig) -> None:
    """Refuse policy: a line whose session ended while its POST was refused (429) ends
    "session ended before it was sent"; it is not sent to the next session."""
    rig.queue.policy = "refuse"

    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate]
        rig.controller.go_live("s1")
        rig.queue.enqueue(["In flight.", "Waiting."])
        await until(lambda: rig.states()[0] is St.SENDING)
        rig.controller.end()
        assert rig.states() == [St.SENDING, St.WAITING]  # not ended while one is in flight
        gate.set_exception(RateLimitedError("Busy.", retry_after=1))
        await until(lambda: all(s is St.CANCELLED for s in rig.states()))
        rig.controller.go_live("s2")
        await asyncio.sleep(0)

    run(scenario())
    assert rig.client.calls == [("s1", "In flight.")]
    assert {i.reason for i in rig.queue.items} == {"session ended before it was sent"}


def test_nothing_new_leaves_while_speak_nows_cancel_is_on_its_way(rig: Rig) -> None:
    """A line sent while the cancel-all travels could land after it and be spoken although
    the log calls it cancelled: sending waits for the cancel."""

    async def scenario() -> None:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        rig.client.script = [gate]
        rig.controller.go_live()
        rig.queue.enqueue(["In flight.", "Waiting."])
        await until(lambda: rig.states()[0] is St.SENDING)
        rig.stage.during_cancel = lambda: gate.set_result("t-a")  # answered mid-cancel
        await rig.queue.speak_now("Now!")
        await settle(rig)

    run(scenario())
    assert [text for _, text in rig.client.calls] == ["In flight.", "Now!"]
    by_text = {i.text: (i.state, i.reason) for i in rig.queue.items}
    assert by_text["Waiting."] == (St.CANCELLED, REASON_SPEAK_NOW)
    assert by_text["In flight."] == (St.CANCELLED, REASON_SPEAK_NOW)
