"""Reconnect that keeps the show going: the carry-over rule and the task log's links."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import FakeClient, FakeController, FakeStage, until

from avaturn_desktop.core.events import AvatarEndedSpeakingPhrase, AvatarStartedSpeakingPhrase
from avaturn_desktop.core.queue import REASON_SESSION_ENDED, REASON_SESSION_GONE, ItemState
from avaturn_desktop.core.tasks import TaskRoute, TaskState
from avaturn_desktop.services.resume import (
    REASON_CARRIED,
    Carry,
    plan_resume,
    resumable_rows,
    texts_and_links,
)
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import _MIGRATIONS, SCHEMA_VERSION, TaskLogStore

St = ItemState
T = TaskState


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskLogStore]:
    with TaskLogStore(tmp_path / "log.sqlite3") as s:
        yield s


# -- the rule, on the queue's real entries ------------------------------------------------------


def test_plan_on_a_live_queue_cut_line_first_then_sent_then_in_flight_then_waiting(
    store: TaskLogStore,
) -> None:
    """Six lines in every state a session can die in: the plan is what the next one says."""

    async def scenario() -> tuple[list[Carry], dict[int, str]]:
        client, controller = FakeClient(), FakeController()
        in_flight: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        client.script = ["t1", "t2", "t3", "t4", in_flight]
        queue = SpeechQueue(client, store, controller, stage=FakeStage(), lookahead=None)
        controller.go_live()
        items = queue.enqueue(["One.", "Two.", "Three.", "Four.", "Five.", "Six."])
        await until(lambda: len(client.calls) == 5)  # "Five." is on its way, "Six." waits
        queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t1"))
        queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t2"))
        assert [i.state for i in queue.items] == [
            St.SPOKEN,
            St.SPEAKING,
            St.SENT,
            St.SENT,
            St.SENDING,
            St.WAITING,
        ]
        plan = plan_resume(queue._entries)
        in_flight.set_result("t5")
        await queue.shutdown()
        return plan, {i.item_id: i.text for i in items}

    plan, texts = asyncio.run(scenario())
    assert [texts[c.item_id] for c in plan] == ["Two.", "Three.", "Four.", "Five.", "Six."]
    assert [c.was for c in plan] == [St.SPEAKING, St.SENT, St.SENT, St.SENDING, St.WAITING]
    assert [c.cut for c in plan] == [True, False, False, False, False]
    assert [c.in_flight for c in plan] == [False, False, False, True, False]
    assert all(c.row_id is not None for c in plan)  # every line continues its own row


def test_plan_leaves_out_what_a_stop_is_cutting_off(store: TaskLogStore) -> None:
    """The session dies while a Stop waits for the page: silence was asked for, nothing is
    carried but the lines the Stop keeps (unsent)."""

    async def scenario() -> tuple[list[Carry], int]:
        client, controller, stage = FakeClient(), FakeController(), FakeStage()
        queue = SpeechQueue(client, store, controller, stage=stage, lookahead=None)
        controller.go_live()
        queue.enqueue(["One.", "Two."])
        await until(lambda: len(client.calls) == 2)
        await until(lambda: all(i.state is St.SENT for i in queue.items))
        queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        (kept,) = queue.enqueue(["Three."])  # not sent yet: the Stop pauses it
        plans: list[list[Carry]] = []
        stage.during_cancel = lambda: plans.append(plan_resume(queue._entries))
        await queue.stop()
        await queue.shutdown()
        return plans[0], kept.item_id

    plan, kept = asyncio.run(scenario())
    # "One." (speaking) and "Two." (sent) are being cut off by the Stop
    assert [(c.item_id, c.was) for c in plan] == [(kept, St.WAITING)]


@dataclass
class Entry:
    item_id: int
    state: ItemState
    row_id: int | None = None
    send_seq: int = 0
    stopping: str | None = None
    cancel_on_ack: str | None = None


def test_plan_orders_by_send_order_and_skips_finished_and_held_keeps_no_row() -> None:
    entries = [
        Entry(1, St.SPOKEN, 1, 1),
        Entry(2, St.SENT, 2, 4),  # re-sent after a 429: later than 3
        Entry(3, St.SPEAKING, 3, 3),
        Entry(4, St.CANCELLED, 4, 2),
        Entry(5, St.FAILED, 5, 5),
        Entry(6, St.WAITING, 6),
        Entry(7, St.WAITING, None),  # held: no row yet
        Entry(8, St.SENDING, 8, 6, cancel_on_ack="stopped"),
    ]
    assert plan_resume(entries) == [
        Carry(3, 3, St.SPEAKING),
        Carry(2, 2, St.SENT),
        Carry(6, 6, St.WAITING),
        Carry(7, None, St.WAITING),
    ]


# -- the task log's link -------------------------------------------------------------------


def add(store: TaskLogStore, text: str, session: str = "s1", **kw: object) -> int:
    return store.add(
        session_id=session, text=text, voice_id="v", route=TaskRoute.REST, at=1.0, **kw
    ).row_id  # type: ignore[arg-type]


def cut(store: TaskLogStore, row_id: int, reason: str = REASON_CARRIED) -> None:
    store.mark_sent(row_id, at=2.0)
    store.mark_speaking(row_id, at=3.0)
    store.mark_cancelled(row_id, reason, at=4.0)


def test_a_line_carried_across_three_sessions_is_one_chain(store: TaskLogStore) -> None:
    first = add(store, "Welcome.")
    cut(store, first)
    second = add(store, "Welcome.", "s2", resumed_from=first)
    store.mark_failed(second, "the session has ended on the service")
    third = add(store, "Welcome.", "s3", resumed_from=second)
    other = add(store, "Other.", "s3")
    assert store.get(third).resumed_from == second and store.get(other).resumed_from is None
    assert store.successor(first) == store.get(second)
    assert store.successor(third) is None
    for row in (first, second, third):
        assert [r.row_id for r in store.resume_chain(row)] == [first, second, third]
    assert [r.row_id for r in store.resume_chain(other)] == [other]
    with pytest.raises(KeyError):
        store.resume_chain(999)


@pytest.mark.parametrize(
    ("make_old", "message"),
    [
        (lambda s, r: None, "is queued"),
        (lambda s, r: s.mark_sent(r), "is sent"),
        (lambda s, r: (s.mark_sent(r), s.mark_speaking(r)), "is speaking"),
        (lambda s, r: (s.mark_sent(r), s.mark_spoken(r)), "is spoken"),
    ],
    ids=["queued", "sent", "speaking", "spoken"],
)
def test_only_a_line_that_ended_unsaid_can_be_continued(
    store: TaskLogStore, make_old: Callable[[TaskLogStore, int], object], message: str
) -> None:
    old = add(store, "Hello.")
    make_old(store, old)
    with pytest.raises(ValueError, match=message):
        add(store, "Hello.", "s2", resumed_from=old)
    assert store.count() == 1


def test_a_line_is_continued_once_even_in_one_batch(store: TaskLogStore) -> None:
    old = add(store, "Hello.")
    cut(store, old)
    before = store.count()
    with pytest.raises(ValueError, match="already said again"):
        store.add_many(
            ["Hello.", "Hello."],
            session_id="s2",
            voice_id=None,
            route=TaskRoute.REST,
            resumed_from=[old, old],
        )
    assert store.count() == before  # all or nothing
    add(store, "Hello.", "s2", resumed_from=old)
    with pytest.raises(ValueError, match="already said again"):
        add(store, "Hello.", "s3", resumed_from=old)


def test_the_database_itself_refuses_a_second_continuation(store: TaskLogStore) -> None:
    """The unique index holds even for a writer that skips the store's checks."""
    old = add(store, "Hello.")
    cut(store, old)
    add(store, "Hello.", "s2", resumed_from=old)
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute(
            "INSERT INTO tasks (session_id, text, text_fold, route, state, created_at,"
            " resumed_from) VALUES ('s3', 'x', 'x', 'rest', 'queued', 1, ?)",
            (old,),
        )


