"""Fixtures of the reliability and security suite: the tally, fault ledgers, simulators, a
qasync loop and the GUI-loop watchdog."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer
from tests.reliability.tally import Tally, summary_path

_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Iterator[Tally]:
    yield _TALLY
    _TALLY.write(summary_path())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_PASSED] = report.passed


_PASSED = pytest.StashKey[bool]()


class FaultLedger:
    """The faults one test injects; they count as survived only if the test passes."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def inject(self, kind: str, count: int = 1) -> None:
        if count:
            self.kinds[kind] += count


@pytest.fixture
def ledger(tally: Tally, request: pytest.FixtureRequest) -> Iterator[FaultLedger]:
    book = FaultLedger()
    yield book
    tally.tests.append(request.node.nodeid)
    for kind, count in book.kinds.items():
        tally.faults(kind, count)
    if request.node.stash.get(_PASSED, False):
        tally.survived(book.kinds)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorServer]]:
    """``make_sim(**config)``: a started simulator on loopback, stopped at teardown."""
    servers: list[SimulatorServer] = []

    def make(**overrides: Any) -> SimulatorServer:
        overrides.setdefault("chars_per_second", 300.0)
        server = SimulatorServer(SimulatorConfig(**overrides))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def loop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    """The app's kind of loop (qasync on the Qt event loop); unhandled task errors fail."""
    import qasync

    qloop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(qloop)
    errors: list[dict[str, Any]] = []
    qloop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield qloop
    qloop.close()
    asyncio.set_event_loop(None)
    assert not errors, errors
