"""Avatars side by side in the runtime (Qt-free): slots made on demand within the quota, each
with its own session form, registry entries and phases of connecting; the control API making a
slot for ``session/start?slot=N`` (409 past the quota) and answering the bench's calls. The
service is the simulator over real loopback HTTP; the pages are small typed fakes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from avaturn_desktop.control.api import EventHub, create_app
from avaturn_desktop.core.backend import Backend
from avaturn_desktop.core.catalog import VOICES
from avaturn_desktop.core.events import FirstFrame, SdkLoaded
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.core.settings import SessionDefaults, Settings, SlotSettings
from avaturn_desktop.services.connect_phases import ConnectWatch
from avaturn_desktop.services.runtime import (
    AvatarSlot,
    NoSuchSlotError,
    Runtime,
    SlotQuotaError,
)
from avaturn_desktop.services.session import SessionBusyError
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.tasklog import TaskLogStore

A, B = VOICES[0].id, VOICES[1].id
TOKEN = "test-token"


@dataclasses.dataclass
class FakePage:
    """A page that connects at once and does what it is told."""

    index: int
    connects: int = 0
    voices: list[str] = dataclasses.field(default_factory=list)

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool
    ) -> str:
        self.connects += 1
        await asyncio.sleep(0)
        return f"page-{self.index}"

    async def dispose(self) -> None:
        await asyncio.sleep(0)

    async def cancel_all(self) -> None:
        await asyncio.sleep(0)

    async def change_voice(self, voice_id: str) -> None:
        self.voices.append(voice_id)


def make_runtime(simulator: Any, tmp_path: Path, settings: Settings | None = None) -> Runtime:
    backend = Backend("simulator", simulator.base_url, simulator.sdk_url, "k")
    return Runtime.open(
        backend=backend,
        settings=SettingsStore(settings or Settings()),
        store=TaskLogStore(tmp_path / "log.sqlite3"),
        data_dir=tmp_path,
    )


async def reach(slot: AvatarSlot, *states: SessionState) -> None:
    """Until the slot's session is in one of ``states`` (10 s at most)."""
    reached = asyncio.Event()
    unsubscribe = slot.controller.subscribe(lambda s: s.state in states and reached.set())
    try:
        if slot.controller.state not in states:
            await asyncio.wait_for(reached.wait(), 10)
    finally:
        unsubscribe()


async def live(slot: AvatarSlot) -> None:
    await reach(slot, SessionState.LIVE, SessionState.FAILED)
    assert slot.controller.state is SessionState.LIVE, slot.controller.snapshot