def test_unknown_row_and_mismatched_links(store: TaskLogStore) -> None:
    with pytest.raises(KeyError):
        add(store, "Hello.", resumed_from=42)
    with pytest.raises(ValueError, match="2 texts but 1"):
        store.add_many(
            ["a", "b"], session_id="s", voice_id=None, route=TaskRoute.REST, resumed_from=[None]
        )


def test_an_old_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    raw = sqlite3.connect(path)
    raw.executescript(_MIGRATIONS[1])
    raw.execute(
        "INSERT INTO tasks (session_id, text, text_fold, voice_id, route, state, reason,"
        " created_at, sent_at, ended_at) VALUES"
        " ('s1', 'Old line.', 'old line.', 'v', 'rest', 'cancelled', 'session ended', 1, 2, 3)"
    )
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with TaskLogStore(path) as store:
        (old,) = store.query()
        assert (old.text, old.state, old.resumed_from) == ("Old line.", T.CANCELLED, None)
        new = add(store, "Old line.", "s2", resumed_from=old.row_id)
        assert store.resume_chain(new)[0] == old
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()
    TaskLogStore(path).close()  # opening it again migrates nothing


# -- one click outside kiosk mode -------------------------------------------------------------


def test_resumable_rows_after_a_session_died_mid_line(store: TaskLogStore) -> None:
    """What the queue does today when a session dies, read back: the cut line and the lines
    the service had taken are offered in send order, spoken and unsent lines are not."""

    async def scenario() -> None:
        client, controller = FakeClient(), FakeController()
        client.script = ["t1", "t2", "t3", "t4"]
        queue = SpeechQueue(client, store, controller, stage=FakeStage(), lookahead=None)
        controller.go_live("s1")
        queue.enqueue(["One.", "Two.", "Three.", "Four."])
        await until(lambda: all(i.state is St.SENT for i in queue.items))
        queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t1"))
        queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t2"))
        controller.end()
        await queue.shutdown()

    asyncio.run(scenario())
    offered = resumable_rows(store, "s1")
    assert [r.text for r in offered] == ["Two.", "Three.", "Four."]
    assert {r.reason for r in offered} == {REASON_SESSION_ENDED}
    texts, links = texts_and_links(offered)
    store.add_many(texts, session_id="s2", voice_id=None, route=TaskRoute.REST, resumed_from=links)
    assert resumable_rows(store, "s1") == []  # offered once only


def test_resumable_rows_follow_send_order_not_row_order(store: TaskLogStore) -> None:
    late = add(store, "Queued first, sent second.")
    early = add(store, "Spoken now: sent first.")
    gone = add(store, "Refused: the session was gone.")
    unclear = add(store, "Unclear.")
    user = add(store, "Stopped by the user.")
    for row, at in ((early, 5.0), (late, 6.0), (unclear, 7.0), (user, 8.0)):
        store.mark_sent(row, at=at)
    store.mark_cancelled(early, REASON_SESSION_ENDED)
    store.mark_cancelled(late, REASON_SESSION_ENDED)
    store.mark_failed(gone, REASON_SESSION_GONE)
    store.mark_failed(unclear, "may or may not have been spoken (timeout)")
    store.mark_cancelled(user, "stopped")
    assert [r.row_id for r in resumable_rows(store, "s1")] == [early, late, gone]
    assert resumable_rows(store, "other") == []
