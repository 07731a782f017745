"""Kiosk mode's watchdog from outside: ``--headless --kiosk --control-port 0`` against a
simulator whose avatar's picture is faulted (black from its command line, then frozen over
``/_sim/faults``). Each time the app finds it on its own, a new live session follows, and
``/metrics`` counts the restart and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.blackbox import SIM_KEY, Api, base_url, run_simulator, start_app, stop, wait_for

pytestmark = [pytest.mark.web, pytest.mark.timeout(180)]

SIM_AUTH = {"Authorization": f"Bearer {SIM_KEY}"}


def metric(api: Api, name: str, **labels: str) -> float:
    """One series of ``/metrics`` (0 when it is not there yet)."""
    text = api.http.get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def live_session(api: Api, other_than: str | None = None) -> str | None:
    session = api.state()["session"]
    if session["state"] == "live" and session["id"] != other_than:
        return str(session["id"])
    return None


def test_a_kiosk_finds_a_black_then_a_frozen_avatar_and_comes_back_live(tmp_path: Path) -> None:
    sim = run_simulator("--chars-per-second", "50", "--video-fault", "black")
    url = base_url(sim)
    home = tmp_path / "kiosk"
    app = start_app(home, url, "--kiosk")
    try:
        api = Api(home)
        first = wait_for(lambda: live_session(api), "a live session", 30)

        # 1. black from the start (the simulator's flag): found, and the session replaced
        wait_for(
            lambda: metric(api, "avaturn_stage_problems_total", problem="black") >= 1,
            "the black picture to be found",
            20,
        )
        faults = httpx.put(f"{url}/_sim/faults", json={}, headers=SIM_AUTH)
        assert faults.status_code == 200, faults.text
        second = wait_for(lambda: live_session(api, first), "a new live session", 15)
        wait_for(
            lambda: metric(api, "avaturn_supervisor_restarts_total", reason="heartbeat_lost") >= 1,
            "the restart to be counted",
            10,
        )
        assert api.state()["supervisor"]["last_reason"] == "heartbeat_lost"

        # 2. frozen while live (set at run time): found, replaced, counted
        faults = httpx.put(f"{url}/_sim/faults", json={"video_fault": "freeze"}, headers=SIM_AUTH)
        assert faults.status_code == 200, faults.text
        wait_for(
            lambda: metric(api, "avaturn_stage_problems_total", problem="frozen") >= 1,
            "the frozen picture to be found",
            20,
        )
        httpx.put(f"{url}/_sim/faults", json={}, headers=SIM_AUTH)
        third = wait_for(lambda: live_session(api, second), "a new live session", 10)
        assert third not in (first, second)
        restarts = metric(api, "avaturn_supervisor_restarts_total", reason="heartbeat_lost")
        assert restarts >= 2

        # the new session plays: it stays live past the watchdog's times with nothing found
        wait_for(
            lambda: (api.state()["session"]["elapsed_s"] or 0) >= 6,
            "the new session to run 6 s",
            20,
        )
        state = api.state()
        assert state["session"]["id"] == third and state["stage"]["problems"] == []
        assert state["stage"]["heartbeat_age_s"] < 5
        assert metric(api, "avaturn_supervisor_restarts_total", reason="heartbeat_lost") == (
            restarts
        )
        assert metric(api, "avaturn_page_heartbeat_age_seconds") < 5
        api.http.close()
    finally:
        stop(app)
        stop(sim)
