"""Crash safety: the app's sending side is killed with SIGKILL in the middle of a flood of
sends, while the simulator, in another process, lives on. After the restart, every task the
service acknowledged is in the task log with its task id, and the orphaned session is offered
for termination (and really ended when the user says yes)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from avaturn_desktop.app import Backend
from avaturn_desktop.core.tasks import TaskState
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui import shell as shell_mod
from tests.reliability.conftest import FaultLedger
from tests.reliability.tally import REPO

KEY = "crash-test-key"
FLOOD = 400


def _line(stream: IO[str], pattern: str) -> re.Match[str]:
    for raw in stream:
        if match := re.search(pattern, raw):
            return match
    raise AssertionError(f"the process ended before printing {pattern!r}")


@pytest.fixture
def sim_process() -> Iterator[str]:
    """The simulator in its own process (it survives the crash); yields its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "avaturn_desktop",
            "simulator",
            "--api-key",
            KEY,
            "--latency-ms",
            "4",
            "--chars-per-second",
            "400",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    try:
        yield _line(proc.stdout, r"listening on (http://\S+)").group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        proc.stdout.close()


def flood_and_kill(base_url: str, home: Path, rng: random.Random) -> tuple[str, int]:
    """Run the flooding child; SIGKILL it after a random number of acknowledgements."""
    env = {**os.environ, "AVATURN_DESKTOP_HOME": str(home), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.flood_child", base_url, KEY, str(FLOOD)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert child.stdout is not None
    try:
        session_id = _line(child.stdout, r"^live (\S+)").group(1)
        kill_after = rng.randint(5, 120)
        for _ in range(kill_after):
            _line(child.stdout, r"^ack ")
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    return session_id, kill_after


def offer_orphans(base_url: str, home: Path, loop: asyncio.AbstractEventLoop) -> None:
    """The restarted app (built as the app builds itself): it offers the open sessions, and
    the user says yes."""
    from avaturn_desktop.app import LaunchOptions, assemble

    backend = Backend("external", base_url, base_url + "/sim/web-sdk.js", KEY)

    async def restart() -> None:
        async with assemble(LaunchOptions(backend=backend, data_dir=home)) as app:
            await app.shell.offer_orphans()

    loop.run_until_complete(restart())
    from PySide6.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.mark.web
@pytest.mark.timeout(120)
@pytest.mark.parametrize("rounds", [2, pytest.param(8, marks=pytest.mark.slow)])
def test_sigkill_mid_flood_loses_no_acknowledged_task(
    rounds: int,
    sim_process: str,
    tmp_path: Path,
    loop: asyncio.AbstractEventLoop,
    ledger: FaultLedger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "app-home"
    rng = random.Random(rounds)
    asked: list[list[str]] = []

    def ask(cls: Any, parent: Any, records: list[Any]) -> bool:
        asked.append([r.session_id for r in records])
        return True

    monkeypatch.setattr(shell_mod.OrphanDialog, "ask", classmethod(ask))
    for _ in range(rounds):
        session_id, acks = flood_and_kill(sim_process, home, rng)
        ledger.inject("sigkill_mid_flood")
        state = httpx.get(
            f"{sim_process}/_sim/state", headers={"Authorization": f"Bearer {KEY}"}
        ).json()
        (session,) = [s for s in state["sessions"] if s["session_id"] == session_id]
        tasks = session["tasks"]
        assert len(tasks) >= acks

        with TaskLogStore(home / "tasklog.sqlite3") as store:
            rows = store.query(session_id=session_id)
            logged = {r.task_id: r for r in rows if r.task_id}
            missing = [t for t in tasks if t["task_id"] not in logged]
            # at most the one request in flight at the kill: the service took it, the app never
            # read the answer; its line is in the log all the same, sent and not acknowledged
            assert len(missing) <= 1, missing
            for task in missing:
                assert task is tasks[-1]
                (row,) = [r for r in rows if r.text == task["text"]]
                assert row.task_id is None and row.state in (TaskState.QUEUED, TaskState.SENT)
            for task in tasks:
                if task["task_id"] in logged:
                    assert logged[task["task_id"]].text == task["text"]
            assert set(logged) <= {t["task_id"] for t in tasks}
            assert [r.session_id for r in store.open_sessions()] == [session_id]

            offer_orphans(sim_process, home, loop)
            assert asked[-1] == [session_id]
            assert store.open_sessions() == []
        ended = httpx.get(
            f"{sim_process}/_sim/state", headers={"Authorization": f"Bearer {KEY}"}
        ).json()
        (after,) = [s for s in ended["sessions"] if s["session_id"] == session_id]
        assert after["state"] == "ended" and after["end_reason"] == "terminated"
