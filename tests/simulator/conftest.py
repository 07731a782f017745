"""Fixtures for the simulator's tests: servers with any config, a REST client, a viewer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets

from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorServer]]:
    """``make_sim(**config)``: a started simulator (stopped at teardown); speaks fast by default."""
    servers: list[SimulatorServer] = []

    def make(**overrides: Any) -> SimulatorServer:
        overrides.setdefault("chars_per_second", 400.0)
        server = SimulatorServer(SimulatorConfig(**overrides))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def sim(make_sim: Callable[..., SimulatorServer]) -> SimulatorServer:
    return make_sim()


@pytest.fixture
def client(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers=AUTH, timeout=10) as http:
        yield http


class Viewer:
    """An event-channel client, as the Web SDK would be (use inside ``asyncio.run``)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url.replace("http://", "ws://") + f"/_sdk/v0/sessions/events?token={token}"
        self.ws: Any = None

    async def __aenter__(self) -> Viewer:
        self.ws = await websockets.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def next(self, within: float = 5.0, *, captions: bool = False) -> dict[str, Any]:
        """The next message (``sim_caption`` skipped unless asked for)."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), within)
            message: dict[str, Any] = json.loads(raw)
            if captions or message["type"] != "sim_caption":
                return message

    async def until(self, type_: str, within: float = 5.0) -> list[dict[str, Any]]:
        """Messages up to and including the first of ``type_``."""
        seen: list[dict[str, Any]] = []
        while True:
            message = await self.next(within)
            seen.append(message)
            if message["type"] == type_:
                return seen

    async def closed(self, within: float = 5.0) -> tuple[int | None, str | None, list[Any]]:
        """Wait for the server to close; returns (code, reason, messages received before)."""
        messages: list[Any] = []
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(self.ws.recv(), within)))
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code if rcvd else None, rcvd.reason if rcvd else None, messages)


@pytest.fixture
def viewer() -> Callable[[str, str], Viewer]:
    return Viewer


def wait_for(predicate: Callable[[], Any], within: float = 5.0, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something truthy (a condition, not a fixed wait)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@pytest.fixture
def until() -> Callable[..., Any]:
    return wait_for


def session_view(sim: SimulatorServer, session_id: str) -> dict[str, Any]:
    return next(s for s in sim.snapshot()["sessions"] if s["session_id"] == session_id)


@pytest.fixture
def view() -> Callable[[SimulatorServer, str], dict[str, Any]]:
    return session_view
