"""The kiosk supervisor over the real session controller: against the simulator over loopback
for what the service does, with fakes and a virtual clock for the timing."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from avaturn_desktop.core.errors import ConfigError, NetworkError, NotFoundError, RateLimitedError
from avaturn_desktop.core.events import Disposed, SdkError
from avaturn_desktop.core.models import SessionCreate, SessionCreated
from avaturn_desktop.core.session_state import EndReason, SessionState
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.services.supervisor import (
    BackoffPolicy,
    RestartReason,
    Supervisor,
    SupervisorState,
    SupervisorStatus,
)
from avaturn_desktop.simulator.faults import FaultConfig
from avaturn_desktop.simulator.server import SimulatorServer

S = SessionState
R = RestartReason
POLICY = BackoffPolicy(
    first_s=1.0, cap_s=16.0, quota_pause_s=600.0, stable_after_s=60.0, connect_timeout_s=90.0
)


class VirtualTime:
    """A clock and a sleep that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), fut))
        await fut

    @property
    def deadlines(self) -> set[float]:
        return {when for when, _, fut in self._sleepers if not fut.done()}

    async def advance(self, seconds: float) -> None:
        """Move the clock on, waking every sleeper that is due, in order."""
        target = self.now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self.now = when
            fut.set_result(None)
            for _ in range(20):  # let the woken task run up to its next wait
                await asyncio.sleep(0)
        self.now = target


async def until(predicate: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the loop run until ``predicate`` holds (a condition, never a timed sleep)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def reach(controller: SessionController, state: SessionState) -> None:
    """Wait until the controller is in ``state``, listening (for work on real sockets)."""
    reached = asyncio.Event()
    unsubscribe = controller.subscribe(lambda snap: snap.state is state and reached.set())
    try:
        if controller.state is not state:
            await asyncio.wait_for(reached.wait(), 10)
    finally:
        unsubscribe()


# -- fakes of the controller's collaborators (the controller itself is real) --------------------


@dataclass
class FakeClient:
    create_errors: list[Exception] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    delete_error: Exception | None = None
    attempts: int = 0

    async def create_session(self, request: SessionCreate | None = None) -> SessionCreated:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.create_errors:
            raise self.create_errors.pop(0)
        sid = f"s{len(self.created) + 1}"
        self.created.append(sid)
        return SessionCreated(session_id=sid, token=f"tok-{sid}")

    async def terminate_session(self, session_id: str) -> None:
        self.deleted.append(session_id)
        if self.delete_error is not None:
            raise self.delete_error

    async def get_sdk_session(self, token: str) -> Any:
        # The controller checks a page's ending with the service: the endings these tests
        # feed are the service's own, so its lookup no longer has the session.
        raise NotFoundError("gone", status=404)


@dataclass
class FakeStage:
    """Connects at once, unless ``hang`` (the page never answers) or ``error``."""

    hang: bool = False
    error: Exception | None = None
    connects: int = 0
    disposed: int = 0
    #: Runs while connecting (the page's events meanwhile).
    during_connect: Callable[[], None] | None = None

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool
    ) -> str:
        self.connects += 1
        await asyncio.sleep(0)
        if self.during_connect is not None:
            self.during_connect()
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return token

    async def dispose(self) -> None:
        self.disposed += 1


@dataclass
class Rig:
    time: VirtualTime
    client: Any
    stage: Any
    controller: SessionController
    supervisor: Supervisor
    states: list[SupervisorState]
    recovered: list[float]

    @property
    def state(self) -> SupervisorState:
        return self.supervisor.state

    async def next_try(self) -> None:
        """Wait for the supervisor to schedule its next try, then let that time come."""
        await until(lambda: self.state.status is SupervisorStatus.WAITING)
        wait = self.state.next_try_in_s
        assert wait is not None
        due = self.time.now + wait
        # its timer is asleep
        await until(lambda: any(abs(d - due) < 1e-9 for d in self.time.deadlines))
        await self.time.advance(wait)


