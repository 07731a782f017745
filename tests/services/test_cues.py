"""The cue player over a real speech queue and speaker, with the queue's small fakes."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClient, FakeController, FakeStage, until

from avaturn_desktop.core.errors import ConfigError
from avaturn_desktop.core.events import AvatarEndedSpeakingPhrase, AvatarStartedSpeakingPhrase
from avaturn_desktop.core.queue import QueueRefusedError
from avaturn_desktop.core.script import DEFAULT_CHARS_PER_S
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.core.tasks import TaskRoute
from avaturn_desktop.services.cues import CuePlayer, CueState, NoCueError
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech import Speaker
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore

S = CueState

SCRIPT = """\
# Welcome
// smile
Good evening. Welcome.

Tonight, three things.

# Part two
// slow
First, speed. It is fast.

Second, price.
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    player: CuePlayer
    queue: SpeechQueue
    client: FakeClient
    stage: FakeStage
    controller: FakeController
    store: TaskLogStore
    clock: Clock
    notices: list[tuple[str, str]]
    changes: list[None]

    def states(self) -> list[CueState]:
        views = self.player.cues()
        # the views kept from earlier reads are those made afresh now
        script = self.player.script
        rate = self.player.chars_per_s
        assert views == (
            [] if script is None else [self.player._view(c, rate) for c in script.cues]
        )
        return [c.state for c in views]

    def sent(self) -> list[str]:
        return [text for _, text in self.client.calls]

    def task_of(self, text: str) -> str:
        item = next(i for i in self.queue.items if i.text == text)
        assert item.task_id is not None, item
        return item.task_id

    def speak(self, text: str) -> None:
        self.queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id=self.task_of(text)))

    def done(self, text: str) -> None:
        self.queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id=self.task_of(text)))


def make_rig(tmp_path: Path, *, policy: str = "hold", rate: float | None = None) -> Rig:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    client, stage, controller, clock = FakeClient(), FakeStage(), FakeController(), Clock()

    async def sleep(_seconds: float) -> None:
        await asyncio.sleep(0)

    queue = SpeechQueue(
        client,
        store,
        controller,
        stage=stage,
        clock=clock,
        sleep=sleep,
        policy=policy,
        lookahead=None,  # no page here reports speech: every line goes at once
    )  # type: ignore[arg-type]
    speaker = Speaker(queue, SettingsStore(Settings()))
    notices: list[tuple[str, str]] = []
    player = CuePlayer(
        speaker, rate=lambda: rate, notify=lambda lv, t: notices.append((lv, t)), clock=clock
    )
    changes: list[None] = []
    player.subscribe(lambda: changes.append(None))
    return Rig(player, queue, client, stage, controller, store, clock, notices, changes)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(tmp_path)
    yield made
    made.store.close()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def acked(rig: Rig, count: int) -> None:
    """Until ``count`` lines were sent and the service answered each."""
    await until(
        lambda: (
            len(rig.client.calls) == count
            and all(i.task_id or i.state.finished for i in rig.queue.items)
        )
    )


