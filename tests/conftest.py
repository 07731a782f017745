"""Shared fixtures: a headless Qt, an isolated data dir, and the simulator on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Qt reads these once, before the first QApplication: set them before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu")
if hasattr(os, "geteuid") and os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
# The API key must never come from the developer's shell into a test.
os.environ.pop("AVATURN_API_KEY", None)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("AVATURN_DESKTOP_HOME", str(home))
    return home


@pytest.fixture
def qloop(qapp: Any) -> Iterator[Any]:
    """qasync's loop on pytest-qt's QApplication; unhandled task errors fail the test."""
    import asyncio
    import gc

    import qasync

    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield loop
    loop.close()
    asyncio.set_event_loop(None)
    # qasync's timer objects end up in reference cycles: collect them here, on the Qt thread.
    # Left to chance, a collection in a simulator thread deletes them there, and a timer of a
    # deleted object later fires (a crash) or Qt warns "Timers cannot be stopped from another
    # thread".
    gc.collect()
    assert not errors, errors


@pytest.fixture
def simulator() -> Iterator[object]:
    """A fresh simulator on a free loopback port, speaking fast so tests stay quick."""
    from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

    server = SimulatorServer(SimulatorConfig(port=0, chars_per_second=400.0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _register_page_scheme() -> None:
    # The avatar page's scheme must be registered before the first QApplication exists.
    try:
        from avaturn_desktop.ui.web.scheme import register_schemes
    except ImportError:  # pragma: no cover - QtWebEngine missing: the web tests skip
        return
    register_schemes()


_register_page_scheme()


@pytest.fixture(autouse=True)
def _memory_keyring() -> Iterator[dict[tuple[str, str], str]]:
    """Tests never touch the developer's real keyring: an in-memory one stands in."""
    import keyring
    from keyring.backend import KeyringBackend

    store: dict[tuple[str, str], str] = {}

    class MemoryKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> str | None:
            return store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            store.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        yield store
    finally:
        keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def _collect_loop_garbage(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that ran a qasync loop, collect its Qt garbage on the Qt thread.

    Whatever fixture made the loop: garbage left to chance may be collected in a simulator
    thread, which deletes Qt timer objects there, and a later event crashes the process.
    """
    yield
    if {"qloop", "loop"} & set(request.fixturenames):
        import gc

        gc.collect()
