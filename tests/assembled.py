"""The assembled app for in-process tests: built by ``app.assemble``, as the app builds itself.

No test builds the runtime, the window or the control API by hand: they all come from the one
entry the app uses, so a wiring or shutdown-order change is tested everywhere at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent

from avaturn_desktop.app import Assembled, LaunchOptions, assemble
from avaturn_desktop.core.backend import Backend
from avaturn_desktop.core.session_state import SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.session import SessionController

SIM_KEY = "local-simulator"


@contextlib.asynccontextmanager
async def open_app(
    simulator: Any | None,
    home: Path,
    *,
    settings: Settings | None = None,
    api_key: str = SIM_KEY,
    control_port: int | None = None,
    http_hooks: dict[str, list[Any]] | None = None,
) -> AsyncIterator[Assembled]:
    """The whole app on ``simulator`` (None: the app starts its own), data under ``home``."""
    backend = (
        None
        if simulator is None
        else Backend("simulator", simulator.base_url, simulator.sdk_url, api_key)
    )
    options = LaunchOptions(
        settings=settings or Settings(),
        backend=backend,
        data_dir=home,
        control_port=control_port,
        http_hooks=http_hooks,
    )
    try:
        async with assemble(options) as app:
            yield app
    finally:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


async def reach(controller: SessionController, state: SessionState, wait_s: float = 30) -> None:
    """Wait for ``state``; a failure on the way fails at once, with its reason."""
    stops = {state, SessionState.FAILED}
    reached = asyncio.Event()
    unsubscribe = controller.subscribe(lambda snap: snap.state in stops and reached.set())
    try:
        if controller.state not in stops:
            await asyncio.wait_for(reached.wait(), wait_s)
    finally:
        unsubscribe()
    snap = controller.snapshot
    assert snap.state is state, f"{snap.state}: {snap.reason} {snap.detail}"


async def bridge_ready(app: Assembled) -> None:
    view = app.shell.view
    ready = asyncio.Event()
    view.bridge.ready_changed.connect(lambda ok: ok and ready.set())
    if not view.bridge.ready:
        await asyncio.wait_for(ready.wait(), 30)
