"""End to end: the assembled app on the simulator, in a real QtWebEngine page.

Create a session from the panel, see the simulated avatar go live in the page, terminate it;
quit with a live session; start again after a crash and be offered the orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent

from avaturn_desktop.app import Backend
from avaturn_desktop.core.session_state import EndReason, SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.core.tasks import SessionRecord
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui import shell as shell_mod
from avaturn_desktop.ui.shell import Shell

pytestmark = pytest.mark.web


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


async def bridge_ready(shell: Shell) -> None:
    ready = asyncio.Event()
    shell.view.bridge.ready_changed.connect(lambda ok: ok and ready.set())
    if not shell.view.bridge.ready:
        await asyncio.wait_for(ready.wait(), 30)


@contextlib.asynccontextmanager
async def open_shell(
    simulator: Any, client: AvaturnClient, store: TaskLogStore
) -> AsyncIterator[Shell]:
    """The assembled app on the simulator; torn down as the app does, then deleted."""
    backend = Backend("simulator", simulator.base_url, simulator.sdk_url, "local-simulator")
    shell = Shell(settings=Settings(), backend=backend, client=client, store=store)
    try:
        yield shell
    finally:
        await shell.controller.shutdown()
        await shell.shutdown()
        shell.window.close()
        shell.window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def sim_client(http: httpx.AsyncClient, simulator: Any) -> AvaturnClient:
    return AvaturnClient(http, api_key="local-simulator", base_url=simulator.base_url)


def test_create_live_and_terminate(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    store = TaskLogStore(tmp_path / "log.sqlite3")

    async def scenario() -> None:
        async with (
            httpx.AsyncClient() as http,
            open_shell(simulator, sim_client(http, simulator), store) as shell,
        ):
            shell.show()
            await bridge_ready(shell)
            shell.session_panel.create_button.click()
            await reach(shell.controller, SessionState.LIVE)
            session_id = shell.controller.session_id
            assert shell.session_panel.session_id.text() == session_id
            assert shell.session_panel.state_label.text() == "Live"
            assert not shell.session_panel.create_button.isEnabled()
            state = simulator.snapshot()
            live = [s for s in state["sessions"] if s["session_id"] == session_id]
            assert live and live[0]["viewers"] >= 1, state
            assert [r.session_id for r in store.open_sessions()] == [session_id]

            shell.session_panel.terminate_button.click()
            await reach(shell.controller, SessionState.ENDED)
            assert shell.controller.snapshot.reason == EndReason.BY_USER.value
            assert "terminated by you" in shell.session_panel.state_label.text()
            assert store.open_sessions() == []
            (ended,) = [
                s for s in simulator.snapshot()["sessions"] if s["session_id"] == session_id
            ]
            assert ended["state"] == "ended", ended
            assert ended["end_reason"] == "terminated", ended

    qloop.run_until_complete(scenario())
    store.close()


def test_orphans_of_a_crashed_run_are_offered_and_ended(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    asked: list[list[str]] = []

    def ask(cls: Any, parent: Any, records: list[Any]) -> bool:
        asked.append([r.session_id for r in records])
        return True

    monkeypatch.setattr(shell_mod.OrphanDialog, "ask", classmethod(ask))

    async def scenario() -> str:
        async with httpx.AsyncClient() as http:
            client = sim_client(http, simulator)
            # What a run killed mid-session leaves: a session on the service, recorded as
            # open in the registry, never ended.
            created = await client.create_session(Settings().session.to_request())
            orphan = created.session_id
            store.record_session(
                SessionRecord(
                    session_id=orphan,
                    backend=simulator.base_url,
                    avatar_id="jane_20240829",
                    voice_id=None,
                    created_at=time.time(),
                    max_duration=3600,
                )
            )
            assert [r.session_id for r in store.open_sessions()] == [orphan]

            async with open_shell(simulator, client, store) as second:
                await second.offer_orphans()
            return orphan

    orphan = qloop.run_until_complete(scenario())
    assert asked == [[orphan]]
    assert store.open_sessions() == []
    gone = httpx.post(
        f"{simulator.base_url}/api/v1/sessions/{orphan}/tasks",
        json={"text": "Anyone there?"},
        headers={"Authorization": "Bearer local-simulator"},
    )
    assert gone.status_code == 404  # really ended on the service, not only in the registry
    store.close()


def test_a_crashed_page_ends_the_session_clearly_and_the_stage_comes_back(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path
) -> None:
    import os
    import signal

    store = TaskLogStore(tmp_path / "log.sqlite3")

    async def scenario() -> None:
        async with (
            httpx.AsyncClient() as http,
            open_shell(simulator, sim_client(http, simulator), store) as shell,
        ):
            await bridge_ready(shell)
            assert await shell.controller.start(Settings().session.to_request())
            session_id = shell.controller.session_id
            ready_again = asyncio.Event()
            shell.view.bridge.ready_changed.connect(lambda ok: ok and ready_again.set())
            os.kill(shell.view.page().renderProcessPid(), signal.SIGKILL)
            await reach(shell.controller, SessionState.ENDED)
            assert shell.controller.snapshot.reason == EndReason.CONNECTION_LOST.value
            (ended,) = [
                s for s in simulator.snapshot()["sessions"] if s["session_id"] == session_id
            ]
            assert ended["state"] == "ended"  # nothing left burning on the service
            await asyncio.wait_for(ready_again.wait(), 30)
            assert await shell.controller.start(Settings().session.to_request())

    qloop.run_until_complete(scenario())
    store.close()
