"""Ask from outside: a question through ``POST /api/v1/ask`` to the app as a process, answered
by the language model stand-in of a simulator started on its own.

The first sentence of the answer reaches the service while the model is still writing; a
second question mid-answer ends the first, whose remaining sentences are never sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.blackbox import SIM_KEY, Api, base_url, run_simulator, start_app, stop, wait_for

pytestmark = [pytest.mark.web, pytest.mark.timeout(180)]

SIM_AUTH = {"Authorization": f"Bearer {SIM_KEY}"}


def received(url: str, session_id: str) -> list[str]:
    """The texts of every task the simulator received for the session, in order."""
    state = httpx.get(f"{url}/_sim/state", headers=SIM_AUTH).json()
    (session,) = [s for s in state["sessions"] if s["session_id"] == session_id]
    return [t["text"] for t in session["tasks"]]


def llm_requests(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/_sim/llm", headers=SIM_AUTH).json()
    return list(answer["requests"])


def test_an_answer_is_spoken_while_it_streams_and_a_new_question_ends_it(
    tmp_path: Path,
) -> None:
    # 8 tokens a second: an answer of four sentences streams for several seconds
    sim = run_simulator("--chars-per-second", "200", "--llm-tokens-per-second", "8")
    url = base_url(sim)
    home = tmp_path / "ask"
    app = start_app(home, url, "--auto-start")
    try:
        api = Api(home)
        wait_for(lambda: api.state()["session"]["state"] == "live", "live", 40)
        session_id = api.state()["session"]["id"]

        asked = api.http.post("/api/v1/ask", json={"text": "What is new in the product?"})
        assert asked.status_code == 200, asked.text
        first = asked.json()
        assert first["question_id"] and first["state"] == "answering"

        # the first sentence is on the service while the model still streams
        wait_for(
            lambda: any(t.startswith("Here is answer number 1") for t in received(url, session_id)),
            "the first sentence on the service",
            20,
        )
        assert llm_requests(url)[-1]["outcome"] == "answering"
        queue = api.http.get("/api/v1/queue").json()["items"]
        assert any(i.get("question_id") == first["question_id"] for i in queue)

        # a new question mid-answer: latest wins
        second = api.http.post("/api/v1/ask", json={"text": "And what comes next?"}).json()
        wait_for(
            lambda: (
                api.http.get(f"/api/v1/ask/{second['question_id']}").json()["state"] == "answered"
            ),
            "the second answer",
            60,
        )
        done = api.http.get(f"/api/v1/ask/{second['question_id']}").json()
        wait_for(
            lambda: received(url, session_id)[-len(done["sentences"]) :] == done["sentences"],
            "every sentence of the second answer on the service",
        )
        old = api.http.get(f"/api/v1/ask/{first['question_id']}").json()
        assert old["state"] == "replaced"
        said = received(url, session_id)
        cut = said.index(done["sentences"][0])
        assert said[:cut] == old["sentences"][:cut]  # what was said of the first, in order
        assert said[cut:] == done["sentences"]  # then the second answer alone
        assert cut < len(done["sentences"])  # the first answer never finished
        outcomes = [r.get("outcome") for r in llm_requests(url)]
        assert outcomes[-2:] == ["client_closed", "completed"], outcomes

        bad = api.http.post("/api/v1/ask", json={"text": "   "})
        assert bad.status_code == 422 and bad.json()["detail"]
        api.http.close()
    finally:
        stop(app)
        stop(sim)


def test_a_question_asked_after_stop_is_answered_aloud_without_resume(tmp_path: Path) -> None:
    """Words after a Stop go at once, Ask included: the answer is spoken with no Resume, and
    a line that waited when Stop was pressed is set aside, not said before it."""
    sim = run_simulator("--chars-per-second", "60", "--llm-tokens-per-second", "200")
    url = base_url(sim)
    home = tmp_path / "ask-after-stop"
    app = start_app(home, url, "--auto-start")
    lines = [
        "This first line is long enough to be stopped while the avatar is saying it.",
        "This second line waits behind it when the avatar is stopped.",
        "This third line waits as well and is set aside.",
    ]
    try:
        api = Api(home)
        wait_for(lambda: api.state()["session"]["state"] == "live", "live", 40)
        session_id = api.state()["session"]["id"]
        api.say_until_the_first_speaks(lines)
        assert api.http.post("/api/v1/stop").status_code == 200
        assert api.state()["queue"]["paused"] is True

        asked = api.http.post("/api/v1/ask", json={"text": "What is new in the product?"})
        assert asked.status_code == 200, asked.text
        question_id = asked.json()["question_id"]
        wait_for(
            lambda: api.http.get(f"/api/v1/ask/{question_id}").json()["state"] == "answered",
            "the answer",
            30,
        )
        sentences = api.http.get(f"/api/v1/ask/{question_id}").json()["sentences"]
        wait_for(
            lambda: received(url, session_id)[-len(sentences) :] == sentences,
            lambda: f"the answer on the service, no Resume: {received(url, session_id)}",
        )
        assert lines[2] not in received(url, session_id)
        items = {i["text"]: i for i in api.http.get("/api/v1/queue").json()["items"]}
        assert items[lines[2]]["state"] == "waiting" and items[lines[2]]["set_aside"] is True
        assert api.state()["queue"]["paused"] is False
        api.http.close()
    finally:
        stop(app)
        stop(sim)
