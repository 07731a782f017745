"""The control API from outside, as a Stream Deck or a script meets it.

The app runs as its own process (``--headless --control-port 0``) against a simulator started
separately (``avaturn-desktop simulator``); everything is done through the API, ``ctl`` and
the simulator's ``/_sim/state`` (what the avatar really said).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from avaturn_desktop.core.catalog import VOICES
from tests.blackbox import Api, ctl, simulator, spoken_texts, start_app, wait_for

__all__ = ["simulator"]  # the fixture

pytestmark = [pytest.mark.web, pytest.mark.timeout(180)]


def test_the_app_is_driven_through_its_control_api_alone(simulator: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    app = start_app(home, simulator)
    try:
        api = Api(home)

        # the rules of every call: token, Host, no CORS
        assert httpx.get(f"{api.url}/api/v1/state").status_code == 401
        assert httpx.get(f"{api.url}/api/v1/state?token=wrong").status_code == 401
        foreign = api.http.get("/api/v1/state", headers={"Host": "evil.example:80"})
        assert foreign.status_code == 403
        assert "detail" in foreign.json()
        pre = httpx.options(
            f"{api.url}/api/v1/say",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in pre.headers
        assert httpx.get(f"{api.url}/api/v1/state?token={api.token}").status_code == 200
        assert api.http.get("/api/v1/openapi.json").json()["paths"]["/api/v1/say"]

        # nothing to end yet; bad input is a 422 with a sentence, never a 500
        assert api.http.post("/api/v1/session/end").status_code == 409
        for bad in ({"text": ""}, {"text": 1e300}, {}, {"text": " \n "}, {"txt": "a"}, []):
            answer = api.http.post("/api/v1/say", json=bad)
            assert answer.status_code in (409, 422), (bad, answer.status_code, answer.text)
            assert isinstance(answer.json()["detail"], str)
        assert (
            api.http.post(
                "/api/v1/say",
                content=b'{"text": 1e400}',
                headers={"content-type": "application/json"},
            ).status_code
            == 422
        )

        # start: 202, then live
        started = api.http.post("/api/v1/session/start", json={"max_duration": 600})
        assert started.status_code == 202, started.text
        assert api.http.post("/api/v1/session/start").status_code == 409
        wait_for(lambda: api.state()["session"]["state"] == "live", "live", 40)
        session_id = api.state()["session"]["id"]
        assert api.http.get("/api/v1/state/session.state").text == "live"
        assert api.http.get("/api/v1/state/session.id").text == session_id

        # events: the first message is the state; changes follow
        events: list[dict[str, Any]] = []

        async def listen(stop: asyncio.Event) -> None:
            ws_url = api.url.replace("http://", "ws://") + f"/api/v1/events?token={api.token}"
            async with websockets.connect(ws_url) as ws:
                events.append(json.loads(await ws.recv()))
                await ws.send(json.dumps({"id": "r1", "op": "state", "args": {}}))
                await ws.send(json.dumps({"id": "r2", "op": "nope", "args": {}}))
                while not stop.is_set():
                    try:
                        events.append(json.loads(await asyncio.wait_for(ws.recv(), 0.2)))
                    except TimeoutError:
                        continue

        loop = asyncio.new_event_loop()
        stop_listening = asyncio.Event()
        listener = loop.create_task(listen(stop_listening))
        loop.run_until_complete(asyncio.sleep(0.5))

        lines = [
            "The first line is here and it runs on for a while so we can watch it.",
            "The second line follows the first one without a pause at all.",
            "The third line closes the set, and then we are done with it.",
        ]
        said = api.http.post("/api/v1/say", json={"text": " ".join(lines)})
        assert said.status_code == 200, said.text
        items = said.json()["items"]
        assert [i["text"] for i in items] == lines

        seen = wait_for(
            lambda: (s := api.state())["speaking"] and s["current_text"] in lines and s,
            "speaking",
        )
        assert seen["current_text"] == lines[0]
        loop.run_until_complete(asyncio.sleep(0.5))

        # stop mid-line: the avatar stops, the rest waits, paused
        assert api.http.post("/api/v1/stop").status_code == 200
        state = wait_for(lambda: (s := api.state())["speaking"] is False and s, "stopped")
        assert state["queue"]["paused"] is True
        queue = api.http.get("/api/v1/queue").json()["items"]
        assert {q["state"] for q in queue} <= {"cancelled", "waiting", "spoken", "failed"}

        assert api.http.post("/api/v1/resume").status_code == 200
        # change voice, then queue two lines and remove the second before it is sent
        other = next(v.id for v in VOICES if v.id != state["voice_id"])
        changed = api.http.post("/api/v1/voice", json={"voice_id": other})
        assert changed.status_code == 200, changed.text
        assert api.state()["voice_id"] == other
        refused = api.http.post("/api/v1/voice", json={"voice_id": "no-such-voice"})
        assert refused.status_code in (409, 422) and refused.json()["detail"]
        api.http.post("/api/v1/stop")
        queued = api.http.post(
            "/api/v1/say", json={"text": "Keep this line. Drop this line."}
        ).json()["items"]
        drop = queued[1]["id"]
        assert api.http.delete(f"/api/v1/queue/{drop}").status_code == 200
        assert api.http.delete(f"/api/v1/queue/{drop}").status_code == 404
        assert api.http.delete("/api/v1/queue/999999").status_code == 404
        api.http.post("/api/v1/resume")
        wait_for(
            lambda: any(
                t == "Keep this line." and st == "spoken"
                for t, st in spoken_texts(simulator, session_id)
            ),
            lambda: (
                "the kept line spoken: "
                + json.dumps(
                    [
                        api.http.get("/api/v1/queue").json(),
                        api.state(),
                        spoken_texts(simulator, session_id),
                    ]
                )
            ),
        )
        received = [t for t, _ in spoken_texts(simulator, session_id)]
        assert "Drop this line." not in received
        assert received.count("Keep this line.") == 1

        # the log, newest first, as JSONL rows
        rows = api.http.get("/api/v1/log", params={"limit": 3}).json()["rows"]
        assert len(rows) == 3 and rows[0]["row_id"] > rows[1]["row_id"]
        assert {"text", "state", "task_id", "latency_ms", "voice_id"} <= rows[0].keys()
        assert rows[0]["voice_id"] == other

        # ctl talks to the same app
        out = ctl(home, "state", "session.state")
        assert out.returncode == 0 and out.stdout.strip() == "live", out.stderr
        out = ctl(home, "say", "From", "the", "terminal.")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["items"][0]["text"] == "From the terminal."

        # a second start on the same data directory: exits 0, the first session stays live
        second = start_app(home, simulator)
        try:
            output, _ = second.communicate(timeout=60)
        finally:
            if second.poll() is None:
                second.kill()
        assert second.returncode == 0, output
        assert "already running" in output
        assert api.state()["session"]["state"] == "live"
        assert api.state()["session"]["id"] == session_id

        stop_listening.set()
        loop.run_until_complete(listener)
        loop.close()
        assert events[0]["type"] == "state" and events[0]["state"]["session"]["state"] == "live"
        kinds = {e.get("type") for e in events}
        assert {"state", "item"} <= kinds, kinds
        answers = {e.get("id"): e for e in events if "ok" in e}
        assert answers["r1"]["ok"] is True and answers["r1"]["result"]["session"]["id"]
        assert answers["r2"]["ok"] is False and answers["r2"]["error"]
        assert any(e.get("type") == "state" and e["state"]["speaking"] for e in events)

        ended = api.http.post("/api/v1/session/end")
        assert ended.status_code == 202
        wait_for(lambda: api.state()["session"]["state"] == "ended", "ended")
        api.http.close()
    finally:
        app.terminate()
        try:
            app.wait(30)
        finally:
            if app.poll() is None:
                app.kill()
            assert app.stdout is not None
            app.stdout.close()
    assert not (home / "control.json").exists()


def test_ctl_without_a_running_app_says_so_in_one_line(tmp_path: Path) -> None:
    out = ctl(tmp_path, "state")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no running Avaturn Desktop" in lines[0]


def test_lines_a_dead_session_cut_off_are_said_again_on_one_call(
    simulator: str,
    tmp_path: Path,
) -> None:
    """Outside kiosk mode nothing is said again by itself: the state counts the unfinished
    lines, and one call says them, once, in the new session."""
    from tests.blackbox import SIM_KEY, stop

    home = tmp_path / "home"
    app = start_app(home, simulator)
    lines = [
        "The first line is cut off when the session is killed under it.",
        "The second line was with the service when it died.",
    ]
    try:
        api = Api(home)
        http = api.http
        first = api.start_live()
        api.say_until_the_first_speaks(lines)
        killed = httpx.post(
            f"{simulator}/_sim/sessions/{first}/kill",
            headers={"Authorization": f"Bearer {SIM_KEY}"},
        )
        assert killed.status_code == 200
        wait_for(lambda: api.state()["queue"]["unfinished"] == 2, "two unfinished lines")
        second = api.start_live("live again")
        again = http.post("/api/v1/queue/unfinished")
        assert again.status_code == 200, again.text
        assert [i["text"] for i in again.json()["items"]] == lines
        assert http.post("/api/v1/queue/unfinished").json()["items"] == []  # once
        wait_for(
            lambda: spoken_texts(simulator, second) == [(line, "spoken") for line in lines],
            lambda: f"both said again: {spoken_texts(simulator, second)}",
        )
        assert api.state()["queue"]["unfinished"] == 0
        http.close()
    finally:
        stop(app)
