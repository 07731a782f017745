"""The voice bench from outside: the app as its own process (``--headless --control-port 0``)
against a simulator started separately, driven through the control API only.

A second avatar slot is started with another voice by ``POST /api/v1/session/start?slot=1``,
the same line is said on both, and both voices' start latencies are read back from
``GET /api/v1/metrics/latency``. A voice the service refuses is reported as refused (a failed
session with the service's reason; the check answers "refused"), never as a crash or a hang.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from avaturn_desktop.core.catalog import VOICES
from tests.blackbox import Api, ctl, simulator, spoken_texts, start_app, wait_for

__all__ = ["simulator"]  # the fixture

pytestmark = [pytest.mark.web, pytest.mark.timeout(180)]

A, B = VOICES[0].id, VOICES[2].id
LINE = "The same line, said by both avatars."


def test_two_slots_two_voices_and_their_latencies(simulator: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    app = start_app(home, simulator)
    try:
        api = Api(home)

        def state(slot: int) -> dict[str, object]:
            answer = api.http.get("/api/v1/state", params={"slot": slot})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        def session(slot: int) -> dict[str, str]:
            found = state(slot)["session"]
            assert isinstance(found, dict)
            return found

        # one slot at first; a slot that does not exist is a 404 with a sentence
        assert api.state()["app"]["slots"] == 1
        missing = api.http.get("/api/v1/state", params={"slot": 1})
        assert missing.status_code == 404 and "slot 1" in missing.json()["detail"]

        first = api.http.post("/api/v1/session/start", json={"voice_id": A})
        assert first.status_code == 202, first.text
        # session/start on slot 1 makes the slot (within the quota of 2) and starts it
        second = api.http.post("/api/v1/session/start", params={"slot": 1}, json={"voice_id": B})
        assert second.status_code == 202, second.text
        # past the quota: 409 with a sentence, and no slot is made
        third = api.http.post("/api/v1/session/start", params={"slot": 2}, json={"voice_id": A})
        assert third.status_code == 409, third.text
        assert "limit of 2" in third.json()["detail"]
        wait_for(lambda: session(0)["state"] == "live", "slot 0 live", 40)
        wait_for(lambda: session(1)["state"] == "live", "slot 1 live", 40)
        assert api.state()["app"]["slots"] == 2
        ids = {0: session(0)["id"], 1: session(1)["id"]}
        assert ids[0] != ids[1]
        assert state(0)["voice_id"] == A and state(1)["voice_id"] == B
        assert api.http.get("/api/v1/state/session.state", params={"slot": 1}).text == "live"

        # the same line on both
        for slot in (0, 1):
            said = api.http.post("/api/v1/say", params={"slot": slot}, json={"text": LINE})
            assert said.status_code == 200, said.text
        for slot in (0, 1):
            wait_for(
                lambda s=slot: (LINE, "spoken") in spoken_texts(simulator, ids[s]),
                f"the line spoken on slot {slot}",
            )

        # both voices' latencies, from the task log
        def figures() -> dict[str, dict[str, object]]:
            answer = api.http.get("/api/v1/metrics/latency")
            assert answer.status_code == 200, answer.text
            return dict(answer.json()["voices"])

        voices = wait_for(lambda: (f := figures()) and {A, B} <= f.keys() and f, "figures")
        for voice, slot in ((A, 0), (B, 1)):
            entry = voices[voice]
            assert entry["count"] == 1, entry
            for key in ("p50_ms", "p95_ms", "mean_ms"):
                assert isinstance(entry[key], float) and entry[key] >= 0, entry
            assert entry["p50_ms"] == entry["p95_ms"] == entry["mean_ms"]  # one line each
            assert entry["slots"] == [slot]
        wait_for(lambda: all(figures()[v]["speaking_rate_cps"] for v in (A, B)), "speaking rates")
        only_b = api.http.get("/api/v1/metrics/latency", params={"slot": 1}).json()["voices"]
        assert set(only_b) == {B}
        connect = api.http.get("/api/v1/metrics/connect").json()
        assert [s["slot"] for s in connect["slots"]] == [0, 1]
        for entry in connect["slots"]:
            (phases,) = entry["sessions"]
            assert phases["outcome"] == "live" and phases["phases_s"]["create"] is not None
        rows = api.http.get("/api/v1/log", params={"limit": 2}).json()["rows"]
        assert {r["slot"] for r in rows} == {0, 1}

        # a voice the service refuses: a failed session with the service's reason, at once
        assert api.http.post("/api/v1/session/end", params={"slot": 1}).status_code == 202
        wait_for(lambda: session(1)["state"] == "ended", "slot 1 ended")
        started = time.monotonic()
        refused = api.http.post(
            "/api/v1/session/start", params={"slot": 1}, json={"voice_id": "no-such-voice"}
        )
        assert refused.status_code == 202, refused.text
        failed = wait_for(lambda: (s := session(1))["state"] == "failed" and s, "refused", 20)
        assert time.monotonic() - started < 15
        assert "no-such-voice" in str(failed["detail"]) and "400" in str(failed["detail"])
        assert session(0)["state"] == "live"  # the other avatar goes on
        # the same voice, mid-session: 422 with a sentence, the session stays live
        mid = api.http.post("/api/v1/voice", json={"voice_id": "no-such-voice"})
        assert mid.status_code in (409, 422) and mid.json()["detail"]
        assert session(0)["state"] == "live"
        # and the library's check says so, with the service's words
        check = api.http.post("/api/v1/voices/check", json={"voice_id": "no-such-voice"})
        assert check.status_code == 200, check.text
        assert check.json()["accepted"] is False and check.json()["verdict"] == "refused"
        assert "no-such-voice" in check.json()["reason"]
        ok = api.http.post("/api/v1/voices/check", json={"voice_id": B}).json()
        assert ok["accepted"] is True
        library = api.http.get("/api/v1/voices").json()["voices"]
        by_id = {v["voice_id"]: v for v in library}
        assert by_id["no-such-voice"]["check"]["accepted"] is False
        assert by_id[A]["figures"]["count"] == 1
        assert api.http.get("/api/v1/health").json()["ok"] is True

        # ctl addresses a slot too
        out = ctl(home, "--slot", "1", "state", "session.state")
        assert out.returncode == 0 and out.stdout.strip() == "failed", out.stderr
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
    # every session the app made was ended on the service
    leftover = httpx.get(
        f"{simulator}/_sim/state", headers={"Authorization": "Bearer blackbox-simulator-key"}
    ).json()
    assert all(s["state"] == "ended" for s in leftover["sessions"]), leftover
