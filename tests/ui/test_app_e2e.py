"""End to end: the assembled app on the simulator, in a real QtWebEngine page.

Create a session from the panel, see the simulated avatar go live in the page, terminate it;
quit with a live session; start again after a crash and be offered the orphan.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import qasync

from avaturn_desktop.core.session_state import EndReason, SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.core.tasks import SessionRecord
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui import shell as shell_mod
from tests.assembled import bridge_ready, open_app, reach

pytestmark = pytest.mark.web


def test_create_live_and_terminate(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell, store = app.shell, app.runtime.store
            shell.show()
            await bridge_ready(app)
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


def test_orphans_of_a_crashed_run_are_offered_and_ended(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TaskLogStore(tmp_path / "tasklog.sqlite3")
    asked: list[list[str]] = []

    def ask(cls: Any, parent: Any, records: list[Any]) -> bool:
        asked.append([r.session_id for r in records])
        return True

    monkeypatch.setattr(shell_mod.OrphanDialog, "ask", classmethod(ask))

    async def scenario() -> str:
        async with httpx.AsyncClient() as http:
            client = AvaturnClient(http, api_key="local-simulator", base_url=simulator.base_url)
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

            async with open_app(simulator, tmp_path) as second:
                await second.shell.offer_orphans()
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

    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell = app.shell
            await bridge_ready(app)
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
