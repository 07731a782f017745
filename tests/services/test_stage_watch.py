"""The stage watch: heartbeats and the watchdog's findings become notices, the heartbeat's
age, counts for ``/metrics``, and in kiosk mode the supervisor's recovery (a virtual clock)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from avaturn_desktop.core.events import Heartbeat, StageProblem
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.services.metrics import AppMetrics
from avaturn_desktop.services.stage_watch import StageWatch
from tests.services.test_supervisor import VirtualTime, until


@dataclass
class Notices:
    said: list[tuple[str, str]] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.said.append(("info", text))

    def warning(self, text: str) -> None:
        self.said.append(("warning", text))


@dataclass
class Session:
    state: SessionState = SessionState.LIVE

    @property
    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(state=self.state)


@dataclass
class Recovery:
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def heartbeat(self) -> None:
        self.calls.append(("heartbeat", None))

    def heartbeat_stopped(self, detail: str | None = None) -> None:
        self.calls.append(("heartbeat_stopped", detail))

    def page_crashed(self, detail: str | None = None) -> None:
        self.calls.append(("page_crashed", detail))


def make(
    *, kiosk: bool = True, state: SessionState = SessionState.LIVE
) -> tuple[StageWatch, Notices, Session, Recovery, VirtualTime]:
    notices, session, recovery, time = Notices(), Session(state), Recovery(), VirtualTime()
    watch = StageWatch(
        notices,
        session,
        lambda: recovery if kiosk else None,
        heartbeat_timeout_s=lambda: 10.0,
        clock=time.clock,
        sleep=time.sleep,
    )
    return watch, notices, session, recovery, time


def beat(seq: int = 0, *, problems: list[str] | None = None, visible: bool = True) -> Heartbeat:
    return Heartbeat(seq=seq, watching=True, visible=visible, problems=problems or [])  # type: ignore[arg-type]


@pytest.mark.parametrize("problem", ["black", "frozen", "silent"])
def test_a_problem_on_a_live_kiosk_session_is_recovered_once(problem: str) -> None:
    watch, notices, _session, recovery, _time = make()
    found = StageProblem(problem=problem, detail="the picture is black")  # type: ignore[arg-type]
    watch.handle_page_event(found)
    watch.handle_page_event(found)  # said again: one recovery, one notice
    assert recovery.calls == [("heartbeat_stopped", "the stage watchdog: the picture is black")]
    assert len(notices.said) == 1 and notices.said[0][0] == "warning"
    assert "starting a new session" in notices.said[0][1]
    assert watch.current == {problem: "the picture is black"}
    assert watch.problems[problem] == 1
    watch.handle_page_event(StageProblem(problem=problem, cleared=True))  # type: ignore[arg-type]
    assert watch.current == {} and notices.said[-1][0] == "info"


@pytest.mark.parametrize(
    ("kiosk", "state"),
    [(False, SessionState.LIVE), (True, SessionState.CONNECTING), (True, SessionState.ENDED)],
)
def test_outside_kiosk_mode_or_a_live_session_a_problem_is_only_shown(
    kiosk: bool, state: SessionState
) -> None:
    watch, notices, _session, recovery, _time = make(kiosk=kiosk, state=state)
    watch.handle_page_event(StageProblem(problem="frozen", detail="stopped moving"))
    assert [c for c in recovery.calls if c[0] != "heartbeat"] == []
    assert notices.said == [("warning", "The avatar's picture froze (stopped moving).")]


def test_heartbeats_feed_the_supervisor_the_age_and_the_page_s_list_of_problems() -> None:
    watch, _notices, _session, recovery, time = make()
    assert watch.heartbeat_age() is None
    watch.handle_page_event(beat(0))
    time.now = 1.5
    assert watch.heartbeat_age() == 1.5
    assert recovery.calls == [("heartbeat", None)]
    watch.handle_page_event(StageProblem(problem="silent", detail="no sound"))
    watch.handle_page_event(beat(1, problems=["silent"]))
    assert watch.current == {"silent": "no sound"}
    watch.handle_page_event(beat(2))  # the page no longer has it (its avatar went)
    assert watch.current == {}
    assert watch.state() == {
        "heartbeat_age_s": 0.0,
        "watching": True,
        "visible": True,
        "problems": [],
        "problems_seen": {"silent": 1},
        "crashes": 0,
    }


def test_a_crash_goes_to_the_supervisor_and_restarts_the_heartbeat_count() -> None:
    watch, _notices, _session, recovery, _time = make()
    watch.handle_page_event(beat(0))
    watch.page_crashed("the avatar page's process ended (killed, code 9)")
    assert recovery.calls[-1] == (
        "page_crashed",
        "the avatar page's process ended (killed, code 9)",
    )
    assert watch.crashes == 1 and watch.heartbeat_age() is None


def test_heartbeats_that_stop_are_said_once_and_their_return_too() -> None:
    async def scenario() -> list[tuple[str, str]]:
        watch, notices, _session, _recovery, time = make(kiosk=False)
        watch.handle_page_event(beat(0))
        watch.start()
        await until(lambda: bool(time.deadlines))
        await time.advance(9.0)
        assert notices.said == []
        await time.advance(20.0)
        await until(lambda: bool(notices.said))
        await time.advance(30.0)
        assert len(notices.said) == 1
        watch.handle_page_event(beat(1))
        # a hidden page's heartbeats run slow: not a hang
        watch.handle_page_event(beat(2, visible=False))
        await time.advance(60.0)
        await watch.stop()
        return notices.said

    said = asyncio.run(scenario())
    assert said == [
        ("warning", "The avatar page has not answered for 15 s."),
        ("info", "The avatar page answers again."),
    ]


def test_metrics_count_problems_and_crashes_and_read_the_heartbeat_age() -> None:
    watch, _notices, _session, _recovery, time = make(kiosk=False)
    metrics = AppMetrics(process=False)
    metrics.watch_stage(watch)
    watch.handle_page_event(StageProblem(problem="black"))
    watch.handle_page_event(StageProblem(problem="black", cleared=True))
    watch.handle_page_event(StageProblem(problem="black"))
    watch.page_crashed("gone")
    watch.handle_page_event(beat(0))
    time.now = 2.0
    text = metrics.render()[0].decode()
    assert 'avaturn_stage_problems_total{problem="black"} 2.0' in text
    assert 'avaturn_stage_problems_total{problem="frozen"} 0.0' in text
    assert 'avaturn_stage_problems_total{problem="page_crashed"} 1.0' in text
    assert "avaturn_page_heartbeat_age_seconds 2.0" in text


def test_a_heartbeat_after_stop_starts_no_watch() -> None:
    """The page still beats while the app closes: a watch started then would outlive the
    loop (a task resumed with no loop running)."""

    async def scenario() -> None:
        watch, _notices, _session, _recovery, _time = make()
        watch.handle_page_event(beat(0))
        assert watch._task is not None
        await watch.stop()
        watch.handle_page_event(beat(1))
        assert watch._task is None

    asyncio.run(scenario())