def test_slots_are_made_on_demand_within_the_quota(simulator: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = make_runtime(simulator, tmp_path)
        try:
            runtime.add_slot(FakePage(0))
            with pytest.raises(NoSuchSlotError, match="cannot add one"):
                runtime.ensure_slot(1)  # no window gave a stage factory
            pages: list[FakePage] = []

            def factory(index: int) -> FakePage:
                pages.append(FakePage(index))
                return pages[-1]

            added: list[int] = []
            runtime.subscribe_slots(lambda slot: added.append(slot.index))
            runtime.set_stage_factory(factory)
            assert runtime.can_add_slot
            assert runtime.ensure_slot(0) is runtime.slot(0)  # there already
            second = runtime.ensure_slot(1)
            assert (second.index, second.label, added) == (1, "Avatar 2", [1])
            assert not runtime.can_add_slot
            with pytest.raises(SlotQuotaError, match="limit of 2"):
                runtime.ensure_slot(2)
            with pytest.raises(SlotQuotaError):
                runtime.add_next_slot()
            with pytest.raises(NoSuchSlotError):
                runtime.ensure_slot(-1)
            assert len(runtime.slots) == 2
            runtime.settings.update(slot_quota=4)
            runtime.ensure_slot(3)  # the ones before it are made first, in order
            assert [s.index for s in runtime.slots] == [0, 1, 2, 3]
            assert [p.index for p in pages] == [1, 2, 3] and added == [1, 2, 3]
            assert runtime.state(3)["app"]["slots"] == 4
        finally:
            await runtime.shutdown()

    asyncio.run(scenario())


def test_each_slot_has_its_own_session_form_and_registry_entries(
    simulator: Any, tmp_path: Path
) -> None:
    settings = Settings(
        session=SessionDefaults(voice_id=A),
        slots=[SlotSettings(), SlotSettings(session=SessionDefaults(voice_id=B, max_duration=600))],
    )

    async def scenario() -> None:
        runtime = make_runtime(simulator, tmp_path, settings)
        try:
            runtime.add_slot(FakePage(0))
            runtime.set_stage_factory(FakePage)
            first, second = runtime.slot(0), runtime.ensure_slot(1)
            third = runtime.ensure_slot(1)
            assert third is second
            assert first.defaults().voice_id == A and second.defaults().voice_id == B
            assert second.session_request({"avatar_id": "max_20241010"}).max_duration == 600
            first.start_session()
            second.start_session()
            await asyncio.gather(live(first), live(second))
            ids = [s.controller.session_id for s in (first, second)]
            records = {r.session_id: r for r in runtime.store.sessions()}
            assert [records[i].slot for i in ids] == [0, 1]  # type: ignore[index]
            assert [records[i].voice_id for i in ids] == [A, B]  # type: ignore[index]
            # the phases of connecting, per slot, in the log too
            phases = second.connect.current
            assert phases is not None and phases.outcome == "live"
            assert phases.session_id == ids[1] and phases.voice_id == B
            record = runtime.store.get_session(ids[1])  # type: ignore[arg-type]
            assert record is not None and record.requested_at and record.live_at
            # a slot's form, remembered: slot 0's is Settings.session
            second.remember(SessionDefaults(voice_id=VOICES[2].id))
            first.remember(SessionDefaults(voice_id=VOICES[3].id))
            value = runtime.settings.value
            assert value.slot_session(1).voice_id == VOICES[2].id
            assert value.session.voice_id == VOICES[3].id
            assert value.slot_session(5).voice_id == VOICES[3].id  # none of its own
            state = runtime.state(1)
            assert state["slot"] == 1 and state["voice_id"] == B
            assert state["connect"]["outcome"] == "live"
        finally:
            await runtime.shutdown()

    asyncio.run(scenario())
    with TaskLogStore(tmp_path / "log.sqlite3") as store:
        assert store.open_sessions() == []  # both ended at shutdown


# -- connect phases ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Warnings:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def warning(self, text: str) -> None:
        self.texts.append(text)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, float | None]]] = []

    def record_phases(self, session_id: str, **phases: float | None) -> None:
        self.calls.append((session_id, phases))


def watch(threshold: float = 5.0) -> tuple[ConnectWatch, Clock, Warnings, Recorder]:
    clock, warnings, recorder = Clock(), Warnings(), Recorder()
    connect = ConnectWatch(
        1,
        recorder=recorder,
        notices=warnings,
        threshold_s=lambda: threshold,
        label=lambda: "Avatar 2",
        clock=clock,
    )
    return connect, clock, warnings, recorder


def snap(state: SessionState, **fields: Any) -> SessionSnapshot:
    return SessionSnapshot(state=state, **fields)


def test_a_slow_connect_is_announced_once_with_its_slow_phase() -> None:
    connect, clock, warnings, recorder = watch()
    seen: list[str] = []
    connect.subscribe(lambda p: seen.append(p.outcome))
    connect.on_snapshot(snap(SessionState.CREATING, voice_id=A))
    clock.now = 100.3
    connect.on_snapshot(snap(SessionState.CONNECTING, session_id="s1", created_at=100.3))
    clock.now = 106.0
    connect.handle_page_event(SdkLoaded())
    connect.handle_page_event(SdkLoaded())  # a second one changes nothing
    connect.on_snapshot(snap(SessionState.LIVE, session_id="s1", live_at=106.5))
    assert len(warnings.texts) == 1  # 6.5 s to live: over 5 s already
    clock.now = 106.7
    connect.handle_page_event(FirstFrame(source="paint"))
    connect.handle_page_event(FirstFrame(source="paint"))
    phases = connect.current
    assert phases is not None
    assert phases.durations_s() == pytest.approx(
        {"create": 0.3, "sdk": 5.7, "join": 0.5, "first_frame": 0.2}
    )
    assert phases.total_s == pytest.approx(6.7)
    (text,) = warnings.texts
    assert "Avatar 2 was slow to connect" in text and "SDK loaded 5.7 s" in text
    assert [c[0] for c in recorder.calls] == ["s1"] * 4
    assert [set(c[1]) for c in recorder.calls] == [
        {"requested_at"},
        {"sdk_ready_at"},
        {"live_at"},
        {"first_frame_at"},
    ]
    assert seen[0] == "connecting" and seen[-1] == "live"
    # the next session starts a new timeline (and may warn again)
    connect.on_snapshot(snap(SessionState.CREATING))
    assert connect.current is not None and connect.current.session_id is None
    assert len(connect.history) == 2


