"""Session life: the speech queue, its timing, viewers, timeouts, endings, and the event channel."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
import websockets

from avaturn_desktop.core.catalog import VOICES
from avaturn_desktop.core.models import SpeechEvent

AUTH = {"Authorization": "Bearer k"}


def new_session(sim: Any, **body: Any) -> tuple[str, str]:
    response = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    return data["session_id"], data["token"]


def add_task(sim: Any, session_id: str, text: str) -> str:
    response = httpx.post(
        sim.base_url + f"/api/v1/sessions/{session_id}/tasks", headers=AUTH, json={"text": text}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["task_id"])


def sdk_post(sim: Any, token: str, path: str, json: Any = None) -> httpx.Response:
    return httpx.post(
        sim.base_url + "/_sdk/v0/sessions" + path, headers={"X-Session-Token": token}, json=json
    )


def types(messages: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(m["type"], m.get("phrase_id")) for m in messages]


def test_queue_plays_in_order_with_the_documented_events(sim, viewer):
    session_id, token = new_session(sim)
    ids = [add_task(sim, session_id, text) for text in ("One.", "Two two.", "Three three three.")]

    async def watch() -> list[dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            return await v.until("avatar_ended_speaking")

    messages = asyncio.run(watch())
    for message in messages:
        SpeechEvent.model_validate(message)
        assert set(message) <= {"type", "phrase_id"}
    assert types(messages) == [
        ("avatar_started_speaking", None),
        ("avatar_started_speaking_phrase", ids[0]),
        ("avatar_ended_speaking_phrase", ids[0]),
        ("avatar_started_speaking_phrase", ids[1]),
        ("avatar_ended_speaking_phrase", ids[1]),
        ("avatar_started_speaking_phrase", ids[2]),
        ("avatar_ended_speaking_phrase", ids[2]),
        ("avatar_ended_speaking", None),
    ]
    spoken = sim.snapshot()["sessions"][0]["spoken"]
    assert [(t["task_id"], t["status"]) for t in spoken] == [(i, "spoken") for i in ids]


def test_a_phrase_lasts_its_length_over_the_speaking_rate(sim, viewer):
    session_id, token = new_session(sim)
    text = "x" * 120  # 0.3 s at 400 chars per second

    async def watch() -> float:
        async with viewer(sim.base_url, token) as v:
            await v.until("avatar_started_speaking_phrase")
            started = time.monotonic()
            await v.until("avatar_ended_speaking_phrase")
            return time.monotonic() - started

    task_id = add_task(sim, session_id, text)
    elapsed = asyncio.run(watch())
    assert 0.25 <= elapsed < 2.0
    (spoken,) = sim.snapshot()["sessions"][0]["spoken"]
    assert spoken["task_id"] == task_id
    assert spoken["ended_at"] - spoken["started_at"] == pytest.approx(0.3, abs=0.05)


def test_captions_precede_each_phrase(sim, viewer):
    session_id, token = new_session(sim)
    task_id = add_task(sim, session_id, "Caption me.")

    async def watch() -> list[dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            return [await v.next(captions=True) for _ in range(3)]

    messages = asyncio.run(watch())
    assert messages[1] == {"type": "sim_caption", "phrase_id": task_id, "text": "Caption me."}
    assert messages[2] == {"type": "avatar_started_speaking_phrase", "phrase_id": task_id}


def test_nothing_is_spoken_without_a_viewer(sim, viewer, view):
    quiet_id, quiet_token = new_session(sim)
    waiting = add_task(sim, quiet_id, "x" * 40)
    control_id, control_token = new_session(sim)
    add_task(sim, control_id, "x" * 80)  # twice as long as the waiting task

    async def watch(token: str, until: str) -> list[dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            return await v.until(until)

    # While a viewer hears the control session out, the unwatched session stays silent.
    asyncio.run(watch(control_token, "avatar_ended_speaking"))
    quiet = view(sim, quiet_id)
    assert quiet["state"] == "waiting" and quiet["viewers"] == 0
    assert [(t["task_id"], t["status"]) for t in quiet["queue"]] == [(waiting, "queued")]
    # A viewer arrives: the held task plays.
    messages = asyncio.run(watch(quiet_token, "avatar_ended_speaking"))
    assert ("avatar_started_speaking_phrase", waiting) in types(messages)


def test_own_phrase_ids_keep_the_queue_order(make_sim, viewer):
    sim = make_sim(phrase_ids="own")
    session_id, token = new_session(sim)
    ids = [add_task(sim, session_id, text) for text in ("a", "b")]

    async def watch() -> list[dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            return await v.until("avatar_ended_speaking")

    phrases = [m["phrase_id"] for m in asyncio.run(watch()) if m["type"].endswith("_phrase")]
    assert len(phrases) == 4 and not set(phrases) & set(ids)
    tasks = sim.snapshot()["sessions"][0]["tasks"]
    assert [t["phrase_id"] for t in tasks] == phrases[::2] == phrases[1::2]


def test_cancel_all_cuts_the_phrase_and_empties_the_queue(sim, viewer):
    session_id, token = new_session(sim)
    first = add_task(sim, session_id, "x" * 4000)  # 10 s: only a cancel ends it in time
    add_task(sim, session_id, "second")
    add_task(sim, session_id, "third")

    async def watch() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            await v.until("avatar_started_speaking_phrase")
            answer = await asyncio.to_thread(sdk_post, sim, token, "/cancel_all_speech_tasks")
            cut = await v.until("avatar_ended_speaking", within=2)
            after = await asyncio.to_thread(add_task, sim, session_id, "after")
            resumed = await v.until("avatar_ended_speaking")
            return cut, resumed, {"answer": answer.json(), "after": after}

    cut, resumed, info = asyncio.run(watch())
    assert info["answer"] == {"cancelled": 3}
    assert types(cut) == [("avatar_ended_speaking_phrase", first), ("avatar_ended_speaking", None)]
    # Nothing of the cancelled queue was spoken: the next events are the new task's.
    assert types(resumed)[:2] == [
        ("avatar_started_speaking", None),
        ("avatar_started_speaking_phrase", info["after"]),
    ]
    statuses = [t["status"] for t in sim.snapshot()["sessions"][0]["tasks"]]
    assert statuses == ["cancelled", "cancelled", "cancelled", "spoken"]


def test_a_voice_change_drops_the_queue_but_finishes_the_phrase(sim, viewer, view):
    session_id, token = new_session(sim)
    first = add_task(sim, session_id, "x" * 120)
    add_task(sim, session_id, "dropped")
    new_voice = VOICES[3].id
    patch = {
        "conversation_engine": {
            "type": "text-echo",
            "tts": {"engine": "elevenlabs", "voice_id": new_voice},
        }
    }

    def change_voice() -> httpx.Response:
        return httpx.patch(
            sim.base_url + "/_sdk/v0/sessions/config",
            headers={"X-Session-Token": token},
            json=patch,
        )

    async def watch() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            await v.until("avatar_started_speaking_phrase")
            answer = await asyncio.to_thread(change_voice)
            rest = await v.until("avatar_ended_speaking")
            return rest, answer.json()

    rest, answer = asyncio.run(watch())
    assert answer["cancelled"] == 1
    assert types(rest) == [("avatar_ended_speaking_phrase", first), ("avatar_ended_speaking", None)]
    tasks = view(sim, session_id)["tasks"]
    assert [(t["status"], t["voice_id"]) for t in tasks] == [
        ("spoken", VOICES[0].id),
        ("cancelled", None),
    ]
    assert view(sim, session_id)["voice_id"] == new_voice


def test_every_viewer_gets_the_events(sim, viewer):
    session_id, token = new_session(sim)

    async def watch() -> tuple[list[Any], list[Any]]:
        async with viewer(sim.base_url, token) as a, viewer(sim.base_url, token) as b:
            assert sim.snapshot()["sessions"][0]["viewers"] == 2
            task_id = await asyncio.to_thread(add_task, sim, session_id, "hello")
            got = await a.until("avatar_ended_speaking"), await b.until("avatar_ended_speaking")
            assert ("avatar_started_speaking_phrase", task_id) in types(got[0])
            return got

    first, second = asyncio.run(watch())
    assert first == second


def test_a_viewer_counts_as_connected_while_its_socket_is_open(sim, viewer, view, until):
    session_id, token = new_session(sim)

    async def watch() -> None:
        async with viewer(sim.base_url, token):
            state = view(sim, session_id)
            assert (state["viewers"], state["state"]) == (1, "active")

    asyncio.run(watch())
    state = until(lambda: (s := view(sim, session_id))["viewers"] == 0 and s)
    assert state["state"] == "waiting" and state["viewers_seen"] == 1


def test_user_absent_timeout_ends_a_session_nobody_watches(make_sim, until, view):
    sim = make_sim(time_scale=1000)  # 10 s -> 10 ms
    session_id, token = new_session(sim, user_absent_timeout=10)
    state = until(lambda: (s := view(sim, session_id))["state"] == "ended" and s)
    assert state["end_reason"] == "user_absent_timeout"
    assert 0.005 < state["age_s"] < 2
    assert_gone(sim, session_id, token)


def test_the_absence_clock_stops_while_a_viewer_watches(make_sim, viewer, until, view):
    # 10 s -> 0.5 s: room for the viewer to join on a busy machine
    sim = make_sim(time_scale=20)
    session_id, token = new_session(sim, user_absent_timeout=10)

    async def watch() -> None:
        async with viewer(sim.base_url, token) as v:
            # Outlive the absence limit while watching: a 1 s phrase.
            await asyncio.to_thread(add_task, sim, session_id, "x" * 400)
            await v.until("avatar_ended_speaking")
            assert view(sim, session_id)["state"] == "active"

    asyncio.run(watch())
    left = time.monotonic()
    state = until(lambda: (s := view(sim, session_id))["state"] == "ended" and s)
    assert state["end_reason"] == "user_absent_timeout"
    assert time.monotonic() - left >= 0.45


def test_max_duration_ends_the_session_with_limits_exceeded(make_sim, viewer, view):
    sim = make_sim(time_scale=30)  # 60 s -> 2 s: room for a viewer and a task when busy
    session_id, token = new_session(sim, max_duration=60, user_absent_timeout=3600)

    async def watch() -> tuple[int | None, str | None, list[Any]]:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(add_task, sim, session_id, "x" * 4000)
            return await v.closed()

    code, reason, messages = asyncio.run(watch())
    assert (code, reason) == (4002, "max_duration")
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == "limits_exceeded"
    assert messages[-1]["reason"] == "max_duration" and messages[-1]["message"]
    state = view(sim, session_id)
    assert state["end_reason"] == "max_duration"
    assert [t["status"] for t in state["tasks"]] == ["cut"]
    assert_gone(sim, session_id, token)


def test_delete_mid_sentence_closes_the_channel(sim, viewer, view):
    session_id, token = new_session(sim)

    async def watch() -> tuple[int | None, str | None, list[Any]]:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(add_task, sim, session_id, "x" * 4000)
            await v.until("avatar_started_speaking_phrase")
            await asyncio.to_thread(
                httpx.delete, sim.base_url + f"/api/v1/sessions/{session_id}", headers=AUTH
            )
            return await v.closed()

    code, reason, messages = asyncio.run(watch())
    assert (code, reason) == (4000, "terminated")
    assert messages == [
        {
            "type": "error",
            "code": "session_terminated",
            "message": "The session was terminated",
            "reason": "terminated",
        }
    ]
    assert view(sim, session_id)["end_reason"] == "terminated"


def test_a_killed_session_tells_its_viewers(sim, viewer, view):
    session_id, token = new_session(sim)

    async def watch() -> tuple[int | None, str | None, list[Any]]:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(
                httpx.post,
                sim.base_url + f"/_sim/sessions/{session_id}/kill",
                json={"reason": "operator pulled the plug"},
            )
            return await v.closed()

    code, reason, messages = asyncio.run(watch())
    assert (code, reason) == (4003, "killed")
    assert messages[-1]["code"] == "internal_error"
    assert messages[-1]["message"] == "operator pulled the plug"
    assert view(sim, session_id)["end_reason"] == "killed"


def test_unknown_or_ended_token_is_refused_at_the_handshake(sim):
    session_id, token = new_session(sim)
    httpx.delete(sim.base_url + f"/api/v1/sessions/{session_id}", headers=AUTH)
    assert_gone(sim, session_id, token)
    assert handshake_status(sim, "no-such-token") == 404
    url = sim.base_url.replace("http", "ws") + "/_sdk/v0/sessions/events"

    async def without_token() -> None:
        async with websockets.connect(url):
            pass

    with pytest.raises(websockets.InvalidStatus):
        asyncio.run(without_token())


def handshake_status(sim: Any, token: str) -> int:
    url = sim.base_url.replace("http", "ws") + f"/_sdk/v0/sessions/events?token={token}"

    async def connect() -> int:
        try:
            async with websockets.connect(url):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(connect())


def assert_gone(sim: Any, session_id: str, token: str) -> None:
    base = sim.base_url
    assert (
        httpx.post(
            base + f"/api/v1/sessions/{session_id}/tasks", headers=AUTH, json={"text": "a"}
        ).status_code
        == 404
    )
    assert httpx.delete(base + f"/api/v1/sessions/{session_id}", headers=AUTH).status_code == 404
    assert (
        httpx.get(base + "/_sdk/v0/sessions", headers={"X-Session-Token": token}).status_code == 404
    )
    assert handshake_status(sim, token) == 404


def test_logs_never_show_the_key_or_tokens(make_sim, viewer, caplog):
    caplog.set_level(logging.DEBUG)
    sim = make_sim(api_key="s3cret-key")
    headers = {"Authorization": "Bearer s3cret-key"}
    response = httpx.post(sim.base_url + "/api/v1/sessions", headers=headers)
    session_id, token = response.json()["session_id"], response.json()["token"]
    httpx.post(sim.base_url + "/api/v1/sessions", headers={"Authorization": "Bearer wrong-key"})

    async def watch() -> None:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(
                httpx.post,
                sim.base_url + f"/api/v1/sessions/{session_id}/tasks",
                headers=headers,
                json={"text": "hi"},
            )
            await v.until("avatar_ended_speaking")

    asyncio.run(watch())
    httpx.get(sim.base_url + "/_sdk/v0/sessions", headers={"X-Session-Token": token})
    sim.stop()
    # What the simulator (and the server under it) logged; client libraries are not ours.
    ours = [r for r in caplog.records if r.name.startswith(("avaturn", "uvicorn", "fastapi"))]
    text = "\n".join(r.getMessage() for r in ours)
    assert session_id in text and "WebSocket /_sdk/v0/sessions/events" in text
    for secret in ("s3cret", "wrong-key", token):
        assert secret not in text


def test_a_phrase_whose_viewers_all_left_is_said_but_not_heard(sim, viewer, until):
    """The service says the phrase it began to its end even with nobody left to hear it:
    ``heard`` tells an audience's phrases from those (what a kiosk's tally counts)."""
    session_id, token = new_session(sim)
    heard_id = add_task(sim, session_id, "Heard.")
    alone_id = add_task(sim, session_id, "x" * 160)  # 0.4 s at 400 chars per second

    async def leave_during_the_second() -> None:
        async with viewer(sim.base_url, token) as v:
            await v.until("avatar_ended_speaking_phrase")
            await v.until("avatar_started_speaking_phrase")

    asyncio.run(leave_during_the_second())

    def said() -> dict[str, tuple[str, bool]]:
        tasks = sim.snapshot()["sessions"][0]["tasks"]
        return {t["task_id"]: (t["status"], t["heard"]) for t in tasks}

    until(lambda: said()[alone_id][0] != "speaking")
    assert said() == {heard_id: ("spoken", True), alone_id: ("spoken", False)}