def make_rig(
    client: Any = None,
    stage: Any = None,
    *,
    policy: BackoffPolicy = POLICY,
    api_host: str = "http://sim",
    seed: int = 7,
    request: Callable[[], SessionCreate] = SessionCreate,
) -> Rig:
    vt = VirtualTime()
    client = client if client is not None else FakeClient()
    stage = stage if stage is not None else FakeStage()
    never = asyncio.Event()

    async def sleep_forever(_: float) -> None:  # the controller's max-duration timer
        await never.wait()

    controller = SessionController(
        client, stage, api_host=api_host, sdk_url=api_host + "/sdk.js", sleep=sleep_forever
    )
    recovered: list[float] = []

    async def recover_page() -> None:
        recovered.append(vt.now)

    supervisor = Supervisor(
        controller,
        request,
        policy=policy,
        recover_page=recover_page,
        clock=vt.clock,
        sleep=vt.sleep,
        rng=random.Random(seed),
    )
    states: list[SupervisorState] = []
    supervisor.subscribe(states.append)
    return Rig(vt, client, stage, controller, supervisor, states, recovered)


def live(rig: Rig) -> Callable[[], bool]:
    return lambda: rig.controller.state is S.LIVE


# -- against the simulator ------------------------------------------------------------------


@dataclass
class SimStage:
    """The page's part, reduced to what the service sees: the SDK looks the session up with
    its token when it connects (a dead session's token is refused)."""

    client: AvaturnClient
    connects: int = 0

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool
    ) -> str:
        self.connects += 1
        session = await self.client.get_sdk_session(token)
        return session.id

    async def dispose(self) -> None:
        return None


def sim_sessions(server: SimulatorServer) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = server.snapshot()["sessions"]
    return sessions


def test_launch_and_every_ending_the_service_causes_bring_a_new_session(
    simulator: SimulatorServer,
) -> None:
    """Killed by the service, ended as nobody watched, the connection lost: each time a new
    session is live on the simulator and the restart is counted under its reason."""

    async def scenario() -> Rig:
        async with httpx.AsyncClient() as http:
            client = AvaturnClient(http, api_key="local", base_url=simulator.base_url)
            rig = make_rig(client, SimStage(client), api_host=simulator.base_url)
            rig.supervisor.start()
            await reach(rig.controller, S.LIVE)
            first = rig.controller.session_id
            assert rig.state.restarts == 0 and rig.state.status is SupervisorStatus.WATCHING

            # 1. the service kills it; the page learns through its event channel and says so
            r = await http.post(f"{simulator.base_url}/_sim/sessions/{first}/kill")
            assert r.status_code == 200
            rig.controller.handle_page_event(Disposed(reason="the session was killed"))
            await reach(rig.controller, S.ENDED)
            assert rig.state.status is SupervisorStatus.WAITING
            assert rig.state.next_try_in_s is not None and 0.5 <= rig.state.next_try_in_s <= 1.0
            await rig.next_try()
            await reach(rig.controller, S.LIVE)
            second = rig.controller.session_id
            assert second != first

            # 2. the service's own ending, as the page reports it (the controller believes the
            # page only once the service confirms, so the service must really have ended it)
            r = await http.post(f"{simulator.base_url}/_sim/sessions/{second}/kill")
            assert r.status_code == 200
            rig.controller.handle_page_event(SdkError(code="user_absent_timeout", message="bye"))
            await reach(rig.controller, S.ENDED)
            await rig.next_try()
            await reach(rig.controller, S.LIVE)
            await rig.supervisor.stop()
            await rig.controller.shutdown()
            return rig

    rig = asyncio.run(scenario())
    assert rig.state.restarts == 2
    assert dict(rig.state.restarts_by_reason) == {"connection_lost": 1, "user_absent": 1}
    ids = [s["session_id"] for s in sim_sessions(simulator)]
    assert len(ids) == 3
    assert all(s["state"] == "ended" for s in sim_sessions(simulator))  # nothing left burning
    assert sim_sessions(simulator)[0]["end_reason"] == "killed"