def test_go_speaks_the_standby_cue_and_moves_on(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_text(SCRIPT)
        assert rig.states() == [S.STANDBY, S.NEXT, S.LATER, S.LATER]
        assert rig.player.state() == {
            "count": 4,
            "standby": 0,
            "standby_text": "Good evening. Welcome.",
        }
        rig.player.go()
        rig.player.go()
        await acked(rig, 3)
        assert rig.sent() == ["Good evening.", "Welcome.", "Tonight, three things."]
        assert rig.states() == [S.WAITING, S.WAITING, S.STANDBY, S.NEXT]
        rig.speak("Good evening.")
        assert rig.states()[0] is S.PLAYING
        rig.done("Good evening.")
        rig.speak("Welcome.")
        rig.done("Welcome.")
        assert rig.states()[:2] == [S.DONE, S.WAITING]
        rig.speak("Tonight, three things.")
        assert rig.states()[:2] == [S.DONE, S.PLAYING]

    run(scenario())
    # titles and notes were never sent
    assert not any(t == "Welcome" or "smile" in t or "Part two" in t for t in rig.sent()[2:])


def test_back_skip_standby_and_the_end(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        with pytest.raises(NoCueError, match="No script"):
            rig.player.go()
        rig.player.load_text(SCRIPT)
        assert rig.player.back() == 0  # nothing before the first cue
        assert rig.player.skip() == 1
        assert rig.states()[0] is S.SKIPPED
        rig.player.set_standby(3)
        assert rig.states() == [S.SKIPPED, S.LATER, S.LATER, S.STANDBY]
        rig.player.go()
        assert rig.player.standby is None and rig.player.state()["standby_text"] is None
        with pytest.raises(NoCueError, match="at its end"):
            rig.player.go()
        assert rig.player.back() == 3  # back from the end: the last cue again
        with pytest.raises(ConfigError, match="numbered 0 to 3"):
            rig.player.set_standby(4)
        with pytest.raises(ConfigError):
            rig.player.set_standby(-1)
        await until(lambda: rig.sent() == ["Second, price."])

    run(scenario())


def test_go_now_cuts_in(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_text(SCRIPT)
        rig.player.go()
        await acked(rig, 2)
        rig.speak("Good evening.")
        await rig.player.go_now()
        await until(lambda: len(rig.client.calls) == 3)
        assert rig.stage.cancels == 1
        assert rig.sent()[-1] == "Tonight, three things."
        assert rig.states()[:3] == [S.STOPPED, S.WAITING, S.STANDBY]

    run(scenario())


def test_stop_mid_cue_then_go_speaks_the_next_cue_without_a_resume(rig: Rig) -> None:
    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_text(SCRIPT)
        gate = asyncio.get_running_loop().create_future()
        rig.client.script = ["t1", gate]  # the second sentence of cue 0 is slow to leave
        rig.player.go()
        await until(lambda: len(rig.client.calls) == 2)
        rig.speak("Good evening.")
        await rig.queue.stop()
        gate.set_result("t2")
        await until(lambda: all(i.state.finished for i in rig.queue.items))
        assert rig.queue.paused
        # cut while the first sentence played; the second was on its way: both are cancelled
        assert rig.states()[0] is S.STOPPED
        rig.player.go()  # no resume
        await until(lambda: len(rig.client.calls) == 3)
        assert rig.sent()[-1] == "Tonight, three things."
        assert not rig.queue.paused

    run(scenario())


def test_go_after_stop_drops_the_cut_cues_unsent_lines(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def scenario() -> None:
        rig.player.load_text(SCRIPT)
        rig.player.go()  # no session: held
        await rig.queue.stop()  # paused before anything was sent
        rig.controller.go_live()
        rig.player.go()
        await until(lambda: len(rig.client.calls) == 1)
        assert rig.sent() == ["Tonight, three things."]
        assert rig.states()[0] is S.STOPPED
        # the cut cue's lines left the queue (removed, their rows cancelled), never sent
        assert [i.text for i in rig.queue.items] == ["Tonight, three things."]
        assert {(r.text, r.state.value) for r in rig.store.query()} >= {
            ("Good evening.", "cancelled"),
            ("Welcome.", "cancelled"),
        }

    run(scenario())
    rig.store.close()


def test_refused_go_keeps_the_standby_cue(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, policy="refuse")
    rig.player.load_text(SCRIPT)
    with pytest.raises(QueueRefusedError):
        rig.player.go()
    assert rig.player.standby == 0 and rig.states()[0] is S.STANDBY
    rig.store.close()


def test_clock_and_time_left(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, rate=10.0)

    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_text("0123456789\n\n01234\n\n0123456789\n")
        assert rig.player.chars_per_s == 10.0 and rig.player.measured
        assert rig.player.elapsed_s() is None
        assert rig.player.time_left_s() == pytest.approx(2.5)
        rig.player.go()
        await acked(rig, 1)
        rig.clock.now += 0.4
        rig.speak("0123456789")
        rig.clock.now += 0.5
        assert rig.player.elapsed_s() == pytest.approx(0.9)
        assert rig.player.time_left_s() == pytest.approx(0.5 + 0.5 + 1.0)
        rig.player.skip()
        assert rig.player.time_left_s() == pytest.approx(0.5 + 1.0)
        rig.done("0123456789")
        assert rig.player.time_left_s() == pytest.approx(1.0)

    run(scenario())
    rig.store.close()


def test_the_default_pace_until_the_voice_is_measured(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.player.load_text("Hello there.\n")
    assert rig.player.chars_per_s == DEFAULT_CHARS_PER_S and not rig.player.measured
    rig.store.close()


def test_the_measured_pace_comes_from_the_task_log(tmp_path: Path) -> None:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    assert store.speaking_rate("v") is None
    for n in range(4):
        (row,) = store.add_many(
            ["x" * 30], session_id="s", voice_id="v", route=TaskRoute.REST, at=float(n)
        )
        store.mark_sent(row.row_id, at=10.0 * n)
        store.mark_speaking(row.row_id, at=10.0 * n + 1)
        store.mark_spoken(row.row_id, at=10.0 * n + 3)  # 30 chars in 2 s
    assert store.speaking_rate("v") == pytest.approx(15.0)
    assert store.speaking_rate("other") is None
    assert store.speaking_rate("v", min_lines=5) is None
    store.close()


def test_edit_in_place_keeps_states_and_saves_back(rig: Rig, tmp_path: Path) -> None:
    path = tmp_path / "talk.txt"
    path.write_text(SCRIPT, encoding="utf-8")

    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_path(path)
        rig.player.go()
        await until(lambda: len(rig.client.calls) == 2)
        rig.player.edit(3, "Second, the price.\nIt is low.")
        assert rig.player.dirty
        assert rig.states()[0] is S.WAITING and rig.player.standby == 1
        # split cue 1 in two: the standby stays on the first half, states stay with their cue
        rig.player.edit(1, "Tonight,\n\nthree things.")
        assert [c.text for c in rig.player.cues()][1:3] == ["Tonight,", "three things."]
        assert rig.player.standby == 1
        saved = rig.player.save()
        assert saved == path.resolve() and not rig.player.dirty
        text = path.read_text(encoding="utf-8")
        assert "// slow\nFirst, speed." in text and "Second, the price.\nIt is low.\n" in text
        assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # none left behind
        await rig.player.close()

    run(scenario())


def test_the_file_is_reloaded_when_it_changes_on_disk(rig: Rig, tmp_path: Path) -> None:
    path = tmp_path / "talk.md"
    path.write_text(SCRIPT, encoding="utf-8")

    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_path(path)
        rig.player.go()
        assert rig.player.standby == 1
        await asyncio.sleep(0.3)  # the watcher is up (it starts in a thread)
        # an editor's save: a new file renamed over the old one, with a cue added at the top
        tmp = tmp_path / "talk.md~"
        tmp.write_text("A new opening.\n\n" + SCRIPT, encoding="utf-8")
        tmp.replace(path)
        await asyncio.wait_for(_changed_to(rig, 5), 10)
        assert next(c.text for c in rig.player.cues()) == "A new opening."
        # the standby cue and the fired one moved with their text
        assert rig.player.standby == 2
        assert rig.states()[:3] == [S.LATER, S.WAITING, S.STANDBY]
        assert rig.notices and rig.notices[-1][0] == "info"
        # with unsaved edits, a change on disk is not taken, and the presenter is told
        rig.player.edit(4, "Edited here.")
        path.write_text(SCRIPT, encoding="utf-8")
        await asyncio.wait_for(_notice(rig, "warning"), 10)
        assert rig.player.count == 5 and rig.player.dirty
        rig.player.reload()
        assert rig.player.count == 4 and not rig.player.dirty
        await rig.player.close()

    run(scenario())


async def _changed_to(rig: Rig, count: int) -> None:
    while rig.player.count != count:  # noqa: ASYNC110 (the watcher runs in its thread)
        await asyncio.sleep(0.02)


async def _notice(rig: Rig, level: str) -> None:
    while not rig.notices or rig.notices[-1][0] != level:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def test_loading_refuses_what_is_not_a_script(rig: Rig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no cues"):
        rig.player.load_text("# Only a title\n// and a note\n")
    with pytest.raises(ConfigError, match="There is no script"):
        rig.player.load_path(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="folder"):
        (tmp_path / "dir.txt").mkdir()
        rig.player.load_path(tmp_path / "dir.txt")
    with pytest.raises(NoCueError):
        rig.player.save()
    rig.player.load_text("Hi.\n")
    with pytest.raises(ConfigError, match="choose where"):
        rig.player.save()
    with pytest.raises(ConfigError, match=r"\.txt or \.md"):
        rig.player.save(tmp_path / "bashrc")
    with pytest.raises(NoCueError, match="not loaded from a file"):
        rig.player.reload()


def test_a_long_cue_is_followed_to_its_last_line(rig: Rig) -> None:
    """A cue of many sentences is queued a slice per loop turn: every line counts for it."""
    long_cue = " ".join(f"Sentence number {n} is here." for n in range(120))

    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_text(long_cue + "\n\nThe next cue.\n")
        rig.player.go()
        await until(lambda: len(rig.player.cues()[0].item_ids) == 120)
        await acked(rig, 120)
        assert rig.states()[0] is S.WAITING
        for n in range(120):
            text = f"Sentence number {n} is here."
            rig.speak(text)
            rig.done(text)
        assert rig.states()[0] is S.DONE

    run(scenario())


@pytest.mark.parametrize("seed", range(6))
def test_the_views_kept_between_reads_follow_every_change(tmp_path: Path, seed: int) -> None:
    """The player keeps its cue views from one read to the next and makes again only those
    of cues that changed: after any mix of GO, GO now, Back, Skip, standby, lines spoken,
    Stop, edits and reloads, they are the views made afresh (``Rig.states`` checks it)."""
    rig = make_rig(tmp_path, rate=12.0 + seed)
    script = "\n\n".join(f"Cue {n}. It has two sentences." for n in range(12)) + "\n"
    path = tmp_path / "show.txt"
    path.write_text(script, encoding="utf-8")
    chooser = random.Random(seed)

    async def step() -> None:
        player, queue = rig.player, rig.queue
        action = chooser.choice(
            ["go", "go", "go", "go_now", "back", "skip", "standby", "speak", "stop", "edit"]
        )
        if action in ("go", "go_now", "skip") and player.standby is None:
            action = "back"
        if action == "go":
            player.go()
        elif action == "go_now":
            await player.go_now()
        elif action == "back":
            player.back()
        elif action == "skip":
            player.skip()
        elif action == "standby":
            player.set_standby(chooser.randrange(player.count))
        elif action == "speak":
            sent = [i for i in queue.items if i.task_id is not None and not i.state.finished]
            if sent:
                item = sent[0]
                queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id=item.task_id))
                rig.states()
                queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id=item.task_id))
        elif action == "stop":
            await queue.stop()
        else:
            index = chooser.randrange(player.count)
            player.edit(index, f"Edited {index}. Still two sentences.")
        await until(lambda: all(i.task_id or i.state.finished for i in queue.items))
        rig.states()

    async def scenario() -> None:
        rig.controller.go_live()
        rig.player.load_path(path)
        rig.states()
        for _ in range(60):
            await step()
        rig.player.reload()
        rig.states()
        await rig.player.close()

    try:
        run(scenario())
    finally:
        rig.store.close()