def test_a_fast_connect_is_not_announced_and_the_frame_may_come_first() -> None:
    connect, clock, warnings, _ = watch(threshold=5)
    connect.on_snapshot(snap(SessionState.CREATING))
    connect.on_snapshot(snap(SessionState.CONNECTING, session_id="s", created_at=100.1))
    connect.handle_page_event(SdkLoaded())
    clock.now = 100.8
    connect.handle_page_event(FirstFrame(source="video"))  # before the controller heard
    connect.on_snapshot(snap(SessionState.LIVE, session_id="s", live_at=100.9))
    assert warnings.texts == []
    assert connect.current is not None and connect.current.first_frame_at == 100.8


@pytest.mark.parametrize(
    ("end", "outcome"), [(SessionState.FAILED, "failed"), (SessionState.ENDED, "ended")]
)
def test_a_start_that_fails_or_is_cancelled_keeps_its_phases_and_reason(
    end: SessionState, outcome: str
) -> None:
    connect, clock, warnings, recorder = watch(threshold=0.1)
    connect.on_snapshot(snap(SessionState.CREATING))
    clock.now = 101
    connect.on_snapshot(snap(end, reason="could not start", detail="Unknown voice id"))
    connect.handle_page_event(SdkLoaded())  # late: ignored
    connect.handle_page_event(FirstFrame())
    phases = connect.current
    assert phases is not None and phases.outcome == outcome
    assert phases.reason == "could not start Unknown voice id"
    assert phases.sdk_ready_at is None and phases.first_frame_at is None
    assert warnings.texts == [] and recorder.calls == []  # never created: nothing to record
    assert phases.as_json()["phases_s"] == {
        "create": None,
        "sdk": None,
        "join": None,
        "first_frame": None,
    }


def test_a_listener_or_a_recorder_that_fails_does_not_stop_the_watch() -> None:
    connect, _clock, _warnings, _ = watch()

    class Broken:
        def record_phases(self, session_id: str, **phases: float | None) -> None:
            raise OSError("disk full")

    connect._recorder = Broken()

    def bad(_p: Any) -> None:
        raise RuntimeError("listener")

    connect.subscribe(bad)
    connect.on_snapshot(snap(SessionState.CREATING))
    connect.on_snapshot(snap(SessionState.CONNECTING, session_id="s", created_at=100.0))
    assert connect.current is not None and connect.current.session_id == "s"


# -- the control API over it --------------------------------------------------------------------


@pytest.fixture
def api_runtime(simulator: Any, tmp_path: Path) -> Callable[[], Any]:
    async def make() -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
        runtime = make_runtime(simulator, tmp_path)
        runtime.add_slot(FakePage(0))
        runtime.set_stage_factory(FakePage)
        hub = EventHub(runtime)
        app = create_app(
            runtime, token=lambda: TOKEN, allowed_hosts=lambda: frozenset({"test"}), events=hub
        )
        hub.watch()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as http:
            try:
                yield runtime, http
            finally:
                hub.close()
                await runtime.shutdown()

    return make


def test_the_api_makes_a_slot_for_a_start_and_refuses_past_the_quota(
    api_runtime: Callable[[], Any],
) -> None:
    async def scenario() -> None:
        async for runtime, http in api_runtime():
            assert (await http.get("/api/v1/state", params={"slot": 1})).status_code == 404
            started = await http.post(
                "/api/v1/session/start", params={"slot": 1}, json={"voice_id": B}
            )
            assert started.status_code == 202, started.text
            await live(runtime.slot(1))
            state = (await http.get("/api/v1/state", params={"slot": 1})).json()
            assert state["slot"] == 1 and state["voice_id"] == B
            over = await http.post("/api/v1/session/start", params={"slot": 2})
            assert over.status_code == 409 and "limit of 2" in over.json()["detail"]
            for bad in ("-1", "x", "64"):
                answer = await http.post("/api/v1/session/start", params={"slot": bad})
                assert answer.status_code == 422, (bad, answer.text)
            assert len(runtime.slots) == 2
            slots = (await http.get("/api/v1/slots")).json()
            assert slots["quota"] == 2
            assert [(s["slot"], s["state"]) for s in slots["slots"]] == [(0, "idle"), (1, "live")]
            said = await http.post("/api/v1/say", params={"slot": 1}, json={"text": "Hi there."})
            assert said.status_code == 200
            figures = (await http.get("/api/v1/metrics/latency")).json()
            assert set(figures) == {"voices"}
            connect = (await http.get("/api/v1/metrics/connect")).json()
            assert connect["slots"][1]["sessions"][0]["outcome"] == "live"
            assert connect["slots"][0]["sessions"] == []

    asyncio.run(scenario())