def test_a_429_the_client_does_not_wait_out_pauses_long_with_one_request(
    simulator: SimulatorServer,
) -> None:
    """Quota: the simulator answers 429 with a Retry-After longer than the client waits by
    itself. One request, then the long pause; never a burst of tries."""

    async def scenario() -> tuple[Rig, list[int]]:
        simulator.set_faults(FaultConfig(rate_limit_burst=50, retry_after_s=300))
        async with httpx.AsyncClient() as http:
            client = AvaturnClient(http, api_key="local", base_url=simulator.base_url)
            rig = make_rig(client, SimStage(client), api_host=simulator.base_url)
            rig.supervisor.start()
            await reach(rig.controller, S.FAILED)
            await until(lambda: rig.state.status is SupervisorStatus.WAITING)
            left = [simulator.faults().rate_limit_burst]
            wait = rig.state.next_try_in_s
            assert wait is not None and 300.0 <= wait <= 600.0  # the quota pause, jittered
            await rig.time.advance(wait - 1)  # nothing happens before it
            left.append(simulator.faults().rate_limit_burst)
            simulator.set_faults(FaultConfig())  # the quota is back
            await rig.time.advance(1)
            await reach(rig.controller, S.LIVE)
            await rig.supervisor.stop()
            await rig.controller.shutdown()
            return rig, left

    rig, left = asyncio.run(scenario())
    assert left == [49, 49]  # exactly one request while refused
    assert rig.state.restarts_by_reason == {"quota": 1}
    assert "(429)" in (rig.state.last_detail or "")


# -- timing, with fakes -----------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets_after_a_stable_session() -> None:
    async def scenario() -> tuple[Rig, list[float]]:
        client = FakeClient(create_errors=[NetworkError("offline")] * 7)
        rig = make_rig(client)
        rig.supervisor.start()
        await until(lambda: client.attempts == 1)
        waits: list[float] = []
        for _ in range(7):
            await until(lambda: rig.state.status is SupervisorStatus.WAITING)
            waits.append(rig.state.next_try_in_s or 0.0)
            await rig.next_try()
        await until(live(rig))
        assert rig.state.failures_in_a_row == 7
        rig.time.now += 61  # it stays live past stable_after_s
        rig.controller.handle_page_event(Disposed(reason="network"))
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        waits.append(rig.state.next_try_in_s or 0.0)
        await rig.supervisor.stop()
        return rig, waits

    rig, waits = asyncio.run(scenario())
    nominal = [1, 2, 4, 8, 16, 16, 16, 1]
    for wait, top in zip(waits, nominal, strict=True):
        assert top * 0.5 <= wait <= top
    assert len(set(waits)) == len(waits)  # jittered: no two the same
    assert rig.state.restarts_by_reason == {"start_failed": 7}
    assert rig.state.failures_in_a_row == 1
    assert rig.client.attempts == 8


def test_sessions_that_die_young_keep_the_backoff_growing() -> None:
    async def scenario() -> list[float]:
        rig = make_rig()
        rig.supervisor.start()
        waits = []
        for _ in range(4):
            await until(live(rig))
            rig.time.now += 5  # live, but not for long
            rig.controller.handle_page_event(Disposed(reason="network"))
            await until(lambda: rig.state.status is SupervisorStatus.WAITING)
            waits.append(POLICY.nominal(rig.state.failures_in_a_row))
            await rig.next_try()
        await rig.supervisor.stop()
        return waits

    assert asyncio.run(scenario()) == [1, 2, 4, 8]


@pytest.mark.parametrize(
    "how",
    ["429 on create", "limits_exceeded while connecting", "quota message at connect"],
)
def test_quota_refusals_pause_long(how: str) -> None:
    async def scenario() -> Rig:
        client, stage = FakeClient(), FakeStage()
        if how == "429 on create":
            client.create_errors = [
                RateLimitedError(
                    "The service is busy and refused the request to create the session (429).",
                    retry_after=None,
                )
            ]
        elif how == "limits_exceeded while connecting":
            stage.error = NetworkError("The avatar could not connect: Workspace quota exhausted")
        else:
            stage.error = NetworkError("The avatar could not connect: limits_exceeded")
        rig = make_rig(client, stage)
        if how == "limits_exceeded while connecting":
            stage.during_connect = lambda: rig.supervisor.handle_page_event(
                SdkError(code="limits_exceeded", message="Workspace quota exhausted")
            )
        rig.supervisor.start()
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        return rig

    rig = asyncio.run(scenario())
    assert rig.state.last_reason is R.QUOTA
    wait = rig.state.next_try_in_s
    assert wait is not None and 300 <= wait <= 600


def test_limits_exceeded_on_a_live_session_is_its_max_duration_a_quick_restart() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        rig.supervisor.start()
        await until(live(rig))
        event = SdkError(code="limits_exceeded", message="max_duration reached")
        rig.supervisor.handle_page_event(event)  # the app feeds both
        rig.controller.handle_page_event(event)
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        await rig.next_try()
        await until(live(rig))
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.state.restarts_by_reason == {"max_duration": 1}


