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


LINES = [
    "The first line is said to its end.",
    "The second line is said to its end too.",
    "The third line is cut off halfway and said again.",
    "The fourth line was with the service when it died.",
    "The fifth line waited in the app all along.",
    "The sixth line closes the show for today.",
]


def tasks_of(url: str) -> dict[str, list[tuple[str, str]]]:
    """``session id -> [(text, status)]`` of every session the simulator remembers."""
    state = httpx.get(f"{url}/_sim/state", headers=SIM_AUTH).json()
    return {
        s["session_id"]: [(t["text"], t["status"]) for t in s["tasks"]] for s in state["sessions"]
    }


def test_a_kiosk_says_the_line_cut_by_a_dead_session_again_and_every_other_line_once(
    tmp_path: Path,
) -> None:
    sim = run_simulator("--time-scale", "10", "--chars-per-second", "20")
    url = base_url(sim)
    home = tmp_path / "kiosk"
    app = start_app(home, url, "--kiosk")
    try:
        api = Api(home)
        first = live_again(api, None, 30)
        for line in LINES:
            answer = api.http.post("/api/v1/say", json={"text": line})
            assert answer.status_code == 200, answer.text

        def third_speaking() -> bool:
            return (LINES[2], "speaking") in tasks_of(url).get(first, [])

        wait_for(third_speaking, lambda: f"the third line speaking: {tasks_of(url)}", 60)
        killed = httpx.post(f"{url}/_sim/sessions/{first}/kill", headers=SIM_AUTH)
        assert killed.status_code == 200, killed.text
        second = live_again(api, first)

        def all_said() -> bool:
            return [s for t, s in tasks_of(url).get(second, []) if t == LINES[-1]] == ["spoken"]

        wait_for(all_said, lambda: f"the sixth line spoken: {tasks_of(url)}", 60)
        sessions = tasks_of(url)
        old, new = sessions[first], sessions[second]
        assert [t for t, s in old if s == "spoken"] == LINES[:2]
        assert (LINES[2], "cut") in old
        # the next session says the cut line from its start, then the rest, once, in order
        assert new == [(line, "spoken") for line in LINES[2:]]
        everywhere = [t for tasks in sessions.values() for t, s in tasks if s == "spoken"]
        assert sorted(everywhere) == sorted(LINES)  # each line to its end exactly once

        # the task log links the rows of the dead session to their new ones
        rows = api.http.get("/api/v1/log", params={"limit": 50}).json()["rows"]
        by_id = {r["row_id"]: r for r in rows}
        carried = [r for r in rows if r["session_id"] == second and r.get("resumed_from")]
        assert {by_id[r["resumed_from"]]["text"] for r in carried} >= set(LINES[2:4])
        api.http.close()
    finally:
        stop(app)
        stop(sim)
