"""The show from outside: a script loaded and fired through the control API of an app running as
its own process against a simulator of its own; what the avatar said is read from the
simulator (``/_sim/state``), never from the app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.blackbox import (  # noqa: F401 (the fixture is used by name)
    Api,
    ctl,
    simulator,
    spoken_texts,
    start_app,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.web, pytest.mark.timeout(240)]

SCRIPT = """\
# Opening
// smile, and wait for the room to settle
Good evening, everyone.
Welcome to the launch.

// slower here
Tonight we show you three things.

# The product
It is fast. It is small. It is kind to your battery, all day long and well into the night.
// pause for the applause

Thank you all for coming tonight.
Good night.
"""
CUE_1 = ["Good evening, everyone.", "Welcome to the launch."]
CUE_2 = ["Tonight we show you three things."]
CUE_3 = [
    "It is fast.",
    "It is small.",
    "It is kind to your battery, all day long and well into the night.",
]
NEVER = ("smile", "Opening", "slower", "The product", "applause", "//", "#")


def said(base: str, session_id: str) -> list[str]:
    """What the simulator received for the session, in order."""
    return [text for text, _status in spoken_texts(base, session_id)]


def all_spoken(base: str, session_id: str, texts: list[str]) -> bool:
    got = spoken_texts(base, session_id)
    return len(got) >= len(texts) and all(status == "spoken" for _t, status in got)


def test_a_script_is_fired_cue_by_cue_through_the_control_api(
    simulator: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    app = start_app(home, simulator)
    try:
        api = Api(home)
        http = api.http

        # nothing loaded: GO is refused with a sentence; bad loads are 422, never a 500
        refused = http.post("/api/v1/cues/go")
        assert refused.status_code == 409 and "No script" in refused.json()["detail"]
        for bad in (
            {},
            {"text": "a", "path": "b.txt"},
            {"text": "# only a title\n// and a note\n"},
            {"path": "/etc/passwd"},
            {"path": str(tmp_path / "missing.md")},
            {"text": 5},
        ):
            answer = http.post("/api/v1/cues/load", json=bad)
            assert answer.status_code == 422, (bad, answer.status_code, answer.text)
            assert isinstance(answer.json()["detail"], str)

        started = http.post("/api/v1/session/start", json={"max_duration": 600})
        assert started.status_code == 202, started.text
        wait_for(lambda: api.state()["session"]["state"] == "live", "live", 40)
        session_id = api.state()["session"]["id"]

        loaded = http.post("/api/v1/cues/load", json={"text": SCRIPT})
        assert loaded.status_code == 200, loaded.text
        cues = loaded.json()
        assert cues["count"] == 4 and cues["standby"] == 0
        assert [c["section"] for c in cues["cues"]] == ["Opening", "Opening"] + ["The product"] * 2
        assert cues["cues"][0]["notes"] == ["smile, and wait for the room to settle"]
        assert api.state()["cues"] == {
            "count": 4,
            "standby": 0,
            "standby_text": " ".join(CUE_1),
        }
        assert http.get("/api/v1/state/cues.standby").text == "0"
        assert http.post("/api/v1/cues/standby", json={"index": 99}).status_code == 422
        assert http.post("/api/v1/cues/standby", json={"index": -1}).status_code == 422

        # GO twice: exactly the sentences of cues 1 and 2, in order, nothing of notes or titles
        first = http.post("/api/v1/cues/go")
        assert first.status_code == 200, first.text
        assert [i["text"] for i in first.json()["items"]] == CUE_1
        assert http.post("/api/v1/cues/go", json={}).json()["cue"] == 1
        wait_for(lambda: all_spoken(simulator, session_id, CUE_1 + CUE_2), "cues 1 and 2 spoken")
        assert said(simulator, session_id) == CUE_1 + CUE_2
        assert not any(word in text for text in said(simulator, session_id) for word in NEVER)
        assert api.state()["cues"]["standby"] == 2
        states = [c["state"] for c in http.get("/api/v1/cues").json()["cues"]]
        assert states == ["done", "done", "standby", "next"]

        # Back and GO: cue 2 again
        assert http.post("/api/v1/cues/back").json()["cues"]["standby"] == 1
        assert http.post("/api/v1/cues/go").json()["cue"] == 1
        wait_for(lambda: all_spoken(simulator, session_id, CUE_1 + CUE_2 * 2), "cue 2 again")
        assert said(simulator, session_id) == CUE_1 + CUE_2 + CUE_2

        # GO cue 3; while it plays, a line of the later cue 4 is taken out of the script
        assert http.post("/api/v1/cues/go").json()["cue"] == 2
        wait_for(lambda: api.state()["current_text"] == CUE_3[0], "cue 3 playing")
        edited = http.put("/api/v1/cues/3", json={"text": "Thank you all for coming tonight."})
        assert edited.status_code == 200, edited.text
        assert edited.json()["cues"][3]["text"] == "Thank you all for coming tonight."
        assert edited.json()["dirty"] is True

        # Stop mid-cue, then GO with no Resume: the next cue is spoken, the rest of cue 3 not
        assert http.post("/api/v1/stop").status_code == 200
        wait_for(lambda: api.state()["queue"]["paused"], "stopped")
        go = http.post("/api/v1/cues/go")
        assert go.status_code == 200, go.text
        assert go.json()["cue"] == 3
        wait_for(
            lambda: (
                ("Thank you all for coming tonight.", "spoken")
                in spoken_texts(simulator, session_id)
            ),
            lambda: "cue 4 spoken: " + json.dumps(spoken_texts(simulator, session_id)),
        )
        received = said(simulator, session_id)
        assert "Good night." not in received
        assert received[-1] == "Thank you all for coming tonight."
        statuses = dict(spoken_texts(simulator, session_id))
        assert statuses[CUE_3[0]] != "spoken"  # cut off mid-cue
        assert [t for t in received if t == CUE_3[-1]] == [] or statuses[CUE_3[-1]] != "spoken"
        assert api.state()["queue"]["paused"] is False
        listed = http.get("/api/v1/cues").json()
        assert [c["state"] for c in listed["cues"]][2] == "stopped"
        assert listed["standby"] is None and listed["elapsed_s"] > 0
        assert http.post("/api/v1/cues/go").status_code == 409  # past the end

        # the outputs: captions and the audience window, with their errors
        captions = http.post("/api/v1/output/captions", json={"on": True, "size_pct": 6})
        assert captions.status_code == 200 and captions.json()["captions"]["on"] is True
        assert http.post("/api/v1/output/captions", json={"colour": "green"}).status_code == 422
        audience = http.post(
            "/api/v1/output/audience", json={"open": True, "screen": 0, "fullscreen": True}
        )
        assert audience.status_code == 200, audience.text
        assert audience.json()["audience"]["open"] is True
        assert api.state()["output"] == {"audience": True, "captions": True}
        assert http.post("/api/v1/output/audience", json={"screen": 7}).status_code == 422
        background = http.post("/api/v1/output/background", json={"kind": "colour"})
        assert background.json()["background"]["colour"] == "#00b140"
        closed = http.post("/api/v1/output/audience", json={"open": False})
        assert closed.json()["audience"]["open"] is False

        # the same through the WebSocket's operations
        assert _ws_op(api, "cues.standby", {"index": 0})["result"]["cues"]["standby"] == 0
        assert _ws_op(api, "cues", {})["result"]["count"] == 4
        assert _ws_op(api, "cues.go", {"now": "maybe"})["ok"] is False

        # and through ctl
        out = ctl(home, "standby", "2")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["cues"]["standby"] == 2
        out = ctl(home, "captions", "off")
        assert out.returncode == 0 and json.loads(out.stdout)["captions"]["on"] is False

        # and the edited script is saved where asked
        target = tmp_path / "saved.md"
        assert http.post("/api/v1/cues/save", json={"path": str(target)}).status_code == 200
        assert "Good night." not in target.read_text(encoding="utf-8")
        assert "// pause for the applause" in target.read_text(encoding="utf-8")
        http.close()
    finally:
        stop(app)


def _ws_op(api: Api, op: str, args: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    import websockets

    async def call() -> dict[str, Any]:
        url = api.url.replace("http://", "ws://") + f"/api/v1/events?token={api.token}"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"id": "x", "op": op, "args": args}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message.get("id") == "x":
                    return dict(message)

    return asyncio.run(call())


def test_script_flag_opens_the_script_at_start(simulator: str, tmp_path: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    script = tmp_path / "talk.txt"
    script.write_text(SCRIPT, encoding="utf-8")
    app = start_app(home, simulator, "--script", str(script))
    try:
        api = Api(home)
        cues = wait_for(lambda: api.http.get("/api/v1/cues").json()["count"] and api, "cues")
        listed = cues.http.get("/api/v1/cues").json()
        assert listed["count"] == 4 and listed["path"] == str(script.resolve())
        api.http.close()
    finally:
        app.terminate()
        app.wait(30)
        assert app.stdout is not None
        app.stdout.close()


LONG_SCRIPT = """\
# Part one
The first cue has a long opening sentence that takes the avatar a while to say.
Its second sentence is long as well, so the later cue waits in the app.
Its third sentence closes the first cue.

