"""The speech queue's look-ahead (only the line speaking and the next are on the service) and
its reconnect carry-over (a dead session's unfinished lines said once more in the next one)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClient, FakeController, FakeStage, until

from avaturn_desktop.core.errors import NotFoundError, UnclearOutcomeError
from avaturn_desktop.core.events import AvatarEndedSpeakingPhrase, AvatarStartedSpeakingPhrase
from avaturn_desktop.core.queue import (
    REASON_CARRIED,
    REASON_REMOVED,
    REASON_SESSION_ENDED,
    REASON_STOPPED,
    ItemState,
)
from avaturn_desktop.core.tasks import TaskState
from avaturn_desktop.services import speech_queue
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore

St = ItemState
LINES = [f"Line {n} is long enough to need its time." for n in range(1, 7)]


@dataclass
class Rig:
    queue: SpeechQueue
    client: FakeClient
    stage: FakeStage
    controller: FakeController
    store: TaskLogStore

    def sent(self) -> list[str]:
        return [text for _, text in self.client.calls]

    def sent_to(self, session_id: str) -> list[str]:
        return [text for sid, text in self.client.calls if sid == session_id]

    def states(self) -> list[ItemState]:
        return [i.state for i in self.queue.items]

    def say(self, task_id: str) -> None:
        """The avatar says the phrase of ``task_id`` to its end."""
        self.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id=task_id))
        self.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id=task_id))


def make(tmp_path: Path, **kw: Any) -> Rig:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    client, stage, controller = FakeClient(), FakeStage(), FakeController()
    queue = SpeechQueue(client, store, controller, stage=stage, **kw)
    return Rig(queue, client, stage, controller, store)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = make(tmp_path)
    yield made
    made.store.close()


@pytest.fixture
def kiosk(tmp_path: Path) -> Iterator[Rig]:
    made = make(tmp_path, carry_over=True)
    yield made
    made.store.close()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def quiet() -> None:
    """Let every ready callback run (nothing more is about to be sent)."""
    for _ in range(50):
        await asyncio.sleep(0)


# -- look-ahead ---------------------------------------------------------------------------


def test_only_the_line_speaking_and_the_next_are_on_the_service(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(LINES[:4])
        await until(lambda: len(rig.client.calls) == 2)
        await quiet()
        assert rig.sent() == LINES[:2]
        assert rig.states() == [St.SENT, St.SENT, St.WAITING, St.WAITING]
        for n in range(1, 5):
            rig.say(f"t{n}")
            await until(lambda n=n: len(rig.client.calls) == min(4, n + 2))
        await quiet()

    run(scenario())
    assert rig.sent() == LINES[:4]
    assert rig.states() == [St.SPOKEN] * 4


def test_a_line_waiting_behind_the_look_ahead_can_be_removed_moved_and_never_leaves(
    rig: Rig,
) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        items = rig.queue.enqueue(LINES[:5])
        await until(lambda: len(rig.client.calls) == 2)
        assert rig.queue.remove(items[3].item_id)  # Line 4, of what waits in the app
        assert rig.queue.move(items[4].item_id, -1)  # Line 5 before Line 3
        for n in range(1, 5):
            rig.say(f"t{n}")
            await quiet()

    run(scenario())
    assert rig.sent() == [LINES[0], LINES[1], LINES[4], LINES[2]]
    assert all(i.text != LINES[3] for i in rig.queue.items)
    removed = [(r.state, r.reason) for r in rig.store.query() if r.text == LINES[3]]
    assert removed == [(TaskState.CANCELLED, REASON_REMOVED)]


def test_stop_keeps_what_waited_behind_the_look_ahead(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(LINES[:4])
        await until(lambda: len(rig.client.calls) == 2)
        await quiet()
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.stop()
        assert rig.states() == [St.CANCELLED, St.CANCELLED, St.WAITING, St.WAITING]
        assert rig.client.cancels == ["token-s1"]  # one cancel covers what the service had
        rig.queue.resume()
        await until(lambda: len(rig.client.calls) == 4)

    run(scenario())
    assert rig.sent() == LINES[:4]
    assert [i.reason for i in rig.queue.items[:2]] == [REASON_STOPPED] * 2


def test_a_lost_end_event_never_stalls_the_queue(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech_queue, "LOOKAHEAD_GRACE_S", 0.05)
    monkeypatch.setattr(speech_queue, "LOOKAHEAD_SLACK", 0.0)

    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(LINES[:3])
        await until(lambda: len(rig.client.calls) == 2)
        # no event ever comes (the page's channel dropped them): a timer lets the next go
        third = asyncio.Event()
        rig.queue.subscribe(lambda _change: len(rig.client.calls) == 3 and third.set())
        await asyncio.wait_for(third.wait(), 5)

    run(scenario())
    assert rig.sent() == LINES[:3]
    # nothing was claimed to be spoken that was not seen spoken
    assert rig.states() == [St.SENT] * 3


def test_without_a_look_ahead_every_line_goes_at_once(tmp_path: Path) -> None:
    made = make(tmp_path, lookahead=None)

    async def scenario() -> None:
        made.controller.go_live()
        made.queue.enqueue(LINES)
        await until(lambda: len(made.client.calls) == 6)

    run(scenario())
    made.store.close()


# -- carry-over (kiosk) --------------------------------------------------------------------


def test_a_session_killed_mid_line_says_the_cut_line_again_then_the_rest_once(
    kiosk: Rig,
) -> None:
    rig = kiosk

    async def scenario() -> None:
        rig.controller.go_live("s1")
        rig.queue.enqueue(LINES)
        await until(lambda: len(rig.client.calls) == 2)
        rig.say("t1")
        await until(lambda: len(rig.client.calls) == 3)
        rig.say("t2")
        await until(lambda: len(rig.client.calls) == 4)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t3"))
        await quiet()
        rig.controller.end("killed")  # Line 3 cut mid-sentence, Line 4 taken, 5 and 6 here
        await quiet()
        assert len(rig.client.calls) == 4
        rig.controller.go_live("s2")
        await until(lambda: len(rig.sent_to("s2")) == 2)
        for n in range(5, 9):
            rig.say(f"t{n}")
            await quiet()

    run(scenario())
    assert rig.sent_to("s1") == LINES[:4]
    assert rig.sent_to("s2") == LINES[2:]
    rows = rig.store.query()
    by_text: dict[str, list[Any]] = {}
    for row in rows:
        by_text.setdefault(row.text, []).append(row)
    spoken = [r.text for r in sorted(rows, key=lambda r: r.row_id) if r.state is TaskState.SPOKEN]
    assert spoken == LINES  # each line to its end exactly once, in order
    for text in (LINES[2], LINES[3]):
        old, new = by_text[text][0], by_text[text][-1]
        assert (old.session_id, old.state, old.reason) == (
            "s1",
            TaskState.CANCELLED,
            REASON_CARRIED,
        )
        assert (new.session_id, new.resumed_from) == ("s2", old.row_id)
    # the lines that waited are linked too: their rows of the dead session ended unsent
    for text in (LINES[4], LINES[5]):
        old, new = by_text[text][0], by_text[text][-1]
        assert old.session_id == "s1" and new.resumed_from == old.row_id
    # the old rows of what was spoken are never continued
    assert all(r.resumed_from not in {by_text[t][0].row_id for t in LINES[:2]} for r in rows)


def test_a_line_on_its_way_when_the_session_dies_is_carried_whatever_the_answer(
    tmp_path: Path,
) -> None:
    for answer in ("t2", NotFoundError("gone", status=404), UnclearOutcomeError("no answer")):
        rig = make(tmp_path / type(answer).__name__, carry_over=True)

        async def scenario(rig: Rig = rig, answer: Any = answer) -> None:
            gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            rig.client.script = ["t1", gate]
            rig.controller.go_live("s1")
            rig.queue.enqueue(LINES[:3])
            await until(lambda: len(rig.client.calls) == 2)
            rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
            rig.controller.end("killed")
            rig.controller.go_live("s2")
            await quiet()
            assert rig.sent_to("s2") == []  # nothing overtakes the line on its way
            if isinstance(answer, Exception):
                gate.set_exception(answer)
            else:
                gate.set_result(answer)
            await until(lambda: len(rig.sent_to("s2")) == 2)
            rig.say("t3")
            rig.say("t4")
            await until(lambda: len(rig.sent_to("s2")) == 3)

        run(scenario())
        assert rig.sent_to("s2") == LINES[:3], answer
        assert not rig.controller.remote_ends  # the session was already over: nothing to end
        rig.store.close()


def test_a_line_a_stop_is_cutting_off_is_not_carried(kiosk: Rig) -> None:
    rig = kiosk

    async def scenario() -> None:
        rig.controller.go_live("s1")
        rig.queue.enqueue(LINES[:3])
        await until(lambda: len(rig.client.calls) == 2)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        # the session dies while the stop's cancel is on its way
        rig.stage.during_cancel = lambda: rig.controller.end("killed")
        await rig.queue.stop()
        rig.controller.go_live("s2")
        rig.queue.resume()
        await until(lambda: len(rig.sent_to("s2")) == 1)
        await quiet()

    run(scenario())
    assert rig.sent_to("s2") == [LINES[2]]


def test_a_404_in_kiosk_mode_holds_the_line_for_the_next_session(kiosk: Rig) -> None:
    rig = kiosk

    async def scenario() -> None:
        rig.client.script = [NotFoundError("The session has ended.", status=404)]
        rig.controller.go_live("s1")
        rig.queue.enqueue(LINES[:2])
        await until(lambda: bool(rig.controller.remote_ends))
        assert rig.states() == [St.WAITING, St.WAITING]
        rig.controller.go_live("s2")
        await until(lambda: len(rig.sent_to("s2")) == 2)

    run(scenario())
    assert rig.sent_to("s2") == LINES[:2]


# -- the one click (outside kiosk mode) ----------------------------------------------------


def test_outside_kiosk_the_unfinished_lines_are_said_again_on_one_call_only(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live("s1")
        rig.queue.enqueue(LINES[:4])
        await until(lambda: len(rig.client.calls) == 2)
        rig.say("t1")
        await until(lambda: len(rig.client.calls) == 3)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t2"))
        rig.controller.end("killed")
        await quiet()
        assert [(i.state, i.reason) for i in rig.queue.items[1:3]] == [
            (St.CANCELLED, REASON_SESSION_ENDED)
        ] * 2
        assert rig.queue.unfinished("s1") == 2
        rig.controller.go_live("s2")
        again = rig.queue.say_unfinished_again("s1")
        assert [i.text for i in again] == LINES[1:3]
        assert rig.queue.say_unfinished_again("s1") == []  # never twice
        assert rig.queue.unfinished("s1") == 0
        await until(lambda: len(rig.sent_to("s2")) == 2)
        for n in range(4, 7):
            rig.say(f"t{n}")
            await quiet()

    run(scenario())
    # said again ahead of the line that waited
    assert rig.sent_to("s2") == [LINES[1], LINES[2], LINES[3]]
    links = {r.text: r.resumed_from for r in rig.store.query(session_id="s2")}
    old = {r.text: r.row_id for r in rig.store.query(session_id="s1")}
    assert links == {
        LINES[1]: old[LINES[1]],
        LINES[2]: old[LINES[2]],
        LINES[3]: old[LINES[3]],
    }


def test_very_short_lines_keep_enough_on_the_service_to_cover_sending_the_next(
    tmp_path: Path,
) -> None:
    """Lines the avatar says in a blink: two would run out before the app hears one end and
    sends the next, so the look-ahead holds enough words for ``LOOKAHEAD_COVER_S``, learned
    from how fast the voice really speaks, and never more than ``LOOKAHEAD_MOST`` lines."""
    clock = [1000.0]
    rig = make(tmp_path, clock=lambda: clock[0])

    async def scenario() -> None:
        rig.controller.go_live()
        # 15 characters a second until it knows better: "Hi there." is 0.6 s, two suffice
        rig.queue.enqueue([f"Hi there {n}." for n in range(30)])
        await until(lambda: len(rig.client.calls) == 2)
        await quiet()
        assert len(rig.client.calls) == 2
        # the voice turns out to say 11 characters in 0.06 s: about 180 a second
        for n in range(1, 9):
            rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id=f"t{n}"))
            clock[0] += 0.06
            rig.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id=f"t{n}"))
            await quiet()
        on_service = [i for i in rig.queue.items if i.state in (St.SENDING, St.SENT)]
        assert len(on_service) == speech_queue.LOOKAHEAD_MOST
        assert len(rig.client.calls) == 8 + speech_queue.LOOKAHEAD_MOST

    run(scenario())
    rig.store.close()


# -- words after a Stop --------------------------------------------------------------------


def test_a_line_said_after_stop_goes_at_once_and_what_waited_is_set_aside(
    tmp_path: Path,
) -> None:
    from avaturn_desktop.core.queue import REASON_SET_ASIDE
    from avaturn_desktop.core.settings import Settings
    from avaturn_desktop.services.settings_store import SettingsStore
    from avaturn_desktop.services.speech import Speaker

    rig = make(tmp_path)
    speaker = Speaker(rig.queue, SettingsStore(Settings()))

    async def scenario() -> None:
        rig.controller.go_live()
        rig.queue.enqueue(LINES[:4])
        await until(lambda: len(rig.client.calls) == 2)
        rig.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        await rig.queue.stop()
        assert rig.queue.paused
        speaker.say("Sorry, a word from the presenter.")
        assert not rig.queue.paused  # no Resume needed
        await until(lambda: len(rig.client.calls) == 3)
        await quiet()
        assert rig.sent()[-1] == "Sorry, a word from the presenter."
        aside = [i for i in rig.queue.items if i.set_aside]
        assert [(i.text, i.state, i.reason) for i in aside] == [
            (LINES[2], St.WAITING, REASON_SET_ASIDE),
            (LINES[3], St.WAITING, REASON_SET_ASIDE),
        ]
        rig.say("t3")
        await quiet()
        assert len(rig.client.calls) == 3  # set aside stays set aside
        assert rig.queue.remove(aside[1].item_id)  # drop one
        rig.queue.resume()  # keep the other
        await until(lambda: len(rig.client.calls) == 4)

    run(scenario())
    assert rig.sent()[3:] == [LINES[2]]
    assert not any(i.set_aside for i in rig.queue.items)
    speaker.close()
    rig.store.close()
