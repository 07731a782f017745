"""The simulator as a child process: up without blocking the caller's loop, locked with a key
that never shows on its command line or in its environment, and gone with its parent however
the parent dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avaturn_desktop.simulator.child import ChildSimulator, ChildSimulatorError, start_child

ROOT = Path(__file__).resolve().parents[2]
KEY = "child-key-0123456789"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped counts: it runs no code)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def children() -> Iterator[Callable[..., ChildSimulator]]:
    started: list[ChildSimulator] = []

    def start(**kwargs: Any) -> ChildSimulator:
        child = start_child(**kwargs)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


def test_up_locked_and_stopped_cleanly(children, monkeypatch):
    monkeypatch.setenv("AVATURN_API_KEY", "users-real-key-must-not-leak")
    child = children(api_key=KEY, voices=["clone-1"])
    with pytest.raises(ChildSimulatorError):
        _ = child.base_url  # not known before it is up

    async def wait() -> float:
        # The caller's loop keeps turning while the child starts.
        loop = asyncio.get_running_loop()
        gaps: list[float] = []

        async def tick() -> None:
            last = loop.time()
            while True:
                await asyncio.sleep(0.005)
                now = loop.time()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        async with asyncio.timeout(30):
            await child.started()
        ticker.cancel()
        return max(gaps, default=0.0)

    worst_gap = asyncio.run(wait())
    assert worst_gap < 0.1, worst_gap
    assert child.spawn_to_ready_s is not None and child.spawn_to_ready_s > 0
    assert child.base_url.startswith("http://127.0.0.1:")
    assert child.sdk_url == child.base_url + "/sim/web-sdk.js"

    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"conversation_engine": {"type": "text-echo", "tts": {"voice_id": "clone-1"}}}
    assert httpx.post(child.base_url + "/api/v1/sessions", headers=auth, json=body).is_success
    other = {"Authorization": "Bearer other"}
    assert httpx.post(child.base_url + "/api/v1/sessions", headers=other).status_code == 401
    assert httpx.get(child.base_url + "/_sim/state").status_code == 401
    assert httpx.get(child.base_url + "/_sim/state", headers=auth).status_code == 200
    stage = {"Origin": "avaturn://stage"}
    assert httpx.get(child.sdk_url, headers=stage).status_code == 200
    assert httpx.get(child.sdk_url, headers={"Origin": "https://evil.example"}).status_code == 403

    if Path(f"/proc/{child.pid}").exists():
        cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{child.pid}/environ").read_bytes()
        assert KEY.encode() not in cmdline and KEY.encode() not in environ
        assert b"users-real-key-must-not-leak" not in environ
        assert b"AVATURN_API_KEY" not in environ

    assert child.stop() == 0  # end of its stdin: a clean exit
    assert gone(child.pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(child.base_url + "/sim/web-sdk.js")
    assert child.stop() == 0  # again: harmless


def test_a_child_that_cannot_start_says_why(children):
    child = children(extra_args=["--port", "70000"])

    async def wait() -> None:
        async with asyncio.timeout(30):
            await child.started()

    with pytest.raises(ChildSimulatorError) as failed:
        asyncio.run(wait())
    message = str(failed.value)
    assert "exit code 2" in message and "--port" in message, message
    with pytest.raises(ChildSimulatorError):
        child.wait_ready(1)


def test_a_prebound_child_is_reachable_before_it_is_up(children):
    """The app binds the child's socket: its URL is known at the spawn, a request made before
    the child serves waits for it, and once the child is gone nobody answers."""
    child = children(api_key=KEY, prebind=True)
    assert child.address is not None and child.address.startswith("http://127.0.0.1:")
    assert child.address_sdk_url == child.address + "/sim/web-sdk.js"
    with pytest.raises(ChildSimulatorError):
        _ = child.base_url  # "up" still means: it said it serves
    asked_before_up = not child.ready
    stage = {"Origin": "avaturn://stage"}
    answer = httpx.get(child.address_sdk_url, headers=stage, timeout=30)
    assert answer.status_code == 200
    child.wait_ready(30)
    assert child.base_url == child.address
    assert asked_before_up  # the request above was made before the child was up
    assert child.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(child.address_sdk_url, timeout=5)


@pytest.mark.parametrize("mode", ["both", "stdin-only", "before-ready", "prebound"])
def test_the_child_dies_with_its_parent_on_sigkill(mode, until):
    args = {
        "both": [],
        "stdin-only": ["--stdin-only"],
        "before-ready": ["--before-ready"],
        "prebound": ["--prebind", "--before-ready"],
    }[mode]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-m", "tests.simulator.child_parent", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    child_pid = 0
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # the parent prints once the child is up (or spawned)
        child_pid_text, base_url = line.split()
        child_pid = int(child_pid_text)
        if base_url != "-":
            assert httpx.get(base_url + "/sim/web-sdk.js").status_code == 200
        assert not gone(child_pid)
        killed_at = time.monotonic()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        until(lambda: gone(child_pid), within=10.0)
        took = time.monotonic() - killed_at
        assert took < 10
        if base_url != "-":
            with pytest.raises(httpx.ConnectError):
                httpx.get(base_url + "/sim/web-sdk.js")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout:
            parent.stdout.close()
        if child_pid and not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)
