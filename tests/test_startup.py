"""Start-up as a user meets it: the command line, the checks before Qt, a real run, a crash."""

from __future__ import annotations

import ctypes.util
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from avaturn_desktop import app, cli, qtenv

ROOT = Path(__file__).resolve().parents[1]


def run_app(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AVATURN_DESKTOP_HOME": str(home)}
    env.pop("AVATURN_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "avaturn_desktop", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "avaturn_desktop", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for command in ("run", "simulator", "log"):
        assert command in result.stdout


def test_missing_system_libraries_are_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(sys, "platform", "linux")
    missing = {"xcb-icccm", "xcb-keysyms"}
    sonames = {soname for name, soname, _ in qtenv.XCB_LIBRARIES if name in missing}
    real_open, real_find = qtenv.ctypes.CDLL, ctypes.util.find_library

    def load(soname: str) -> object:
        if soname in sonames:
            raise OSError(f"{soname}: cannot open shared object file")
        return real_open(soname)

    monkeypatch.setattr(qtenv.ctypes, "CDLL", load)
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: None if name in missing else real_find(name)
    )
    args = cli.build_parser().parse_args(["run"])
    assert app.main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "sudo apt install" in err[0]
    assert "libxcb-icccm4" in err[0] and "libxcb-keysyms1" in err[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check is Linux's")
def test_present_libraries_are_found_without_running_ldconfig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The web engine's libraries are here (it runs in these tests): each is opened by its
    soname, and nothing runs ldconfig or gcc (~4 ms a library) before the window."""
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: pytest.fail(f"looked for {name}"))
    assert qtenv.missing_packages() == []


def test_no_display_is_said_plainly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert app.main(cli.build_parser().parse_args(["run"])) == 2
    assert "--headless" in capsys.readouterr().err


def test_root_turns_the_sandbox_off_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QTWEBENGINE_DISABLE_SANDBOX", raising=False)
    monkeypatch.setattr(qtenv, "running_as_root", lambda: True)
    notes = qtenv.prepare_environment(headless=True)
    assert os.environ["QTWEBENGINE_DISABLE_SANDBOX"] == "1"
    assert any("sandbox" in note for note in notes)
    assert "--disable-gpu" in os.environ["QTWEBENGINE_CHROMIUM_FLAGS"]


@pytest.mark.web
def test_a_session_goes_live_on_the_built_in_simulator(tmp_path: Path) -> None:
    result = run_app(tmp_path, "--headless", "--exit-after", "live")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "session live after" in result.stdout, result.stderr[-3000:]
    # the built-in simulator ran as a child process, and is gone with the app
    found = re.search(
        r"the local simulator runs at http://127\.0\.0\.1:\d+ \(pid (\d+)\)", result.stderr
    )
    assert found, result.stderr[-3000:]
    assert not Path(f"/proc/{found.group(1)}").exists() or _zombie(int(found.group(1)))
    # Quitting with the session live ended it, and the registry says so.
    with sqlite3.connect(tmp_path / "tasklog.sqlite3") as db:
        rows = db.execute("SELECT session_id, ended_at, end_reason FROM sessions").fetchall()
    assert len(rows) == 1 and rows[0][1] is not None, rows


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.web
def test_after_a_kill_the_next_start_ends_the_orphan(tmp_path: Path) -> None:
    env = {**os.environ, "AVATURN_DESKTOP_HOME": str(tmp_path)}
    seen: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "avaturn_desktop", "--headless", "--auto-start"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                seen.append(line)
                if "avaturn.session" in line and ": live" in line:
                    break
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(30)
    if not any(": live" in line for line in seen):
        pytest.fail("the app never went live:\n" + "".join(seen[-30:]))
    # kill -9 of the app takes its simulator with it: no orphaned child process
    (child,) = {m.group(1) for line in seen if (m := re.search(r"\(pid (\d+)\)", line))}
    deadline = time.monotonic() + 10
    while not _zombie(int(child)):
        assert time.monotonic() < deadline, f"the simulator (pid {child}) outlived the app"
        time.sleep(0.05)
    db_path = tmp_path / "tasklog.sqlite3"
    with sqlite3.connect(db_path) as db:
        open_rows: list[Any] = db.execute(
            "SELECT session_id FROM sessions WHERE ended_at IS NULL"
        ).fetchall()
    assert len(open_rows) == 1

    result = run_app(tmp_path, "--headless", "--exit-after", "live")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "left over from an earlier run" in result.stderr
    with sqlite3.connect(db_path) as db:
        still_open = db.execute("SELECT session_id FROM sessions WHERE ended_at IS NULL").fetchall()
    assert still_open == []


@pytest.mark.web
def test_the_built_in_simulator_is_locked_to_the_app(tmp_path: Path) -> None:
    """Any web page the user visits could reach a loopback server: the app's own simulator
    takes only the key the app made for this run, from the stage's origin, at its own address."""
    import httpx

    env = {**os.environ, "AVATURN_DESKTOP_HOME": str(tmp_path)}
    env.pop("AVATURN_API_KEY", None)
    with subprocess.Popen(
        [sys.executable, "-m", "avaturn_desktop", "--headless", "--auto-start"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        url = None
        try:
            for line in proc.stdout:
                if m := re.search(r"the local simulator runs at (http://\S+)", line):
                    url = m.group(1)
                if "avaturn.session" in line and ": live" in line:
                    break
            assert url is not None
            state = httpx.get(f"{url}/_sim/state")
            assert state.status_code == 401
            guessed = {"Authorization": "Bearer local-simulator"}
            assert httpx.get(f"{url}/_sim/state", headers=guessed).status_code == 401
            create = httpx.post(f"{url}/api/v1/sessions", json={}, headers=guessed)
            assert create.status_code == 401
            page = {"Origin": "https://evil.example", "Authorization": "Bearer x"}
            assert httpx.get(f"{url}/_sim/state", headers=page).status_code in (401, 403)
            rebound = {"Host": "evil.example", "Authorization": "Bearer x"}
            assert httpx.get(f"{url}/_sim/state", headers=rebound).status_code == 403
            preflight = httpx.options(
                f"{url}/api/v1/sessions",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert preflight.headers.get("access-control-allow-origin") in (None, "")
        finally:
            proc.terminate()
            proc.wait(30)
