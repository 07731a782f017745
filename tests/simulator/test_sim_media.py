"""The avatar's media faults: a frozen or black picture, a mute voice, told over the event
channel to the viewers of live sessions and to every viewer that joins while they hold."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httpx
import pytest

from avaturn_desktop.simulator import cli
from avaturn_desktop.simulator.server import FaultConfig

AUTH = {"Authorization": "Bearer k"}


def create(sim: Any) -> tuple[str, str]:
    answer = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH).json()
    return answer["session_id"], answer["token"]


def say(sim: Any, session_id: str, text: str) -> None:
    url = sim.base_url + f"/api/v1/sessions/{session_id}/tasks"
    assert httpx.post(url, headers=AUTH, json={"text": text}).status_code == 200


@pytest.mark.parametrize(
    ("video", "audio"), [("freeze", "none"), ("black", "none"), ("none", "mute"), ("black", "mute")]
)
def test_a_media_fault_reaches_the_viewers_of_live_sessions_and_clears(sim, viewer, video, audio):
    session_id, token = create(sim)
    faults_url = sim.base_url + "/_sim/faults"

    async def watch() -> list[dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            answer = await asyncio.to_thread(
                httpx.put, faults_url, json={"video_fault": video, "audio_fault": audio}
            )
            assert answer.status_code == 200, answer.text
            assert (answer.json()["video_fault"], answer.json()["audio_fault"]) == (video, audio)
            told = [await v.next()]
            await asyncio.to_thread(httpx.put, faults_url, json={})
            told.append(await v.next())
            return told

    assert asyncio.run(watch()) == [
        {"type": "sim_media", "video": video, "audio": audio},
        {"type": "sim_media", "video": "none", "audio": "none"},
    ]
    assert sim.snapshot()["media"] == {"video": "none", "audio": "none"}
    assert sim.snapshot()["sessions"][0]["session_id"] == session_id


@pytest.mark.parametrize("how", ["config", "run time"])
def test_a_viewer_that_joins_during_a_fault_hears_of_it_first(make_sim, viewer, how):
    if how == "config":  # the command line's --video-fault
        sim = make_sim(faults=FaultConfig(video_fault="freeze"))
    else:
        sim = make_sim()
        sim.set_faults(FaultConfig(video_fault="freeze"))
    assert sim.snapshot()["media"] == {"video": "freeze", "audio": "none"}
    session_id, token = create(sim)

    async def join() -> list[dict[str, Any]]:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(say, sim, session_id, "Hello.")
            return await v.until("avatar_ended_speaking")

    seen = asyncio.run(join())
    assert seen[0] == {"type": "sim_media", "video": "freeze", "audio": "none"}
    assert [m["type"] for m in seen[1:]] == [
        "avatar_started_speaking",
        "avatar_started_speaking_phrase",
        "avatar_ended_speaking_phrase",
        "avatar_ended_speaking",
    ]


def test_without_media_faults_nothing_is_said_and_other_knobs_leave_them_alone(sim, viewer):
    session_id, token = create(sim)

    async def join() -> dict[str, Any]:
        async with viewer(sim.base_url, token) as v:
            # an HTTP fault set and cleared: no media message for it
            await asyncio.to_thread(sim.set_faults, FaultConfig(latency_ms=1))
            await asyncio.to_thread(sim.set_faults, FaultConfig())
            await asyncio.to_thread(say, sim, session_id, "Hi.")
            return await v.next()

    assert asyncio.run(join()) == {"type": "avatar_started_speaking"}


def test_ended_sessions_are_not_told(sim, viewer):
    session_id, token = create(sim)

    async def run() -> tuple[Any, ...]:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(
                httpx.post, sim.base_url + f"/_sim/sessions/{session_id}/kill", json={}
            )
            closed = await v.closed()
        await asyncio.to_thread(sim.set_faults, FaultConfig(audio_fault="mute"))
        return closed

    code, _reason, messages = asyncio.run(run())
    assert code == 4003 and all(m["type"] != "sim_media" for m in messages)


@pytest.mark.parametrize(
    "body", [{"video_fault": "grey"}, {"audio_fault": "loud"}, {"video_fault": 1}]
)
def test_bad_media_knobs_are_refused(sim, body):
    assert httpx.put(sim.base_url + "/_sim/faults", json=body).status_code == 422


def test_the_media_flags_build_the_config():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    config = cli.config_from_args(
        parser.parse_args(["--video-fault", "black", "--audio-fault", "mute"])
    )
    assert (config.faults.video_fault, config.faults.audio_fault) == ("black", "mute")
    default = cli.config_from_args(parser.parse_args([]))
    assert (default.faults.video_fault, default.faults.audio_fault) == ("none", "none")
    with pytest.raises(SystemExit):
        parser.parse_args(["--video-fault", "grey"])


def test_refused_event_channels_leave_the_session_without_a_viewer_until_it_ends(
    make_sim, viewer, until
):
    """A page cut off from the service: its channel drops and cannot come back; with nobody
    watching, the session ends as user_absent_timeout (10 s at a time scale of 50: 0.2 s)."""
    from websockets.exceptions import InvalidStatus

    sim = make_sim(time_scale=50)
    body = {"user_absent_timeout": 10, "max_duration": 3600}
    answer = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH, json=body).json()
    session_id, token = answer["session_id"], answer["token"]

    async def cut_off() -> tuple[Any, ...]:
        async with viewer(sim.base_url, token) as v:
            faults = FaultConfig(refuse_event_channels=True, drop_event_channels=True)
            await asyncio.to_thread(sim.set_faults, faults)
            closed = await v.closed()
        with pytest.raises(InvalidStatus) as refused:
            async with viewer(sim.base_url, token):
                pass
        return closed, refused.value.response.status_code

    (code, _reason, _messages), status = asyncio.run(cut_off())
    assert (code, status) == (4100, 503)
    assert sim.faults().refuse_event_channels is True  # it stays until set back

    def ended() -> str | None:
        (session,) = sim.snapshot()["sessions"]
        return session["end_reason"]

    until(lambda: ended() == "user_absent_timeout")
    sim.set_faults(FaultConfig())
    second = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH, json=body).json()

    async def join() -> dict[str, Any]:
        async with viewer(sim.base_url, second["token"]) as v:
            await asyncio.to_thread(say, sim, second["session_id"], "Back.")
            return await v.next()

    assert asyncio.run(join()) == {"type": "avatar_started_speaking"}
    assert session_id != second["session_id"]
