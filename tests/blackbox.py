"""The app and the simulator as separate processes, driven from outside as a user's tools do
(the control API, ``ctl``, the simulator's ``/_sim`` routes): shared by the black-box tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SIM_KEY = "blackbox-simulator-key"


def wait_for(predicate: Callable[[], Any], what: Any, timeout: float = 30.0) -> Any:
    """Poll a condition on another process (bounded; each poll is a real request)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.05)


def run_simulator(*extra: str, port: int = 0) -> subprocess.Popen[str]:
    """``avaturn-desktop simulator`` in its own process (read its URL with :func:`base_url`)."""
    command = [sys.executable, "-m", "avaturn_desktop", "simulator", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--api-key", SIM_KEY, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def base_url(proc: subprocess.Popen[str]) -> str:
    """The base URL the simulator printed on its first line."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    assert match, line
    return match.group(1).rstrip("/")


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the app ends its session and quits), then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def simulator() -> Iterator[str]:
    """``avaturn-desktop simulator`` in its own process; its base URL."""
    proc = run_simulator("--chars-per-second", "25")
    try:
        yield base_url(proc)
    finally:
        stop(proc)


def app_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "AVATURN_DESKTOP_HOME": str(home), "AVATURN_API_KEY": SIM_KEY}
    env.pop("AVATURN_DESKTOP_CONTROL_TOKEN", None)
    return env


def start_app(home: Path, base: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "avaturn_desktop",
            "--headless",
            "--control-port",
            "0",
            "--api-base",
            base,
            "--sdk-url",
            f"{base}/sim/web-sdk.js",
            *extra,
        ],
        cwd=ROOT,
        env=app_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Api:
    def __init__(self, home: Path) -> None:
        found = wait_for(lambda: _discovery(home), "control.json")
        self.url = found["url"]
        self.token = (home / "control-token").read_text(encoding="utf-8").strip()
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=20
        )
        # closed with the test's Api even when an assertion ends the test before its own
        # close: a socket left open would be reported, as an error, in whichever test the
        # collector happens to run in next
        weakref.finalize(self, self.http.close)

    def state(self) -> dict[str, Any]:
        answer = self.http.get("/api/v1/state")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def start_live(self, what: str = "live") -> str:
        """Start a session, wait until it is live, and return its id."""
        assert self.http.post("/api/v1/session/start", json={}).status_code == 202
        wait_for(lambda: self.state()["session"]["state"] == "live", what, 40)
        session_id: str = self.state()["session"]["id"]
        return session_id

    def say_until_the_first_speaks(self, lines: list[str]) -> None:
        """``say`` each line, then wait until the first of them is being spoken."""
        for line in lines:
            assert self.http.post("/api/v1/say", json={"text": line}).status_code == 200
        wait_for(lambda: self.state()["current_text"] == lines[0], "the first line speaking")


def _discovery(home: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((home / "control.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def spoken_texts(base: str, session_id: str) -> list[tuple[str, str]]:
    """``(text, status)`` of every task the simulator received for the session, in order."""
    state = httpx.get(f"{base}/_sim/state", headers={"Authorization": f"Bearer {SIM_KEY}"}).json()
    (session,) = [s for s in state["sessions"] if s["session_id"] == session_id]
    return [(t["text"], t["status"]) for t in session["tasks"]]


def ctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avaturn_desktop", "ctl", *args],
        cwd=ROOT,
        env=app_env(home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
