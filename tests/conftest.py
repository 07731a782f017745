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
os.environ.pop("ELEVENLABS_API_KEY", None)
os.environ.pop("AVATURN_DESKTOP_LLM_API_KEY", None)


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
    from avaturn_desktop.ui.pyside_import import drop_feature_import

    drop_feature_import()  # as the app does once Qt is imported
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


@pytest.fixture(scope="session", autouse=True)
def _collect_on_the_main_thread() -> Iterator[None]:
    """As the app does (ui/gc_guard.py): no automatic collection, which could run in a
    simulator or server thread and delete Qt objects there; the tests collect instead."""
    import gc

    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture(autouse=True)
def _no_quit_on_the_last_window(request: pytest.FixtureRequest) -> None:
    """As the app does (``app.main``): closing its last window does not quit the application.
    Qt's default quits it, and a quit application stays quit for the rest of the session:
    every later event loop returns at once, and a later test's timers never fire."""
    if {"qapp", "qtbot", "qloop"} & set(request.fixturenames):
        request.getfixturevalue("qapp").setQuitOnLastWindowClosed(False)


@pytest.fixture(autouse=True)
def _collect_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect on the main thread after each test: fully after a Qt test, else the young."""
    import gc

    yield
    qt = {"qapp", "qtbot", "qloop", "loop"} & set(request.fixturenames)
    if qt:
        gc.collect()
    else:
        gc.collect(0)
