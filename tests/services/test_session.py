"""The session state machine through every transition, with small typed fakes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from avaturn_desktop.core.errors import AuthError, NetworkError, NotFoundError
from avaturn_desktop.core.models import SessionCreate, SessionCreated
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


@dataclass
class FakeStage:
    connect_error: Exception | None = None
    connect_gate: asyncio.Event | None = None
    tokens: list[str] = field(default_factory=list)
    disposed: int = 0

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool
    ) -> str:
        self.tokens.append(token)
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


@dataclass
class Event:
    type: str
    code: str = ""
    message: str = ""
    reason: str | None = None


@pytest.mark.parametrize(
    ("event", "reason", "deleted"),
    [
        (Event("sdk_error", "limits_exceeded", "max_duration reached"), EndReason.MAX_DURATION, []),
        (Event("disposed", reason="channel closed"), EndReason.CONNECTION_LOST, ["s1"]),
        (Event("idle"), EndReason.SDK_IDLE, ["s1"]),
    ],
)
def test_page_events_that_end_the_session(
    event: Event, reason: EndReason, deleted: list[str]
) -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        rig.controller.keep_alive = False
        await rig.controller.start(SessionCreate())
        rig.controller.handle_page_event(event)
        await reach(rig.controller, S.ENDED)
        return rig

    rig = run(scenario())
    assert rig.seen[-1].reason == reason.value
    assert rig.client.deleted == deleted


def test_idle_with_keep_alive_changes_nothing() -> None:
    async def scenario() -> Rig:
        rig = make_rig()
        await rig.controller.start(SessionCreate())
        rig.controller.handle_page_event(Event("idle"))
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
        rig.controller.handle_page_event(Event("disposed", reason="the page died"))
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
