"""Kiosk mode from outside: ``--headless --kiosk --control-port 0`` against a simulator with a
time scale, watched through the control API and ``/metrics`` as a supervisor's tools would.

Every way a session ends (killed on the service, its maximum duration, the service itself
going away and coming back) is followed by a live session again within 10 s, counted in
``/metrics``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.blackbox import SIM_KEY, Api, base_url, run_simulator, start_app, stop, wait_for

pytestmark = [pytest.mark.web, pytest.mark.timeout(180)]

SIM_AUTH = {"Authorization": f"Bearer {SIM_KEY}"}


def restarts(api: Api) -> float:
    """The supervisor's restarts, summed over reasons, as ``/metrics`` says."""
    text = api.http.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("avaturn_supervisor_restarts_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def live_again(api: Api, old_id: str | None, within: float = 10.0) -> str:
    """The id of a live session other than ``old_id``, reached within ``within`` seconds."""
    started = time.monotonic()

    def check() -> str | None:
        session = api.state()["session"]
        if session["state"] == "live" and session["id"] != old_id:
            return str(session["id"])
        return None

    session_id: str = wait_for(check, f"a new live session (after {old_id})", within)
    assert time.monotonic() - started <= within
    return session_id


def test_a_kiosk_comes_back_live_after_every_ending(tmp_path: Path) -> None:
    # max_duration 3600 s / time scale 600 = 6 s real: the service ends it by itself
    sim = run_simulator("--time-scale", "600", "--chars-per-second", "50")
    url = base_url(sim)
    port = int(url.rsplit(":", 1)[1])
    home = tmp_path / "kiosk"
    app = start_app(home, url, "--kiosk")
    try:
        api = Api(home)
        assert api.state()["app"]["kiosk"] is True
        first = live_again(api, None, 30)
        assert api.state()["supervisor"]["status"]
        assert api.http.get("/api/v1/health").json()["ok"] is True

        # 1. killed on the service
        before = restarts(api)
        killed = httpx.post(f"{url}/_sim/sessions/{first}/kill", headers=SIM_AUTH)
        assert killed.status_code == 200, killed.text
        second = live_again(api, first)
        assert restarts(api) > before

        # 2. its maximum duration (the simulator's clock runs 600x)
        before = restarts(api)
        third = live_again(api, second, 15)
        assert restarts(api) > before
        reasons = api.state()["supervisor"]["restarts_by_reason"]
        assert any("max" in reason for reason in reasons), reasons

        # 3. the service goes away and comes back on the same address
        stop(sim)
        wait_for(lambda: api.state()["session"]["state"] != "live", "the session to drop", 20)
        before = restarts(api)
        sim = run_simulator("--time-scale", "10", "--chars-per-second", "50", port=port)
        assert base_url(sim) == url
        live_again(api, third, 20)
        assert restarts(api) > before
        assert re.search(
            r"avaturn_session_state\{[^}]*\"live\"\} 1\.0", api.http.get("/metrics").text
        )
        api.http.close()
    finally:
        stop(app)
        stop(sim)
