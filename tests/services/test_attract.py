"""The attract screen and the opening hours, on a fake clock (monotonic and wall clock move
together): idle minutes end the session, every kind of trigger brings it back, use postpones
it, and outside the opening hours no session runs unless staff start one by hand."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from avaturn_desktop.core.kiosk import KioskSettings
from avaturn_desktop.core.queue import ChangeKind, ItemState, QueueChange, QueueItem
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState
from avaturn_desktop.services.attract import AttractMode, AttractState
from tests.services.test_supervisor import VirtualTime, until

MONDAY_9 = dt.datetime(2026, 11, 30, 9, 0)  # a Monday, 09:00


@dataclass
class Session:
    state: SessionState = SessionState.LIVE
    ended: list[EndReason] = field(default_factory=list)
    listeners: list[Callable[[SessionSnapshot], None]] = field(default_factory=list)

    @property
    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(state=self.state)

    def subscribe(self, listener: Callable[[SessionSnapshot], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def set(self, state: SessionState) -> None:
        self.state = state
        for listener in list(self.listeners):
            listener(self.snapshot)

    async def terminate(self, reason: EndReason = EndReason.BY_USER) -> None:
        self.ended.append(reason)
        self.set(SessionState.TERMINATING)
        await asyncio.sleep(0)
        self.set(SessionState.ENDED)


@dataclass
class Supervisor:
    """Starts a session whenever it is resumed (as the real one does, at once)."""

    session: Session
    paused: str | None = None
    calls: list[str] = field(default_factory=list)

    def pause(self, reason: str = "paused") -> None:
        self.paused = reason
        self.calls.append(f"pause: {reason}")

    def resume(self) -> None:
        self.paused = None
        self.calls.append("resume")
        if not self.session.state.busy:
            self.session.set(SessionState.LIVE)


@dataclass
class Queue:
    items: list[QueueItem] = field(default_factory=list)
    listeners: list[Callable[[QueueChange], None]] = field(default_factory=list)

    def subscribe(self, listener: Callable[[QueueChange], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def add(self, text: str, state: ItemState = ItemState.WAITING) -> QueueItem:
        item = QueueItem(item_id=len(self.items) + 1, text=text, state=state)
        self.items.append(item)
        for listener in list(self.listeners):
            listener(QueueChange(ChangeKind.ADDED, item))
        return item

    def finish(self) -> None:
        self.items = [
            QueueItem(item_id=i.item_id, text=i.text, state=ItemState.SPOKEN) for i in self.items
        ]
        for listener in list(self.listeners):
            for item in self.items:
                listener(QueueChange(ChangeKind.CHANGED, item))


@dataclass
class Notices:
    said: list[str] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.said.append(text)

    def warning(self, text: str) -> None:
        self.said.append(text)


class Kiosk:
    def __init__(self, settings: KioskSettings, *, start: dt.datetime = MONDAY_9) -> None:
        self.time = VirtualTime()
        self.settings = settings
        self.start_at = start
        self.session = Session()
        self.supervisor = Supervisor(self.session)
        self.queue = Queue()
        self.notices = Notices()
        self.screens: list[tuple[str, str | None] | None] = []
        self.attract = AttractMode(
            session=self.session,
            supervisor=self.supervisor,
            queue=self.queue,
            display=self._display,
            settings=lambda: self.settings,
            notices=self.notices,
            now=lambda: self.start_at + dt.timedelta(seconds=self.time.now),
            clock=self.time.clock,
            sleep=self.time.sleep,
        )

    async def _display(self, screen: tuple[str, str | None] | None) -> None:
        self.screens.append(screen)

    @property
    def showing(self) -> str | None:
        last = self.screens[-1] if self.screens else None
        return None if last is None else last[0]

    async def settle(self) -> None:
        """Let the attract loop act on what just happened (it is woken, not timed)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def minutes(self, minutes: float) -> None:
        await self.time.advance(minutes * 60)
        await self.settle()