def test_the_api_manages_the_voice_library(api_runtime: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async for runtime, http in api_runtime():
            added = await http.post(
                "/api/v1/voices", json={"voice_id": "custom1", "name": "Narrator", "tags": ["x"]}
            )
            assert added.status_code == 200, added.text
            assert added.json()["voice"]["name"] == "Narrator"
            for bad in ({"voice_id": ""}, {"voice_id": "a b"}, {"voice_id": "v", "extra": 1}, {}):
                answer = await http.post("/api/v1/voices", json=bad)
                assert answer.status_code == 422, (bad, answer.text)
                assert isinstance(answer.json()["detail"], str)
            voices = (await http.get("/api/v1/voices")).json()["voices"]
            assert {"custom1", A} <= {v["voice_id"] for v in voices}
            refused = await http.post("/api/v1/voices/check", json={"voice_id": "custom1"})
            assert refused.json()["accepted"] is False
            assert runtime.voices.get("custom1").check.accepted is False  # type: ignore[union-attr]
            taken = await http.post("/api/v1/voices/check", json={"voice_id": A})
            assert taken.json()["verdict"] == "taken"

    asyncio.run(scenario())


def test_the_websocket_op_starts_a_new_slot_too(api_runtime: Callable[[], Any]) -> None:
    from avaturn_desktop.control.api import ApiProblem, run_op

    async def scenario() -> None:
        async for runtime, _http in api_runtime():
            result = await run_op(runtime, "session.start", {"slot": 1, "voice_id": B})
            assert "session" in result and len(runtime.slots) == 2
            with pytest.raises(ApiProblem) as over:
                await run_op(runtime, "session.start", {"slot": 2})
            assert over.value.status == 409
            with pytest.raises(ApiProblem) as missing:
                await run_op(runtime, "say", {"slot": 3, "text": "x"})
            assert missing.value.status == 404
            await live(runtime.slot(1))

    asyncio.run(scenario())


class HeldEndPage(FakePage):
    """A page whose leaving waits until it is let go: its session stays terminating."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.let_go = asyncio.Event()

    async def dispose(self) -> None:
        await self.let_go.wait()


def _with_a_session_being_ended(
    simulator: Any, tmp_path: Path, check: Callable[[AvatarSlot, HeldEndPage, str], Any]
) -> None:
    """A slot whose live session was ended and stays terminating until its page is let go;
    then ``check(slot, page, first_session_id)`` (a coroutine function)."""

    async def scenario() -> None:
        runtime = make_runtime(simulator, tmp_path)
        page = HeldEndPage(0)
        try:
            slot = runtime.add_slot(page)
            slot.start_session()
            await live(slot)
            first = slot.controller.snapshot.session_id
            assert first is not None
            slot.end_session()
            await reach(slot, SessionState.TERMINATING)
            await check(slot, page, first)
        finally:
            page.let_go.set()
            await runtime.shutdown()

    asyncio.run(scenario())


def test_a_start_while_the_last_session_is_ended_waits_for_that_end(
    simulator: Any, tmp_path: Path
) -> None:
    """Start pressed right after a session died, while its end is still on its way: the new
    session starts once the last one has ended, not "busy". One such start at a time."""

    async def check(slot: AvatarSlot, page: HeldEndPage, first: str) -> None:
        started = slot.start_session()  # not refused
        with pytest.raises(SessionBusyError, match="terminating"):
            slot.start_session()  # one waiting start is enough
        await asyncio.sleep(0.05)
        assert slot.controller.state is SessionState.TERMINATING and not started.done()

        page.let_go.set()
        assert await asyncio.wait_for(started, 10)  # it went live
        assert slot.controller.state is SessionState.LIVE
        assert slot.controller.snapshot.session_id not in (None, first)
        assert page.connects == 2

    _with_a_session_being_ended(simulator, tmp_path, check)


def test_an_end_after_a_waiting_start_wins(simulator: Any, tmp_path: Path) -> None:
    async def check(slot: AvatarSlot, page: HeldEndPage, _first: str) -> None:
        started = slot.start_session()
        slot.end_session()  # the later word
        page.let_go.set()
        await reach(slot, SessionState.ENDED)
        await asyncio.sleep(0.05)
        assert started.cancelled()
        assert slot.controller.state is SessionState.ENDED and page.connects == 1
        slot.start_session()  # and a start after that is taken again
        await live(slot)

    _with_a_session_being_ended(simulator, tmp_path, check)
