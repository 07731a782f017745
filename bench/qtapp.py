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
    # As ``app._main_rest`` does before it imports httpx: httpx would otherwise import its
    # command-line tool (click, rich, pygments: ~7 MB here) that the app never loads.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    qtenv.prepare_environment(headless=True)
    logs.setup("WARNING", paths.data_dir() / "logs")
    from PySide6.QtWidgets import QApplication

    from avaturn_desktop.ui.pyside_import import drop_feature_import

    drop_feature_import()  # as the app
    from avaturn_desktop.ui import qtlog
    from avaturn_desktop.ui.web.scheme import register_schemes

    qtlog.install()
    register_schemes()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    from avaturn_desktop.ui.gui_priority import raise_gui_thread

    raise_gui_thread()  # as the app
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
    app: Any = None  # app.Assembled


@contextlib.asynccontextmanager
async def app_shell(
    base_url: str | None,
    store_path: Path,
    *,
    on_request: Callable[[Any], Awaitable[None]] | None = None,
    control_port: int | None = None,
) -> AsyncIterator[AppParts]:
    """The app as ``avaturn_desktop.app`` builds it (``assemble``), with its data in
    ``store_path``'s folder, shown; torn down as the app does.

    ``base_url`` None runs the built-in simulator, as the app does with no API key.
    ``on_request`` is an httpx request hook (to time when a request leaves).
    """
    from avaturn_desktop.app import SIMULATOR_KEY, Backend, LaunchOptions, assemble
    from avaturn_desktop.core.settings import Settings

    backend = (
        None
        if base_url is None
        else Backend("external", base_url, base_url + "/sim/web-sdk.js", SIMULATOR_KEY)
    )
    options = LaunchOptions(
        settings=Settings(backend="simulator"),
        backend=backend,
        data_dir=store_path.parent,
        http_hooks={"request": [on_request]} if on_request is not None else None,
        control_port=control_port,
    )
    async with assemble(options) as app:
        shell = app.shell
        shell.window.resize(1440, 900)
        shell.show()
        await shell.wait_exposed()
        await shell.wait_stage_loaded()
        from avaturn_desktop.ui.gc_guard import MainThreadCollector

        MainThreadCollector.freeze_long_lived()  # as the app does once its window is up
        runtime = app.runtime
        yield AppParts(
            shell,
            shell.speaking,
            runtime.client,
            runtime.store,
            runtime.http,
            runtime.backend.api_base,
            app,
        )


async def go_live(shell: Any) -> str:
    """Create a session from the session panel's defaults; its id once live."""
    shell.start_session()
    if not await shell.wait_live_or_failed():
        raise RuntimeError("the session did not go live")
    session_id: str = shell.controller.snapshot.session_id
    return session_id