The second cue starts here.
This line of the second cue is taken out before it is sent.
The second cue ends here.
"""


def test_a_line_of_a_later_cue_is_removed_while_the_first_plays(
    simulator: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """GO twice: only the line speaking and the next are with the service, so a line of the
    second cue can still be taken out of the queue while the first cue plays."""
    home = tmp_path / "home"
    app = start_app(home, simulator)
    try:
        api = Api(home)
        http = api.http
        session_id = api.start_live()
        assert http.post("/api/v1/cues/load", json={"text": LONG_SCRIPT}).status_code == 200
        assert http.post("/api/v1/cues/go").status_code == 200
        second = http.post("/api/v1/cues/go").json()["items"]
        doomed = next(i for i in second if i["text"].startswith("This line"))
        waiting = {i["id"]: i for i in http.get("/api/v1/queue").json()["items"]}
        assert waiting[doomed["id"]]["state"] == "waiting"
        # the service has at most the line speaking and the next
        assert len(said(simulator, session_id)) <= 2
        removed = http.delete(f"/api/v1/queue/{doomed['id']}")
        assert removed.status_code == 200, removed.text
        last = "The second cue ends here."
        wait_for(
            lambda: (last, "spoken") in spoken_texts(simulator, session_id),
            lambda: f"the second cue spoken: {spoken_texts(simulator, session_id)}",
            60,
        )
        assert said(simulator, session_id) == [
            "The first cue has a long opening sentence that takes the avatar a while to say.",
            "Its second sentence is long as well, so the later cue waits in the app.",
            "Its third sentence closes the first cue.",
            "The second cue starts here.",
            last,
        ]
        assert all(status == "spoken" for _t, status in spoken_texts(simulator, session_id))
        http.close()
    finally:
        stop(app)


def test_words_said_after_stop_go_at_once_and_what_waited_is_set_aside(
    simulator: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    app = start_app(home, simulator)
    lines = [
        "The first line is long enough to be stopped while the avatar says it.",
        "The second line was with the service when the avatar was stopped.",
        "The third line waited in the app and is set aside.",
    ]
    try:
        api = Api(home)
        http = api.http
        session_id = api.start_live()
        api.say_until_the_first_speaks(lines)
        assert http.post("/api/v1/stop").status_code == 200
        assert api.state()["queue"]["paused"] is True
        # a new line: said now, no Resume
        word = "Sorry, one word from the presenter."
        assert http.post("/api/v1/say", json={"text": word}).status_code == 200
        wait_for(
            lambda: (word, "spoken") in spoken_texts(simulator, session_id),
            lambda: f"the new line spoken: {spoken_texts(simulator, session_id)}",
        )
        assert lines[2] not in said(simulator, session_id)
        items = {i["text"]: i for i in http.get("/api/v1/queue").json()["items"]}
        assert items[lines[2]]["state"] == "waiting" and items[lines[2]]["set_aside"] is True
        # Resume keeps it: said after all
        assert http.post("/api/v1/resume").status_code == 200
        wait_for(
            lambda: (lines[2], "spoken") in spoken_texts(simulator, session_id),
            lambda: f"the set-aside line spoken: {spoken_texts(simulator, session_id)}",
        )
        assert said(simulator, session_id)[-2:] == [word, lines[2]]
        http.close()
    finally:
        stop(app)
