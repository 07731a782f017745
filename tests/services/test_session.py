"""The session state machine through every transition, with small typed fakes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from avaturn_desktop.core.errors import (
    ApiError,
    AppError,
    AuthError,
    GoneError,
    NetworkError,
    NotFoundError,
    ServerError,
)
from avaturn_desktop.core.events import (
    AvatarStartedSpeakingPhrase,
    Disposed,
    Idle,
    PageEvent,
    PageGone,
    SdkError,
)
from avaturn_desktop.core.models import SdkSession, SdkSessionConfig, SessionCreate, SessionCreated
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState
from avaturn_desktop.core.tasks import SessionRecord
from avaturn_desktop.services.session import SessionBusyError, SessionController

S = SessionState


@dataclass
class FakeClient:
    create_error: Exception | None = None
    delete_error: Exception | None = None
    create_gate: asyncio.Event | None = None
    delete_gate: asyncio.Event | None = None
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: What the service's session lookup says: it has the session (True), it does not
    #: (False: 404), or an error to raise. A DELETE makes it False.
    holds: bool | Exception = True
    probes: int = 0

    async def create_session(self, request: SessionCreate | None = None) -> SessionCreated:
        if self.create_gate is not None:
            await self.create_gate.wait()
        if self.create_error is not None:
            raise self.create_error
        sid = f"s{len(self.created) + 1}"
        self.created.append(sid)
        return SessionCreated(session_id=sid, token=f"tok-{sid}")

    async def terminate_session(self, session_id: str) -> None:
        if self.delete_gate is not None:
            await self.delete_gate.wait()
        self.deleted.append(session_id)
        if self.delete_error is not None:
            raise self.delete_error
        self.holds = False

    async def get_sdk_session(self, token: str) -> SdkSession:
        self.probes += 1
        if isinstance(self.holds, Exception):
            raise self.holds
        if not self.holds:
            raise NotFoundError("gone", status=404)
        return SdkSession(
            id=token.removeprefix("tok-"),
            limited_access_token="room",
            room_url="http://sim/room",
            session_config=SdkSessionConfig(uses_stacked_alpha=False),
        )


@dataclass
class FakeStage:
    connect_error: Exception | None = None
    connect_gate: asyncio.Event | None = None
    tokens: list[str] = field(default_factory=list)
    disposed: int = 0
    #: Raised by connects after the first one (a reconnect).
    reconnect_error: Exception | None = None

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool
    ) -> str:
        self.tokens.append(token)
        if len(self.tokens) > 1 and self.reconnect_error is not None:
            raise self.reconnect_error
        if self.connect_gate is not None:
            await self.connect_gate.wait()
        if self.connect_error is not None:
            raise self.connect_error
        return "sid"

    async def dispose(self) -> None:
        self.disposed += 1


@dataclass
class FakeRegistry:
    open: dict[str, SessionRecord] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)

    def record_session(self, record: SessionRecord) -> None:
        self.open[record.session_id] = record

    def end_session(self, session_id: str, reason: str, *, at: float | None = None) -> None:
        self.open.pop(session_id)
        self.ended[session_id] = reason


@dataclass
class Rig:
    client: FakeClient
    stage: FakeStage
    registry: FakeRegistry
    controller: SessionController
    seen: list[SessionSnapshot]

    @property
    def states(self) -> list[SessionState]:
        return [s.state for s in self.seen]


def make_rig(**client_kw: Any) -> Rig:
    client, stage, registry = FakeClient(**client_kw), FakeStage(), FakeRegistry()
    never = asyncio.Event()

    async def sleep_forever(_: float) -> None:
        await never.wait()

    controller = SessionController(
        client,
        stage,
        api_host="http://sim",
        sdk_url="http://sim/sdk.js",
        registry=registry,
        sleep=sleep_forever,
    )
    seen: list[SessionSnapshot] = []
    controller.subscribe(seen.append)
    return Rig(client, stage, registry, controller, seen)


async def reach(controller: SessionController, state: SessionState) -> None:
    """Wait until the controller is in ``state`` (listening, not polling)."""
    reached = asyncio.Event()
    unsubscribe = controller.subscribe(lambda snap: snap.state is state and reached.set())
    try:
        if controller.state is not state:
            await asyncio.wait_for(reached.wait(), 5)
    finally:
        unsubscribe()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_start_goes_live_and_terminate_ends_by_user() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        assert await rig.controller.start(SessionCreate()) is True
        assert rig.controller.state is S.LIVE
        assert rig.controller.token == "tok-s1"
        assert "s1" in rig.registry.open
        await rig.controller.terminate()
        return rig

    rig = run(scenario())
    assert rig.states == [S.CREATING, S.CONNECTING, S.LIVE, S.TERMINATING, S.ENDED]
    assert rig.seen[-1].reason == EndReason.BY_USER.value
    assert rig.client.deleted == ["s1"] and rig.stage.disposed == 1
    assert rig.registry.ended == {"s1": EndReason.BY_USER.value}
    assert rig.controller.token is None


def test_double_start_is_refused() -> None:
    async def scenario() -> None:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        with pytest.raises(SessionBusyError, match="already live"):
            await rig.controller.start(SessionCreate())
        assert rig.client.created == ["s1"]

    run(scenario())


def test_create_failure_is_failed_with_the_service_message() -> None:
    rig = make_rig(create_error=AuthError("API key rejected", status=401))
    assert run(rig.controller.start(SessionCreate())) is False
    assert rig.states == [S.CREATING, S.FAILED]
    assert rig.seen[-1].detail == "API key rejected"
    assert rig.client.deleted == []


def test_connect_failure_ends_the_created_session_on_the_service() -> None:
    rig = make_rig()
    rig.stage.connect_error = NetworkError("The avatar did not connect within 30 s")
    assert run(rig.controller.start(SessionCreate())) is False
    assert rig.states == [S.CREATING, S.CONNECTING, S.FAILED]
    assert rig.client.deleted == ["s1"]
    assert rig.registry.ended == {"s1": "could not start"}


def test_failed_session_can_start_again() -> None:
    async def scenario() -> Rig:
        rig = make_rig(create_error=NetworkError("offline"))
        await rig.controller.start(SessionCreate())
        rig.client.create_error = None
        assert await rig.controller.start(SessionCreate())
        return rig

    assert run(scenario()).states[-3:] == [S.CREATING, S.CONNECTING, S.LIVE]


@pytest.mark.parametrize("stage_of_cancel", ["creating", "connecting"])
def test_cancel_while_starting(stage_of_cancel: str) -> None:
    async def scenario() -> Rig:
        gate = asyncio.Event()
        rig = make_rig(create_gate=gate if stage_of_cancel == "creating" else None)
        if stage_of_cancel == "connecting":
            rig.stage.connect_gate = gate
        start = asyncio.ensure_future(rig.controller.start(SessionCreate()))
        await reach(rig.controller, SessionState(stage_of_cancel))
        await rig.controller.terminate()  # Terminate during a start is a cancel
        assert await start is False
        return rig

    rig = run(scenario())
    assert rig.seen[-1].state is S.ENDED
    assert rig.seen[-1].reason == EndReason.CANCELLED.value
    if stage_of_cancel == "connecting":
        assert rig.client.deleted == ["s1"]  # nothing left burning on the service
    else:
        assert rig.client.deleted == []


def test_terminate_when_the_service_already_ended_it() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.client.delete_error = NotFoundError("gone", status=404)
        await rig.controller.terminate()
        return rig

    rig = run(scenario())
    assert rig.seen[-1].state is S.ENDED


def test_terminate_that_cannot_reach_the_service_fails_and_keeps_the_orphan() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.client.delete_error = NetworkError("offline")
        await rig.controller.terminate()
        return rig

    rig = run(scenario())
    assert rig.seen[-1].state is S.FAILED
    assert "ends by itself" in (rig.seen[-1].detail or "")
    assert "s1" in rig.registry.open  # offered for ending at the next start


async def settle(rig: Rig) -> None:
    """Let a claim the controller is checking run to its end."""
    checking = rig.controller._checking
    if checking is not None:
        await asyncio.wait_for(asyncio.shield(checking), 5)
    await asyncio.sleep(0)


#: What the page may say when a session ends on the service, in the simulator's words and the
#: service's, with the reason the app must show.
ENDINGS: list[tuple[PageEvent, EndReason, str]] = [
    # the simulator, when the session was DELETEd elsewhere: its error, then its SDK's dispose
    (
        SdkError(
            code="session_terminated", message="The session was terminated", reason="terminated"
        ),
        EndReason.SERVER,
        "The session was terminated",
    ),
    (Disposed(reason="terminated"), EndReason.SERVER, "terminated"),
    # the simulator's kill, and the service's own lifecycle error
    (
        SdkError(code="internal_error", message="The session was killed", reason="killed"),
        EndReason.SERVER,
        "The session was killed",
    ),
    (
        SdkError(code="internal_error", message="boom", kind="session_lifecycle_error"),
        EndReason.SERVER,
        "boom",
    ),
    (SdkError(code="limits_exceeded", message="quota"), EndReason.MAX_DURATION, "quota"),
    (
        SdkError(code="limits_exceeded", message="max", reason="max_duration"),
        EndReason.MAX_DURATION,
        "max",
    ),
    (SdkError(code="user_absent_timeout", message="nobody"), EndReason.USER_ABSENT, "nobody"),
    (SdkError(code="session_ended"), EndReason.SERVER, "session_ended"),
    (Disposed(reason="user_absent_timeout"), EndReason.USER_ABSENT, "user_absent_timeout"),
    (Disposed(reason="connection_lost"), EndReason.CONNECTION_LOST, "connection_lost"),
]


@pytest.mark.parametrize(("event", "reason", "detail"), ENDINGS)
def test_an_ending_the_service_confirms_shows_its_reason(
    event: PageEvent, reason: EndReason, detail: str
) -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.client.holds = False  # ended on the service (by someone else)
        rig.controller.handle_page_event(event)
        await reach(rig.controller, S.ENDED)
        return rig

    rig = run(scenario())
    assert rig.seen[-1].reason == reason.value
    assert rig.seen[-1].detail == detail
    assert rig.registry.ended == {"s1": reason.value}
    assert rig.client.probes == 1
    # asked to end it too, in case only the token is gone (a max duration ends by itself)
    assert rig.client.deleted == ([] if reason is EndReason.MAX_DURATION else ["s1"])


#: A lookup answer that means the session is over on the service.
GONE = [NotFoundError("x", status=404), GoneError("x", status=410), AuthError("x", status=401),
        ApiError("x", status=403)]  # fmt: skip


@pytest.mark.parametrize("answer", GONE, ids=lambda e: str(e.status))
def test_every_gone_answer_confirms_an_ending(answer: ApiError) -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.client.holds = answer
        rig.controller.handle_page_event(SdkError(code="session_terminated"))
        await reach(rig.controller, S.ENDED)
        return rig

    assert run(scenario()).seen[-1].reason == EndReason.SERVER.value


#: Every event that claims the session is over, without the avatar leaving the page.
ERROR_CLAIMS = [event for event, _reason, _detail in ENDINGS if isinstance(event, SdkError)]


@pytest.mark.parametrize("service", [True, NetworkError("offline"), ServerError("x", status=503)])
@pytest.mark.parametrize("event", ERROR_CLAIMS)
def test_a_forged_error_cannot_end_a_session_the_service_holds(
    event: SdkError, service: bool | Exception
) -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.client.holds = service
        rig.controller.handle_page_event(event)
        await settle(rig)
        return rig

    rig = run(scenario())
    assert rig.controller.state is S.LIVE
    assert rig.client.deleted == []
    assert rig.client.probes == 1
    assert rig.stage.disposed == 0  # the avatar was not touched


@pytest.mark.parametrize("service", [True, NetworkError("offline")])
@pytest.mark.parametrize(
    "event",
    [
        Disposed(reason="terminated"),
        Disposed(reason="the avatar page stopped"),
        Disposed(reason="x"),
    ],
)
def test_a_lost_avatar_on_a_live_session_is_reconnected(
    event: Disposed, service: bool | Exception
) -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.client.holds = service
        rig.controller.handle_page_event(event)
        await settle(rig)
        return rig

    rig = run(scenario())
    assert rig.controller.state is S.LIVE
    assert rig.stage.tokens == ["tok-s1", "tok-s1"]  # the same session, joined again
    assert rig.stage.disposed == 1
    assert rig.client.deleted == []


def test_a_lost_avatar_that_cannot_come_back_ends_the_session() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.stage.reconnect_error = AppError("The avatar could not connect: gone.")
        rig.controller.handle_page_event(Disposed(reason="channel closed"))
        await reach(rig.controller, S.ENDED)
        return rig

    rig = run(scenario())
    assert rig.seen[-1].reason == EndReason.CONNECTION_LOST.value
    assert "channel closed" in (rig.seen[-1].detail or "")
    assert "could not connect" in (rig.seen[-1].detail or "")
    assert rig.client.deleted == ["s1"]  # nothing left burning on the service


def test_a_page_that_died_ends_the_session_as_a_lost_connection() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.controller.handle_page_event(PageGone(reason="the avatar page stopped"))
        await reach(rig.controller, S.ENDED)
        return rig

    rig = run(scenario())
    assert rig.seen[-1].reason == EndReason.CONNECTION_LOST.value
    assert rig.seen[-1].detail == "the avatar page stopped"
    assert rig.client.deleted == ["s1"]  # nothing left burning on the service


def test_the_page_cannot_say_it_died() -> None:
    from avaturn_desktop.core.events import PageMessageError, parse_page_event

    with pytest.raises(PageMessageError, match="unknown type"):
        parse_page_event('{"type": "page_gone", "reason": "forged"}')


def test_claims_while_one_is_checked_are_not_checked_twice() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        for _ in range(50):
            rig.controller.handle_page_event(SdkError(code="session_ended"))
            rig.controller.handle_page_event(Disposed(reason="terminated"))
        await settle(rig)
        return rig

    rig = run(scenario())
    assert rig.client.probes == 1
    assert rig.controller.state is S.LIVE


def test_the_answer_to_the_apps_own_dispose_is_not_a_claim() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.controller.handle_page_event(Disposed(reason=None))
        await settle(rig)
        return rig

    rig = run(scenario())
    assert (rig.client.probes, rig.stage.disposed, rig.controller.state) == (0, 0, S.LIVE)


def test_idle_ends_the_session_only_when_the_sdk_could_have_gone_idle() -> None:
    now = [1000.0]

    async def scenario() -> Rig:
        rig = make_rig()
        rig.controller._clock = lambda: now[0]
        rig.controller.keep_alive = False
        await rig.controller.start(SessionCreate())
        now[0] += 200
        rig.controller.handle_page_event(Idle())  # too early: the SDK waits five minutes
        await settle(rig)
        assert rig.controller.state is S.LIVE
        now[0] += 200
        rig.controller.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        now[0] += 200
        rig.controller.handle_page_event(Idle())  # 200 s after the last speech: too early
        await settle(rig)
        assert rig.controller.state is S.LIVE
        now[0] += 100
        rig.controller.handle_page_event(Idle())
        await reach(rig.controller, S.ENDED)
        return rig

    rig = run(scenario())
    assert rig.seen[-1].reason == EndReason.SDK_IDLE.value
    assert rig.client.deleted == ["s1"]


def test_idle_with_keep_alive_changes_nothing() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.controller._clock = lambda: 10**9
        rig.controller.handle_page_event(Idle())
        await asyncio.sleep(0)
        return rig

    assert run(scenario()).controller.state is S.LIVE


def test_max_duration_watchdog_ends_the_session() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        fire = asyncio.Event()

        async def sleep(_: float) -> None:
            await fire.wait()

        rig.controller._sleep = sleep
        await rig.controller.start(SessionCreate(max_duration=60))
        fire.set()
        await reach(rig.controller, S.ENDED)
        return rig

    rig = run(scenario())
    assert rig.seen[-1].reason == EndReason.MAX_DURATION.value
    assert rig.client.deleted == []  # the service ended it itself


def test_shutdown_ends_the_live_session() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        await rig.controller.shutdown()
        return rig

    rig = run(scenario())
    assert rig.seen[-1].reason == EndReason.APP_QUIT.value
    assert rig.client.deleted == ["s1"]


def test_snapshot_times() -> None:
    clock = iter([100.0, 105.0, 3700.0, 4000.0])
    rig = make_rig()
    rig.controller._clock = lambda: next(clock)
    run(rig.controller.start(SessionCreate(max_duration=3600)))
    snap = rig.controller.snapshot
    assert snap.elapsed(160.0) == 60.0
    assert snap.time_left(3000.0) == 700.0


def test_quit_lets_an_ending_under_way_reach_the_service() -> None:
    async def scenario() -> Rig:
        slow_delete = asyncio.Event()
        rig = make_rig(delete_gate=slow_delete)
        await rig.controller.start(SessionCreate())
        rig.client.holds = False
        rig.controller.handle_page_event(Disposed(reason="the page died"))
        await reach(rig.controller, S.TERMINATING)
        quitting = asyncio.ensure_future(rig.controller.shutdown())  # the app quits right then
        for _ in range(5):
            await asyncio.sleep(0)
        slow_delete.set()  # the service answers the DELETE a little later
        await quitting
        return rig

    rig = run(scenario())
    assert rig.client.deleted == ["s1"]
    assert rig.seen[-1].state is S.ENDED