def run(kiosk: Kiosk, scenario: Callable[[Kiosk], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        kiosk.attract.start()
        await until(lambda: bool(kiosk.time.deadlines))
        try:
            await scenario(kiosk)
        finally:
            await kiosk.attract.stop()

    asyncio.run(main())


ATTRACT_AFTER_5 = KioskSettings(attract_after_min=5, attract_text="Say hello!")


@pytest.mark.parametrize("trigger", ["line", "touch", "key", "started by hand"])
def test_idle_minutes_end_the_session_and_every_trigger_brings_it_back(trigger: str) -> None:
    async def scenario(k: Kiosk) -> None:
        await k.minutes(4.9)
        assert k.session.ended == [] and k.screens == []
        await k.minutes(0.2)
        assert k.session.ended == [EndReason.ATTRACT]
        assert k.session.state is SessionState.ENDED
        assert k.showing == "Say hello!" and k.screens[-1] == ("Say hello!", None)
        assert k.supervisor.paused == "attract screen: no trigger for 5 min"
        assert k.attract.state is AttractState.ATTRACT
        await k.minutes(60)  # it waits as long as it takes
        assert k.session.ended == [EndReason.ATTRACT] and k.supervisor.paused
        if trigger == "line":
            k.queue.add("Welcome!")  # a say, a cue's GO, an answer: all go through the queue
        elif trigger == "started by hand":
            k.session.set(SessionState.CREATING)
        else:
            k.attract.trigger(trigger)
        await k.settle()
        assert k.screens[-1] is None and k.supervisor.paused is None
        assert k.session.state.busy and k.attract.state is AttractState.LIVE
        assert k.attract.woken == 1
        # and the idle count starts again from the trigger
        k.queue.finish()
        await k.minutes(4.9)
        assert k.session.ended == [EndReason.ATTRACT]
        await k.minutes(0.2)
        assert k.session.ended == [EndReason.ATTRACT, EndReason.ATTRACT]

    run(Kiosk(ATTRACT_AFTER_5), scenario)


def test_lines_spoken_or_waiting_postpone_it_and_off_means_never() -> None:
    async def scenario(k: Kiosk) -> None:
        await k.minutes(3)
        k.queue.add("A long speech", ItemState.SPEAKING)
        await k.minutes(30)  # the avatar is in use all along
        assert k.session.ended == [] and k.screens == []
        k.queue.finish()
        await k.minutes(4.9)
        assert k.session.ended == []
        await k.minutes(0.2)
        assert k.session.ended == [EndReason.ATTRACT]

    run(Kiosk(ATTRACT_AFTER_5), scenario)

    async def never(k: Kiosk) -> None:
        await k.minutes(600)
        assert k.session.ended == [] and k.screens == []
        assert k.attract.as_dict()["attract_in_s"] is None

    run(Kiosk(KioskSettings()), never)


HOURS = KioskSettings(
    opening_hours=["mon-fri 10:00-18:00"], closed_text="Back at ten.", attract_after_min=0
)


def test_opening_hours_close_and_open_the_kiosk_and_ignore_triggers_while_closed() -> None:
    async def scenario(k: Kiosk) -> None:
        # 09:00: closed before anything is started
        assert k.supervisor.paused == "closed: outside the opening hours"
        await k.settle()
        assert k.showing == "Back at ten." and k.attract.state is AttractState.CLOSED
        k.queue.add("Anyone?")
        k.attract.trigger("touch")
        await k.settle()
        assert k.showing == "Back at ten." and k.supervisor.paused
        # 10:00: open
        await k.minutes(60)
        assert k.screens[-1] is None and k.supervisor.paused is None
        assert k.attract.state is AttractState.LIVE and k.attract.as_dict()["open"] is True
        # 18:00: closed, the live session ended for it
        await k.minutes(8 * 60)
        assert k.session.ended == [EndReason.CLOSED]
        assert k.showing == "Back at ten."
        assert k.supervisor.paused == "closed: outside the opening hours"

    k = Kiosk(HOURS)
    k.session.state = SessionState.IDLE  # the supervisor has not started one yet
    run(k, scenario)


def test_closed_a_session_started_by_hand_is_left_alone_and_the_screen_comes_back_after() -> None:
    async def scenario(k: Kiosk) -> None:
        await k.settle()
        assert k.showing == "Back at ten."
        k.session.set(SessionState.CREATING)  # staff, from the console or ctl start
        await k.settle()
        k.session.set(SessionState.LIVE)
        await k.minutes(10)
        assert k.screens[-1] is None and k.session.ended == []
        assert k.attract.state is AttractState.CLOSED
        k.session.set(SessionState.ENDED)  # staff ended it (or it ran out)
        await k.settle()
        assert k.showing == "Back at ten." and k.supervisor.paused

    k = Kiosk(HOURS, start=dt.datetime(2026, 12, 5, 12, 0))  # a Saturday
    k.session.state = SessionState.IDLE
    run(k, scenario)


def test_the_attract_image_goes_as_a_data_url_and_a_bad_one_is_said_once(tmp_path: Path) -> None:
    png = tmp_path / "welcome.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")

    async def scenario(k: Kiosk) -> None:
        await k.minutes(5.1)
        assert k.screens[-1] == ("Say hello!", "data:image/png;base64,iVBORw0KGgpmYWtl")

    run(Kiosk(ATTRACT_AFTER_5.model_copy(update={"attract_image": str(png)})), scenario)

    for bad, words in ((tmp_path / "notes.txt", "not a PNG"), (tmp_path / "gone.png", "read")):
        bad.write_text("x") if bad.suffix == ".txt" else None
        kiosk = Kiosk(ATTRACT_AFTER_5.model_copy(update={"attract_image": str(bad)}))

        async def text_only(k: Kiosk) -> None:
            await k.minutes(5.1)
            assert k.screens[-1] == ("Say hello!", None)

        run(kiosk, text_only)
        assert len(kiosk.notices.said) == 1 and words in kiosk.notices.said[0]