def test_a_start_that_hangs_in_connecting_is_cancelled_and_started_again() -> None:
    async def scenario() -> Rig:
        stage = FakeStage(hang=True)
        rig = make_rig(stage=stage)
        rig.supervisor.start()
        await until(lambda: rig.controller.state is S.CONNECTING)
        assert rig.state.status is SupervisorStatus.STARTING
        await rig.time.advance(89)
        assert rig.controller.state is S.CONNECTING
        await rig.time.advance(1)
        await until(lambda: rig.controller.state is S.ENDED)
        stage.hang = False
        await rig.next_try()
        await until(live(rig))
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.state.restarts_by_reason == {"connect_timeout": 1}
    assert "90 s" in (rig.state.last_detail or "")
    assert rig.client.deleted == ["s1"]  # the hung session was ended on the service


@pytest.mark.parametrize(
    ("signal", "reason"),
    [("page_crashed", R.PAGE_CRASHED), ("heartbeat_stopped", R.HEARTBEAT_LOST)],
)
def test_page_signals_end_the_session_recover_the_page_and_start_again(
    signal: str, reason: RestartReason
) -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        rig.supervisor.start()
        await until(live(rig))
        getattr(rig.supervisor, signal)("the stage went black")
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        assert rig.recovered == []  # the page is recovered just before the next start
        await rig.next_try()
        await until(live(rig))
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.state.restarts_by_reason == {reason.value: 1}
    assert rig.state.last_detail == "the stage went black"
    assert len(rig.recovered) == 1
    assert rig.client.deleted == ["s1"]  # ended on the service, nothing left burning
    assert rig.controller.snapshot.history.count(S.LIVE) == 2


def test_a_page_crash_while_connecting_cancels_that_start() -> None:
    async def scenario() -> Rig:
        rig = make_rig(stage=FakeStage(hang=True))
        rig.supervisor.start()
        await until(lambda: rig.controller.state is S.CONNECTING)
        rig.supervisor.page_crashed()
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        rig.stage.hang = False
        await rig.next_try()
        await until(live(rig))
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.state.restarts_by_reason == {"page_crashed": 1}
    assert rig.recovered != []


def test_missing_heartbeats_on_a_live_session_are_a_heartbeat_lost() -> None:
    policy = BackoffPolicy(heartbeat_timeout_s=10.0)

    async def scenario() -> Rig:
        rig = make_rig(policy=policy)
        rig.supervisor.start()
        await until(live(rig))
        for _ in range(5):  # a healthy page: a beat every 5 s
            await rig.time.advance(5)
            rig.supervisor.heartbeat()
        assert rig.controller.state is S.LIVE
        assert rig.state.heartbeat_age_s == 0.0
        await rig.time.advance(9.5)
        assert rig.controller.state is S.LIVE
        await rig.time.advance(0.5)
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.state.last_reason is R.HEARTBEAT_LOST
    assert rig.state.heartbeat_age_s == 10.0


def test_a_page_that_never_beats_is_caught_from_going_live() -> None:
    async def scenario() -> Rig:
        rig = make_rig(policy=BackoffPolicy(heartbeat_timeout_s=10.0))
        rig.supervisor.start()
        await until(live(rig))
        await rig.time.advance(10)
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        await rig.supervisor.stop()
        return rig

    assert asyncio.run(scenario()).state.last_reason is R.HEARTBEAT_LOST


@pytest.mark.parametrize(
    "how", ["terminate", "terminate, the service unreachable", "cancel while connecting", "quit"]
)
def test_an_ending_by_hand_stands_it_down_until_a_start_by_hand(how: str) -> None:
    async def scenario() -> Rig:
        rig = make_rig(stage=FakeStage(hang=how == "cancel while connecting"))
        rig.supervisor.start()
        if how == "cancel while connecting":
            await until(lambda: rig.controller.state is S.CONNECTING)
            await rig.controller.terminate()
        elif how == "quit":
            await until(live(rig))
            await rig.controller.terminate(EndReason.APP_QUIT)
        elif how == "terminate, the service unreachable":
            await until(live(rig))
            rig.client.delete_error = NetworkError("offline")
            await rig.controller.terminate()
            assert rig.controller.state is S.FAILED
            rig.client.delete_error = None
        else:
            await until(live(rig))
            await rig.controller.terminate()
        await until(lambda: rig.state.status is SupervisorStatus.PAUSED)
        await rig.time.advance(3600)
        assert rig.client.attempts == 1  # an hour later: still nothing started
        rig.stage.hang = False
        await rig.controller.start(SessionCreate())  # a person starts one
        assert rig.state.status is SupervisorStatus.WATCHING
        rig.controller.handle_page_event(Disposed(reason="network"))
        await rig.next_try()
        await until(live(rig))
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.state.restarts_by_reason == {"connection_lost": 1}
    assert rig.client.attempts == 3


