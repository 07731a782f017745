"""Every route and error shape of the simulated REST and SDK APIs, over real loopback HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from avaturn_desktop.core.catalog import RETIRED_AVATARS, VOICES
from avaturn_desktop.core.models import (
    MAX_TASK_TEXT,
    ErrorBody,
    SdkSession,
    SessionCreated,
    TaskCreated,
    ValidationErrorBody,
)
from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

VOICE = VOICES[1].id


@pytest.fixture(scope="module")
def sim():
    """One simulator for this module: every test makes its own sessions."""
    server = SimulatorServer(SimulatorConfig(chars_per_second=400.0))
    server.start()
    yield server
    server.stop()


def text_echo(voice_id: str = VOICE) -> dict[str, Any]:
    return {"type": "text-echo", "tts": {"engine": "elevenlabs", "voice_id": voice_id}}


def create(client: httpx.Client, **body: Any) -> SessionCreated:
    response = client.post("/api/v1/sessions", json=body)
    assert response.status_code == 200, response.text
    return SessionCreated.model_validate(response.json())


def assert_422(response: httpx.Response, loc_part: str | int | None = None) -> None:
    assert response.status_code == 422, response.text
    body = ValidationErrorBody.model_validate(response.json())
    assert body.detail and all(issue.msg for issue in body.detail)
    if loc_part is not None:
        assert any(loc_part in issue.loc for issue in body.detail), body.detail


def assert_detail(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return ErrorBody.model_validate(response.json()).detail


# -- sessions ----------------------------------------------------------------------------------


def test_empty_post_creates_a_session_with_the_default_voice(client, sim, view):
    response = client.post("/api/v1/sessions")
    assert response.status_code == 200
    created = SessionCreated.model_validate(response.json())
    assert created.session_id and created.token and created.token != created.session_id
    session = view(sim, created.session_id)
    assert session["avatar_id"] == "jane_20240829"
    assert session["voice_id"] == VOICES[0].id
    assert session["state"] == "waiting"


def test_full_body_is_accepted(client, sim, view):
    created = create(
        client,
        avatar_id="max_20241010",
        conversation_engine=text_echo(),
        background="transparent",
        model="golf",
        user_absent_timeout=10,
        max_duration=60,
    )
    session = view(sim, created.session_id)
    assert (session["voice_id"], session["background"], session["model"]) == (
        VOICE,
        "transparent",
        "golf",
    )


def test_other_engine_types_pass_through(client):
    create(client, conversation_engine={"type": "openai-realtime", "client_secret": "x"})


@pytest.mark.parametrize("avatar_id", ["nobody_19990101", RETIRED_AVATARS[0]])
def test_unknown_or_retired_avatar_is_410(client, avatar_id):
    detail = assert_detail(client.post("/api/v1/sessions", json={"avatar_id": avatar_id}), 410)
    assert avatar_id in detail


def test_unknown_voice_is_400(client):
    response = client.post("/api/v1/sessions", json={"conversation_engine": text_echo("nope")})
    assert "nope" in assert_detail(response, 400)


def test_extra_voices_are_known(make_sim):
    sim = make_sim(extra_voices=["my-clone"])
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": "Bearer k"}) as client:
        create(client, conversation_engine=text_echo("my-clone"))


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"user_absent_timeout": 9}, "user_absent_timeout"),
        ({"max_duration": 59}, "max_duration"),
        ({"max_duration": 86_401}, "max_duration"),
        ({"background": "green"}, "background"),
        ({"model": "omega"}, "model"),
        ({"avatar_id": ""}, "avatar_id"),
        ({"surprise": 1}, "surprise"),
        ({"conversation_engine": {"type": "text-echo"}}, "tts"),
        (
            {
                "conversation_engine": {
                    "type": "text-echo",
                    "tts": {"engine": "google", "voice_id": "v"},
                }
            },
            "engine",
        ),
        ({"user_absent_timeout": "soon"}, "user_absent_timeout"),
    ],
)
def test_invalid_session_bodies_are_422(client, body, loc):
    assert_422(client.post("/api/v1/sessions", json=body), loc)


def test_malformed_json_is_422(client):
    response = client.post(
        "/api/v1/sessions", content=b'{"avatar_id": ', headers={"Content-Type": "application/json"}
    )
    assert_422(response)
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_a_non_object_body_is_422(client):
    assert_422(client.post("/api/v1/sessions", json=[1, 2]))


# -- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic a2V5"}]
)
def test_missing_key_is_401(sim, headers):
    response = httpx.post(sim.base_url + "/api/v1/sessions", headers=headers)
    assert_detail(response, 401)


def test_a_configured_key_must_match(make_sim):
    sim = make_sim(api_key="s3cret-key")
    url = sim.base_url + "/api/v1/sessions"
    detail = assert_detail(httpx.post(url, headers={"Authorization": "Bearer wrong"}), 401)
    assert "s3cret" not in detail
    assert httpx.post(url, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200


def test_every_api_route_needs_the_key(client, sim):
    created = create(client)
    for method, path in [
        ("POST", f"/api/v1/sessions/{created.session_id}/tasks"),
        ("DELETE", f"/api/v1/sessions/{created.session_id}"),
    ]:
        response = httpx.request(method, sim.base_url + path, json={"text": "hi"})
        assert_detail(response, 401)


def test_the_key_is_not_in_the_config_repr():
    config = SimulatorConfig(api_key="s3cret-key")
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)


# -- tasks and delete --------------------------------------------------------------------------


def test_task_is_queued_and_answered_with_an_id(client, sim, view):
    created = create(client)
    response = client.post(f"/api/v1/sessions/{created.session_id}/tasks", json={"text": "Hello."})
    assert response.status_code == 200
    task = TaskCreated.model_validate(response.json())
    queue = view(sim, created.session_id)["queue"]
    assert [(t["task_id"], t["text"], t["status"]) for t in queue] == [
        (task.task_id, "Hello.", "queued")
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "   \n"},
        {"text": "x" * (MAX_TASK_TEXT + 1)},
        {},
        {"text": 5},
        {"text": "a", "b": 1},
    ],
)
def test_invalid_task_bodies_are_422(client, body):
    created = create(client)
    assert_422(client.post(f"/api/v1/sessions/{created.session_id}/tasks", json=body))


def test_the_longest_text_is_accepted(client):
    created = create(client)
    response = client.post(
        f"/api/v1/sessions/{created.session_id}/tasks", json={"text": "x" * MAX_TASK_TEXT}
    )
    assert response.status_code == 200


def test_unknown_session_is_404(client):
    assert_detail(client.post("/api/v1/sessions/nope/tasks", json={"text": "hi"}), 404)
    assert_detail(client.delete("/api/v1/sessions/nope"), 404)


def test_delete_ends_the_session_and_then_everything_is_404(client, sim, view):
    created = create(client)
    response = client.delete(f"/api/v1/sessions/{created.session_id}")
    assert response.status_code == 200 and response.content == b""
    session = view(sim, created.session_id)
    assert (session["state"], session["end_reason"]) == ("ended", "terminated")
    sdk = {"X-Session-Token": created.token}
    assert_detail(client.delete(f"/api/v1/sessions/{created.session_id}"), 404)
    assert_detail(
        client.post(f"/api/v1/sessions/{created.session_id}/tasks", json={"text": "a"}), 404
    )
    assert_detail(client.get("/_sdk/v0/sessions", headers=sdk), 404)
    assert_detail(client.post("/_sdk/v0/sessions/tasks", json={"text": "a"}, headers=sdk), 404)


# -- the SDK's private API ---------------------------------------------------------------------


def sdk(client: httpx.Client, token: str) -> httpx.Client:
    return httpx.Client(base_url=str(client.base_url), headers={"X-Session-Token": token})


@pytest.mark.parametrize(("background", "alpha"), [("default", False), ("transparent", True)])
def test_sdk_session_lookup(client, background, alpha):
    created = create(client, background=background)
    with sdk(client, created.token) as page:
        session = SdkSession.model_validate(page.get("/_sdk/v0/sessions").json())
    assert session.id == created.session_id
    assert session.session_config.uses_stacked_alpha is alpha
    assert session.room_url.startswith("http") and session.limited_access_token


def test_sdk_unknown_token_is_404_and_missing_token_401(client):
    with sdk(client, "not-a-token") as page:
        assert_detail(page.get("/_sdk/v0/sessions"), 404)
        assert_detail(page.post("/_sdk/v0/sessions/tasks", json={"text": "a"}), 404)
        assert_detail(page.post("/_sdk/v0/sessions/cancel_all_speech_tasks"), 404)
        assert_detail(page.post("/_sdk/v0/sessions/start_stream"), 404)
    assert_detail(httpx.get(str(client.base_url) + "/_sdk/v0/sessions"), 401)


def test_sdk_task_cancel_and_start_stream(client, sim, view):
    created = create(client)
    with sdk(client, created.token) as page:
        first = TaskCreated.model_validate(
            page.post("/_sdk/v0/sessions/tasks", json={"text": "a"}).json()
        )
        page.post("/_sdk/v0/sessions/tasks", json={"text": "b"})
        assert_422(page.post("/_sdk/v0/sessions/tasks", json={"text": " "}))
        assert page.post("/_sdk/v0/sessions/cancel_all_speech_tasks").json() == {"cancelled": 2}
        assert page.post("/_sdk/v0/sessions/start_stream").status_code == 200
    session = view(sim, created.session_id)
    assert session["queue"] == [] and session["stream_started"] is True
    first_task = session["tasks"][0]
    assert (first_task["task_id"], first_task["source"], first_task["status"]) == (
        first.task_id,
        "sdk",
        "cancelled",
    )


def test_sdk_change_voice(client, sim, view):
    created = create(client)
    patch = {"conversation_engine": text_echo(VOICES[2].id)}
    with sdk(client, created.token) as page:
        page.post("/_sdk/v0/sessions/tasks", json={"text": "queued"})
        bad = page.patch(
            "/_sdk/v0/sessions/config", json={"conversation_engine": text_echo("nope")}
        )
        assert_detail(bad, 400)
        assert view(sim, created.session_id)["voice_id"] == VOICES[0].id
        assert len(view(sim, created.session_id)["queue"]) == 1
        assert_422(
            page.patch(
                "/_sdk/v0/sessions/config", json={"conversation_engine": {"type": "text-echo"}}
            )
        )
        assert_422(page.patch("/_sdk/v0/sessions/config", json={}))
        good = page.patch("/_sdk/v0/sessions/config", json=patch)
        assert good.status_code == 200 and good.json()["cancelled"] == 1
    session = view(sim, created.session_id)
    assert session["voice_id"] == VOICES[2].id and session["queue"] == []


# -- CORS, the SDK file, the control routes ----------------------------------------------------


@pytest.mark.parametrize("origin", ["http://localhost:8123", "avaturn-app://stage", "null"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_sdk/v0/sessions"),
        ("POST", "/_sdk/v0/sessions/tasks"),
        ("PATCH", "/_sdk/v0/sessions/config"),
        ("POST", "/_sdk/v0/sessions/cancel_all_speech_tasks"),
    ],
)
def test_cors_preflight(sim, origin, method, path):
    response = httpx.options(
        sim.base_url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "x-session-token, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    allowed_methods = response.headers["access-control-allow-methods"]
    assert all(m in allowed_methods for m in ("GET", "POST", "PATCH", "DELETE", "OPTIONS"))
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "x-session-token" in allowed and "content-type" in allowed


def test_cors_on_answers_and_errors(client):
    created = create(client)
    origin = {"Origin": "avaturn-app://stage"}
    ok = httpx.get(
        str(client.base_url) + "/_sdk/v0/sessions",
        headers={**origin, "X-Session-Token": created.token},
    )
    missing = httpx.get(
        str(client.base_url) + "/_sdk/v0/sessions", headers={**origin, "X-Session-Token": "no"}
    )
    for response in (ok, missing):
        assert response.headers["access-control-allow-origin"] == "*"


def test_the_sdk_module_is_served(sim):
    assert sim.sdk_url == sim.base_url + "/sim/web-sdk.js"
    response = httpx.get(sim.sdk_url, headers={"Origin": "http://elsewhere.test"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["access-control-allow-origin"] == "*"
    assert "export class AvaturnHead" in response.text


def test_state_and_kill_routes(client, sim, view):
    created = create(client)
    state = httpx.get(sim.base_url + "/_sim/state").json()
    assert created.session_id in [s["session_id"] for s in state["sessions"]]
    assert created.token not in httpx.get(sim.base_url + "/_sim/state").text
    kill = httpx.post(
        sim.base_url + f"/_sim/sessions/{created.session_id}/kill", json={"reason": "test"}
    )
    assert kill.status_code == 200
    ended = view(sim, created.session_id)
    assert (ended["end_reason"], ended["end_message"]) == ("killed", "test")
    assert_detail(httpx.post(sim.base_url + f"/_sim/sessions/{created.session_id}/kill"), 404)


def test_server_lifecycle(make_sim):
    sim: SimulatorServer = make_sim()
    assert sim.base_url.startswith("http://127.0.0.1:")
    assert httpx.get(sim.sdk_url).status_code == 200
    sim.stop()
    sim.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(sim.sdk_url)
