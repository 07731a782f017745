"""The app's Qt side in a benchmark child process, built as ``avaturn_desktop.app.run`` builds it.

Only for child processes (one QApplication each); the parent never imports Qt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from avaturn_desktop import logs, qtenv
from avaturn_desktop.core import paths

T = TypeVar("T")


def start_qt() -> Any:
    """Environment, logging (as the app: console WARNING, file DEBUG), schemes, QApplication."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    qtenv.prepare_environment(headless=True)
    logs.setup("WARNING", paths.data_dir() / "logs")
    from PySide6.QtWidgets import QApplication

    from avaturn_desktop.ui import qtlog
    from avaturn_desktop.ui.web.scheme import register_schemes

    qtlog.install()
    register_schemes()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    from avaturn_desktop.ui.gc_guard import MainThreadCollector

    MainThreadCollector(parent=app).start()  # as the app: collections on the Qt thread only
    return app


def run_async(app: Any, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    import qasync

    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        return runner.run(main())


@dataclasses.dataclass
class AppParts:
    shell: Any
    speaking: Any  # ui.speaking.SpeakingUi
    client: Any
    store: Any
    http: Any
    base_url: str


@contextlib.asynccontextmanager
async def app_shell(
    base_url: str | None,
    store_path: Path,
    *,
    on_request: Callable[[Any], Awaitable[None]] | None = None,
) -> AsyncIterator[AppParts]:
    """The Shell with its speaking docks over ``store_path``, shown; torn down as the app does.

    ``base_url`` None runs the in-process simulator, as the app does with no API key.
    ``on_request`` is an httpx request hook (to time when a request leaves).
    """
    import httpx

    from avaturn_desktop.app import SIMULATOR_KEY, Backend
    from avaturn_desktop.core.settings import Settings
    from avaturn_desktop.services.client import AvaturnClient
    from avaturn_desktop.services.tasklog import TaskLogStore
    from avaturn_desktop.ui.shell import Shell

    simulator = None
    if base_url is None:
        from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

        simulator = SimulatorServer(SimulatorConfig(port=0))
        simulator.start()
        backend = Backend("simulator", simulator.base_url, simulator.sdk_url, SIMULATOR_KEY)
    else:
        backend = Backend("external", base_url, base_url + "/sim/web-sdk.js", SIMULATOR_KEY)
    store = TaskLogStore(store_path)
    hooks = {"request": [on_request]} if on_request is not None else {}
    http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        timeout=httpx.Timeout(10.0),
        event_hooks=hooks,
    )
    built = None
    try:
        client = AvaturnClient(http, api_key=backend.api_key, base_url=backend.api_base)
        settings = Settings(backend="simulator")
        shell = Shell(settings=settings, backend=backend, client=client, store=store)
        speaking = getattr(shell, "speaking", None)
        if speaking is None:  # a Shell without the speaking docks yet: add them here
            speaking = built = _speaking(shell, client, store, settings)
        shell.window.resize(1440, 900)
        shell.show()
        await shell.wait_exposed()
        from avaturn_desktop.ui.gc_guard import MainThreadCollector

        MainThreadCollector.freeze_long_lived()  # as the app does once its window is up
        yield AppParts(shell, speaking, client, store, http, backend.api_base)
        await shell.controller.shutdown()
        if built is not None:
            await built.shutdown()
        await shell.shutdown()
    finally:
        await http.aclose()
        store.close()
        if simulator is not None:
            simulator.stop()


def _speaking(shell: Any, client: Any, store: Any, settings: Any) -> Any:
    from PySide6.QtWidgets import QDockWidget

    from avaturn_desktop.ui.speaking import SpeakingUi

    speaking = SpeakingUi(
        client=client,
        store=store,
        controller=shell.controller,
        stage=shell.stage,
        settings=settings,
        messages=shell.messages,
        session_presenter=shell.session,
    )
    for name, title, widget, area in speaking.docks:
        dock = QDockWidget(title, shell.window)
        dock.setObjectName(f"dock.{name}")
        dock.setWidget(widget)
        shell.window.addDockWidget(area, dock)
    return speaking


async def go_live(shell: Any) -> str:
    """Create a session from the session panel's defaults; its id once live."""
    shell.start_session()
    if not await shell.wait_live_or_failed():
        raise RuntimeError("the session did not go live")
    session_id: str = shell.controller.snapshot.session_id
    return session_id