def test_pause_cancels_the_next_try_and_resume_starts_at_once() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        rig.supervisor.start()
        await until(live(rig))
        rig.supervisor.pause("attract screen")
        rig.controller.handle_page_event(Disposed(reason="network"))
        await until(lambda: rig.controller.state is S.ENDED)
        assert rig.state.status is SupervisorStatus.PAUSED
        assert rig.state.paused_reason == "attract screen"
        assert rig.state.next_try_in_s is None
        await rig.time.advance(3600)
        assert rig.client.attempts == 1
        rig.supervisor.resume()
        await until(live(rig))
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.client.attempts == 2
    assert rig.time.slept.count(0.0) == 0  # resume started it without waiting


def test_a_start_by_hand_while_waiting_is_watched_not_doubled() -> None:
    async def scenario() -> Rig:
        client = FakeClient(create_errors=[NetworkError("offline")])
        rig = make_rig(client)
        rig.supervisor.start()
        await until(lambda: rig.controller.state is S.FAILED)
        assert rig.state.status is SupervisorStatus.WAITING
        await rig.controller.start(SessionCreate())  # a person is quicker
        assert rig.state.next_try_in_s is None
        await rig.time.advance(100)
        await rig.supervisor.stop()
        return rig

    rig = asyncio.run(scenario())
    assert rig.client.attempts == 2 and rig.controller.state is S.LIVE
    assert rig.state.restarts == 0


def test_a_form_that_cannot_make_a_session_is_retried_with_backoff() -> None:
    calls = iter([ConfigError("Enter an avatar id."), None])

    def request() -> SessionCreate:
        error = next(calls)
        if error is not None:
            raise error
        return SessionCreate()

    async def scenario() -> Rig:
        rig = make_rig(request=request)
        rig.supervisor.start()
        await until(lambda: rig.state.last_detail is not None)
        assert rig.state.status is SupervisorStatus.WAITING
        assert rig.state.last_detail == "Enter an avatar id."
        await rig.next_try()
        await until(live(rig))
        await rig.supervisor.stop()
        return rig

    assert asyncio.run(scenario()).client.attempts == 1


def test_stop_lets_an_ending_it_asked_for_reach_the_service() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        rig.supervisor.start()
        await until(live(rig))
        rig.supervisor.page_crashed()
        await rig.supervisor.stop()  # quitting right then
        return rig

    rig = asyncio.run(scenario())
    assert rig.client.deleted == ["s1"]
    assert rig.state.status is SupervisorStatus.OFF


def test_state_for_slash_state() -> None:
    async def scenario() -> dict[str, Any]:
        rig = make_rig()
        rig.supervisor.start()
        await until(live(rig))
        rig.controller.handle_page_event(Disposed(reason="network"))
        await until(lambda: rig.state.status is SupervisorStatus.WAITING)
        before = rig.state.next_try_in_s
        await rig.time.advance(0.25)
        after = rig.state.as_dict()
        assert before is not None
        assert after["next_try_in_s"] == pytest.approx(before - 0.25, abs=1e-3)
        await rig.supervisor.stop()
        return after

    state = asyncio.run(scenario())
    assert state["status"] == "waiting"
    assert state["restarts"] == 0  # counted when the new start is made
    assert state["last_reason"] == "connection_lost"
    assert state["last_detail"] == "network"
    assert set(state) >= {"restarts_by_reason", "failures_in_a_row", "paused_reason"}


@pytest.mark.parametrize(
    "bad",
    [
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"first_s": 0},
        {"cap_s": 0.5},
        {"factor": 0.5},
        {"quota_pause_s": 0},
    ],
)
def test_policy_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**bad)  # type: ignore[arg-type]


def test_nominal_never_overflows() -> None:
    assert BackoffPolicy().nominal(100_000) == 60.0
