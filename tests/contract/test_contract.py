"""The service contract (avaturn-api.md) over real loopback HTTP, against the simulator.

Each call is made through ``AvaturnClient`` (typed answers and errors) and, for the error
shapes, with raw httpx too. A viewer on the event WebSocket makes the avatar actually speak.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from avaturn_desktop.core.catalog import DEFAULT_VOICE_ID, RETIRED_AVATARS
from avaturn_desktop.core.errors import (
    AppError,
    AuthError,
    ConfigError,
    GoneError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceTimeoutError,
    UnclearOutcomeError,
)
from avaturn_desktop.core.models import (
    DEFAULT_AVATAR_ID,
    MAX_TASK_TEXT,
    SPEECH_EVENT_TYPES,
    OtherEngine,
    SdkSession,
    SessionCreate,
    SessionCreated,
    TextEchoEngine,
    TTSConfig,
)
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.simulator.server import FaultConfig, SimulatorConfig, SimulatorServer

KEY = "contract-suite-key-7f3a"
OTHER_VOICE = "EXAVITQu4vr4xnSDxMaL"
#: How long any one awaited event may take; the simulator speaks at 400 chars/s.
EVENT_TIMEOUT = 10.0

Flow = Callable[[AvaturnClient], Awaitable[Any]]


class Drive:
    """Runs an async flow with a client over one pooled httpx client; records retry sleeps."""

    def __init__(self, server: Any, *, api_key: str = KEY, max_retries: int = 3) -> None:
        self.server = server
        self.api_key = api_key
        self.max_retries = max_retries
        self.sleeps: list[float] = []

    async def _sleep(self, delay: float) -> None:
        self.sleeps.append(delay)

    def __call__(self, flow: Flow) -> Any:
        async def main() -> Any:
            async with httpx.AsyncClient() as http:
                client = AvaturnClient(
                    http,
                    api_key=self.api_key,
                    base_url=self.server.base_url,
                    timeout=5.0,
                    max_retries=self.max_retries,
                    sleep=self._sleep,
                )
                return await flow(client)

        return asyncio.run(main())

    def fails(self, flow: Flow, kind: type[AppError]) -> AppError:
        with pytest.raises(kind) as info:
            self(flow)
        return info.value


@pytest.fixture
def drive(simulator: Any) -> Drive:
    return Drive(simulator)


@pytest.fixture
def raw(simulator: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=simulator.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5.0
    ) as client:
        yield client


@pytest.fixture
def keyed_simulator() -> Iterator[SimulatorServer]:
    """A simulator that accepts one API key only (the fixture's accepts any)."""
    server = SimulatorServer(SimulatorConfig(port=0, api_key=KEY, chars_per_second=400.0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def session_view(server: Any, session_id: str) -> dict[str, Any]:
    (view,) = [s for s in server.snapshot()["sessions"] if s["session_id"] == session_id]
    return view


def assert_detail_text(response: httpx.Response, status: int) -> str:
    """A ``{"detail": "<message>"}`` error; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body["detail"]


def assert_validation(response: httpx.Response) -> list[dict[str, Any]]:
    """FastAPI's 422 shape; returns its issues."""
    assert response.status_code == 422, response.text
    issues = response.json()["detail"]
    assert isinstance(issues, list)
    assert issues
    for issue in issues:
        assert isinstance(issue["loc"], list)
        assert isinstance(issue["msg"], str)
        assert isinstance(issue["type"], str)
    return issues


# -- the event channel ------------------------------------------------------------------------


def events_url(server: Any, token: str) -> str:
    return server.base_url.replace("http://", "ws://", 1) + (
        f"/_sdk/v0/sessions/events?token={quote(token, safe='')}"
    )


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    """The next speech or error event (simulator-only types such as captions are skipped)."""
    async with asyncio.timeout(EVENT_TIMEOUT):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] in SPEECH_EVENT_TYPES or event["type"] == "error":
                return event


async def events_until(ws: ClientConnection, last: tuple[str, str | None]) -> list[tuple[str, Any]]:
    """Collect ``(type, phrase_id)`` pairs up to and including ``last``."""
    seen: list[tuple[str, Any]] = []
    while not seen or seen[-1] != last:
        event = await next_event(ws)
        seen.append((event["type"], event.get("phrase_id")))
    return seen


# -- POST /api/v1/sessions --------------------------------------------------------------------


def test_create_with_an_empty_body_gives_the_defaults(simulator: Any, drive: Drive) -> None:
    created = drive(lambda c: c.create_session())
    assert isinstance(created, SessionCreated)
    assert created.session_id
    assert created.token
    view = session_view(simulator, created.session_id)
    assert view["avatar_id"] == DEFAULT_AVATAR_ID
    assert view["voice_id"] == DEFAULT_VOICE_ID
    assert (view["background"], view["model"]) == ("default", "delta")
    assert (view["user_absent_timeout"], view["max_duration"]) == (60, 3600)
    assert view["state"] == "waiting"


def test_create_with_every_field(simulator: Any, drive: Drive) -> None:
    request = SessionCreate(
        avatar_id="max_20241010",
        conversation_engine=TextEchoEngine(tts=TTSConfig(voice_id=OTHER_VOICE)),
        background="transparent",
        model="golf",
        user_absent_timeout=10,
        max_duration=86_400,
    )
    created = drive(lambda c: c.create_session(request))
    view = session_view(simulator, created.session_id)
    assert view["avatar_id"] == "max_20241010"
    assert view["voice_id"] == OTHER_VOICE
    assert (view["background"], view["model"]) == ("transparent", "golf")
    assert (view["user_absent_timeout"], view["max_duration"]) == (10, 86_400)


def test_create_with_another_engine_type_is_accepted(drive: Drive) -> None:
    engine = OtherEngine.model_validate({"type": "external", "url": "wss://engine.example"})
    created = drive(lambda c: c.create_session(SessionCreate(conversation_engine=engine)))
    assert created.session_id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_absent_timeout", 9),
        ("max_duration", 59),
        ("max_duration", 86_401),
        ("background", "green"),
        ("model", "zulu"),
    ],
)
def test_create_refuses_out_of_range_fields(
    simulator: Any, drive: Drive, raw: httpx.Client, field: str, value: Any
) -> None:
    response = raw.post("/api/v1/sessions", json={field: value})
    if response.status_code == 400:  # the docs say "400: bad render model"; FastAPI says 422
        assert field == "model"
        assert_detail_text(response, 400)
    else:
        (issue,) = assert_validation(response)
        assert issue["loc"] == ["body", field]
    # The client validates before sending; a constructed model gets past that and the
    # service's refusal comes back readable.
    bad = SessionCreate.model_construct(**{field: value})
    err = drive.fails(lambda c: c.create_session(bad), InvalidRequestError)
    assert field in err.user_message or response.status_code == 400
    assert simulator.snapshot()["sessions"] == []


@pytest.mark.parametrize(
    ("engine", "where"),
    [
        ({"type": "text-echo"}, "tts"),
        ({"type": "text-echo", "tts": {"engine": "azure", "voice_id": DEFAULT_VOICE_ID}}, "engine"),
        ({"type": "text-echo", "tts": {"engine": "elevenlabs"}}, "voice_id"),
    ],
)
def test_create_refuses_a_bad_text_echo_engine(
    simulator: Any, raw: httpx.Client, engine: dict[str, Any], where: str
) -> None:
    (issue,) = assert_validation(raw.post("/api/v1/sessions", json={"conversation_engine": engine}))
    assert issue["loc"][:2] == ["body", "conversation_engine"]
    assert issue["loc"][-1] == where
    assert simulator.snapshot()["sessions"] == []


def test_create_refuses_an_unknown_field(raw: httpx.Client) -> None:
    (issue,) = assert_validation(raw.post("/api/v1/sessions", json={"render_model": "golf"}))
    assert issue["loc"] == ["body", "render_model"]


def test_create_with_an_unknown_voice_is_400(
    simulator: Any, drive: Drive, raw: httpx.Client
) -> None:
    engine = {"type": "text-echo", "tts": {"engine": "elevenlabs", "voice_id": "no-such-voice"}}
    detail = assert_detail_text(
        raw.post("/api/v1/sessions", json={"conversation_engine": engine}), 400
    )
    assert "no-such-voice" in detail
    request = SessionCreate(
        conversation_engine=TextEchoEngine(tts=TTSConfig(voice_id="no-such-voice"))
    )
    err = drive.fails(lambda c: c.create_session(request), InvalidRequestError)
    assert isinstance(err, InvalidRequestError)
    assert err.status == 400
    assert "no-such-voice" in err.user_message
    assert simulator.snapshot()["sessions"] == []


@pytest.mark.parametrize("avatar", [RETIRED_AVATARS[0], "nobody_20990101"])
def test_create_with_an_unknown_avatar_is_410(
    simulator: Any, drive: Drive, raw: httpx.Client, avatar: str
) -> None:
    detail = assert_detail_text(raw.post("/api/v1/sessions", json={"avatar_id": avatar}), 410)
    assert avatar in detail
    err = drive.fails(lambda c: c.create_session(SessionCreate(avatar_id=avatar)), GoneError)
    assert avatar in err.user_message
    assert simulator.snapshot()["sessions"] == []


def test_create_with_a_wrong_key_is_401(keyed_simulator: SimulatorServer) -> None:
    wrong = "not-the-key-123"
    url = keyed_simulator.base_url + "/api/v1/sessions"
    assert_detail_text(httpx.post(url), 401)
    assert_detail_text(httpx.post(url, headers={"Authorization": f"Bearer {wrong}"}), 401)
    assert_detail_text(httpx.post(url, headers={"Authorization": f"Basic {KEY}"}), 401)
    err = Drive(keyed_simulator, api_key=wrong).fails(lambda c: c.create_session(), AuthError)
    assert err.user_message.startswith("API key rejected")
    assert wrong not in err.user_message
    assert keyed_simulator.snapshot()["sessions"] == []
    # and the right key works
    assert Drive(keyed_simulator)(lambda c: c.create_session()).session_id


def test_every_public_call_needs_the_key(keyed_simulator: SimulatorServer) -> None:
    created = Drive(keyed_simulator)(lambda c: c.create_session())
    wrong = Drive(keyed_simulator, api_key="wrong-key-456")
    wrong.fails(lambda c: c.add_task(created.session_id, "Hello"), AuthError)
    wrong.fails(lambda c: c.terminate_session(created.session_id), AuthError)
    view = session_view(keyed_simulator, created.session_id)
    assert view["state"] == "waiting"
    assert view["tasks"] == []


def test_create_with_malformed_json_is_422(simulator: Any, raw: httpx.Client) -> None:
    response = raw.post(
        "/api/v1/sessions", content=b'{"avatar_id": ', headers={"Content-Type": "application/json"}
    )
    (issue,) = assert_validation(response)
    assert issue["type"] == "json_invalid"
    assert simulator.snapshot()["sessions"] == []


# -- tasks ------------------------------------------------------------------------------------


def test_task_is_queued_in_order(simulator: Any, drive: Drive) -> None:
    async def flow(c: AvaturnClient) -> tuple[str, list[str]]:
        created = await c.create_session()
        ids = [(await c.add_task(created.session_id, t)).task_id for t in ("One.", "Two.")]
        return created.session_id, ids

    session_id, task_ids = drive(flow)
    view = session_view(simulator, session_id)
    assert [(t["task_id"], t["text"], t["source"]) for t in view["tasks"]] == [
        (task_ids[0], "One.", "api"),
        (task_ids[1], "Two.", "api"),
    ]
    # no viewer, so nothing is spoken yet
    assert [t["status"] for t in view["tasks"]] == ["queued", "queued"]


@pytest.mark.parametrize("text", ["", "   ", "x" * (MAX_TASK_TEXT + 1)])
def test_empty_or_huge_tasks_are_refused(
    simulator: Any, drive: Drive, raw: httpx.Client, text: str
) -> None:
    created = drive(lambda c: c.create_session())
    path = f"/api/v1/sessions/{created.session_id}/tasks"
    assert_validation(raw.post(path, json={"text": text}))
    assert_validation(raw.post(path, json={}))
    with pytest.raises(ConfigError):
        drive(lambda c: c.add_task(created.session_id, text))
    with pytest.raises(ConfigError):
        drive(lambda c: c.sdk_task(created.token, text))
    assert session_view(simulator, created.session_id)["tasks"] == []


def test_task_of_the_longest_allowed_text(simulator: Any, drive: Drive) -> None:
    async def flow(c: AvaturnClient) -> str:
        created = await c.create_session()
        await c.add_task(created.session_id, "y" * MAX_TASK_TEXT)
        return created.session_id

    (task,) = session_view(simulator, drive(flow))["tasks"]
    assert len(task["text"]) == MAX_TASK_TEXT


def test_task_for_an_unknown_session_is_404(drive: Drive, raw: httpx.Client) -> None:
    assert_detail_text(raw.post("/api/v1/sessions/no-such-session/tasks", json={"text": "Hi"}), 404)
    err = drive.fails(lambda c: c.add_task("no-such-session", "Hi"), NotFoundError)
    assert "(404)" in err.user_message


# -- DELETE -----------------------------------------------------------------------------------


def test_delete_ends_the_session_then_everything_is_404(
    simulator: Any, drive: Drive, raw: httpx.Client
) -> None:
    created = drive(lambda c: c.create_session())
    assert drive(lambda c: c.terminate_session(created.session_id)) is None
    view = session_view(simulator, created.session_id)
    assert (view["state"], view["end_reason"]) == ("ended", "terminated")

    path = f"/api/v1/sessions/{created.session_id}"
    assert_detail_text(raw.delete(path), 404)
    assert_detail_text(raw.post(path + "/tasks", json={"text": "Hi"}), 404)
    drive.fails(lambda c: c.terminate_session(created.session_id), NotFoundError)
    drive.fails(lambda c: c.add_task(created.session_id, "Hi"), NotFoundError)
    drive.fails(lambda c: c.get_sdk_session(created.token), NotFoundError)
    drive.fails(lambda c: c.sdk_task(created.token, "Hi"), NotFoundError)


def test_delete_of_an_unknown_session_is_404(drive: Drive, raw: httpx.Client) -> None:
    assert_detail_text(raw.delete("/api/v1/sessions/no-such-session"), 404)
    drive.fails(lambda c: c.terminate_session("no-such-session"), NotFoundError)


# -- the SDK's private API --------------------------------------------------------------------


@pytest.mark.parametrize("background", ["default", "transparent"])
def test_sdk_session_lookup_by_token(drive: Drive, background: str) -> None:
    async def flow(c: AvaturnClient) -> tuple[SessionCreated, SdkSession]:
        created = await c.create_session(SessionCreate.model_validate({"background": background}))
        return created, await c.get_sdk_session(created.token)

    created, session = drive(flow)
    assert session.id == created.session_id
    assert session.room_url
    assert session.limited_access_token
    assert session.session_config.uses_stacked_alpha is (background == "transparent")


def test_sdk_calls_with_a_wrong_token_are_404(drive: Drive, simulator: Any) -> None:
    response = httpx.get(
        simulator.base_url + "/_sdk/v0/sessions", headers={"X-Session-Token": "wrong-token"}
    )
    assert_detail_text(response, 404)
    drive.fails(lambda c: c.get_sdk_session("wrong-token"), NotFoundError)
    drive.fails(lambda c: c.sdk_task("wrong-token", "Hi"), NotFoundError)
    drive.fails(lambda c: c.cancel_all("wrong-token"), NotFoundError)
    drive.fails(lambda c: c.change_voice("wrong-token", OTHER_VOICE), NotFoundError)
    drive.fails(lambda c: c.start_stream("wrong-token"), NotFoundError)


def test_sdk_api_needs_no_api_key(simulator: Any, drive: Drive) -> None:
    created = drive(lambda c: c.create_session())
    response = httpx.post(
        simulator.base_url + "/_sdk/v0/sessions/tasks",
        json={"text": "From the page."},
        headers={"X-Session-Token": created.token},
    )
    assert response.status_code == 200
    assert response.json()["task_id"]


def test_sdk_task_cancel_all_and_start_stream(simulator: Any, drive: Drive) -> None:
    async def flow(c: AvaturnClient) -> tuple[str, str, dict[str, Any]]:
        created = await c.create_session()
        task = await c.sdk_task(created.token, "Said by the page.")
        await c.start_stream(created.token)
        cancelled = await c.cancel_all(created.token)
        return created.session_id, task.task_id, cancelled

    session_id, task_id, cancelled = drive(flow)
    assert isinstance(cancelled, dict)
    view = session_view(simulator, session_id)
    (task,) = view["tasks"]
    assert (task["task_id"], task["source"], task["status"]) == (task_id, "sdk", "cancelled")
    assert view["stream_started"] is True


def test_change_voice(simulator: Any, drive: Drive, raw: httpx.Client) -> None:
    created = drive(lambda c: c.create_session())
    drive(lambda c: c.change_voice(created.token, OTHER_VOICE))
    assert session_view(simulator, created.session_id)["voice_id"] == OTHER_VOICE

    body = {
        "conversation_engine": {
            "type": "text-echo",
            "tts": {"engine": "elevenlabs", "voice_id": "no-such-voice"},
        }
    }
    response = raw.patch(
        "/_sdk/v0/sessions/config", json=body, headers={"X-Session-Token": created.token}
    )
    assert "no-such-voice" in assert_detail_text(response, 400)
    err = drive.fails(lambda c: c.change_voice(created.token, "no-such-voice"), InvalidRequestError)
    assert "no-such-voice" in err.user_message
    assert session_view(simulator, created.session_id)["voice_id"] == OTHER_VOICE


def test_sdk_api_answers_cors_preflight(simulator: Any) -> None:
    response = httpx.options(
        simulator.base_url + "/_sdk/v0/sessions/config",
        headers={
            "Origin": "avaturn://app",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "X-Session-Token, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "avaturn://app")
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "x-session-token" in allowed
    assert "content-type" in allowed
    assert "PATCH" in response.headers["access-control-allow-methods"]


# -- a viewer: tasks are spoken ---------------------------------------------------------------


def test_a_viewer_hears_the_tasks_in_order(simulator: Any, drive: Drive) -> None:
    long_text = "A phrase long enough to queue another behind it. " * 4  # 0.5 s at 400 chars/s

    async def flow(c: AvaturnClient) -> tuple[list[str], list[tuple[str, Any]], str]:
        created = await c.create_session()
        # queued while nobody watches (REST and SDK alike), spoken once a viewer joins
        ids = [(await c.add_task(created.session_id, t)).task_id for t in ("One.", "Two.")]
        ids.append((await c.sdk_task(created.token, "Three, from the page.")).task_id)
        async with connect(events_url(simulator, created.token)) as ws:
            seen = await events_until(ws, ("avatar_ended_speaking", None))
            # and while it watches: the next task queues behind the one being spoken
            ids.append((await c.add_task(created.session_id, long_text)).task_id)
            seen += await events_until(ws, ("avatar_started_speaking_phrase", ids[3]))
            ids.append((await c.add_task(created.session_id, "Five.")).task_id)
            seen += await events_until(ws, ("avatar_ended_speaking", None))
        return ids, seen, created.session_id

    ids, seen, session_id = drive(flow)
    # phrase_id equals task_id in the simulator's default mode, so the ids can be checked too
    assert seen == [
        ("avatar_started_speaking", None),
        ("avatar_started_speaking_phrase", ids[0]),
        ("avatar_ended_speaking_phrase", ids[0]),
        ("avatar_started_speaking_phrase", ids[1]),
        ("avatar_ended_speaking_phrase", ids[1]),
        ("avatar_started_speaking_phrase", ids[2]),
        ("avatar_ended_speaking_phrase", ids[2]),
        ("avatar_ended_speaking", None),
        ("avatar_started_speaking", None),
        ("avatar_started_speaking_phrase", ids[3]),
        ("avatar_ended_speaking_phrase", ids[3]),
        ("avatar_started_speaking_phrase", ids[4]),
        ("avatar_ended_speaking_phrase", ids[4]),
        ("avatar_ended_speaking", None),
    ]
    view = session_view(simulator, session_id)
    assert [t["status"] for t in view["tasks"]] == ["spoken"] * 5
    assert [t["source"] for t in view["tasks"]] == ["api", "api", "sdk", "api", "api"]


def test_tasks_wait_for_a_viewer(simulator: Any, drive: Drive) -> None:
    async def flow(c: AvaturnClient) -> tuple[str, list[tuple[str, Any]]]:
        created = await c.create_session()
        task = await c.add_task(created.session_id, "Held until someone watches.")
        assert session_view(simulator, created.session_id)["tasks"][0]["status"] == "queued"
        async with connect(events_url(simulator, created.token)) as ws:
            seen = await events_until(ws, ("avatar_ended_speaking", None))
        return task.task_id, seen

    task_id, seen = drive(flow)
    assert ("avatar_started_speaking_phrase", task_id) in seen
    assert ("avatar_ended_speaking_phrase", task_id) in seen


def test_cancel_all_cuts_the_phrase_and_empties_the_queue(simulator: Any, drive: Drive) -> None:
    long_text = "This sentence goes on and on. " * 100  # 3000 chars: 7.5 s at 400 chars/s

    async def flow(c: AvaturnClient) -> tuple[list[str], list[tuple[str, Any]], str]:
        created = await c.create_session()
        async with connect(events_url(simulator, created.token)) as ws:
            first = (await c.add_task(created.session_id, long_text)).task_id
            second = (await c.add_task(created.session_id, "Never said.")).task_id
            seen = await events_until(ws, ("avatar_started_speaking_phrase", first))
            answer = await c.cancel_all(created.token)
            assert isinstance(answer, dict)
            seen += await events_until(ws, ("avatar_ended_speaking", None))
        return [first, second], seen, created.session_id

    (first, second), seen, session_id = drive(flow)
    assert seen == [
        ("avatar_started_speaking", None),
        ("avatar_started_speaking_phrase", first),
        ("avatar_ended_speaking_phrase", first),
        ("avatar_ended_speaking", None),
    ]
    statuses = {t["task_id"]: t["status"] for t in session_view(simulator, session_id)["tasks"]}
    assert statuses == {first: "cancelled", second: "cancelled"}


def test_change_voice_drops_the_queue_and_speaks_on_with_the_new_voice(
    simulator: Any, drive: Drive
) -> None:
    async def flow(c: AvaturnClient) -> tuple[list[str], str]:
        created = await c.create_session()
        async with connect(events_url(simulator, created.token)) as ws:
            first = (
                await c.add_task(created.session_id, "Long enough to still be speaking. " * 8)
            ).task_id
            dropped = (await c.add_task(created.session_id, "Dropped by the voice change.")).task_id
            await events_until(ws, ("avatar_started_speaking_phrase", first))
            await c.change_voice(created.token, OTHER_VOICE)
            await events_until(ws, ("avatar_ended_speaking", None))
            after = (await c.add_task(created.session_id, "New voice.")).task_id
            await events_until(ws, ("avatar_ended_speaking", None))
        return [first, dropped, after], created.session_id

    (first, dropped, after), session_id = drive(flow)
    tasks = {t["task_id"]: t for t in session_view(simulator, session_id)["tasks"]}
    assert tasks[first]["status"] == "spoken"
    assert tasks[first]["voice_id"] == DEFAULT_VOICE_ID
    assert tasks[dropped]["status"] == "cancelled"
    assert (tasks[after]["status"], tasks[after]["voice_id"]) == ("spoken", OTHER_VOICE)


def test_delete_tells_the_viewer_and_closes_its_channel(simulator: Any, drive: Drive) -> None:
    async def flow(c: AvaturnClient) -> tuple[dict[str, Any], int | None]:
        created = await c.create_session()
        async with connect(events_url(simulator, created.token)) as ws:
            await c.terminate_session(created.session_id)
            event = await next_event(ws)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(EVENT_TIMEOUT):
                    await ws.recv()
            return event, ws.close_code

    event, code = drive(flow)
    assert event["type"] == "error"
    assert event["code"]
    assert code == 4000


def test_the_event_channel_refuses_a_wrong_token(simulator: Any) -> None:
    async def flow() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(events_url(simulator, "wrong-token")):
                pass
        return info.value.response.status_code

    assert asyncio.run(flow()) == 404


# -- faults: the retry rules over a real socket -----------------------------------------------


def test_429_is_retried_for_create_and_goes_to_the_caller_for_tasks(
    simulator: Any, drive: Drive
) -> None:
    created = drive(lambda c: c.create_session())
    simulator.set_faults(FaultConfig(rate_limit_burst=2, retry_after_s=0))
    again = drive(lambda c: c.create_session())
    assert again.session_id
    assert drive.sleeps == [0.0, 0.0]
    # a task's 429 is the speech queue's to wait out (visibly, skippably), not the client's
    simulator.set_faults(FaultConfig(rate_limit_burst=1, retry_after_s=1))
    refused = drive.fails(lambda c: c.add_task(created.session_id, "Busy."), RateLimitedError)
    assert isinstance(refused, RateLimitedError) and refused.retry_after == 1.0
    assert drive.sleeps[2:] == []
    task = drive(lambda c: c.add_task(created.session_id, "Busy."))
    assert task.task_id
    assert len(session_view(simulator, created.session_id)["tasks"]) == 1


def test_503_is_retried_for_delete_but_not_for_tasks(simulator: Any, drive: Drive) -> None:
    created = drive(lambda c: c.create_session())
    simulator.set_faults(FaultConfig(error_rate=1.0, error_status=503))
    # a 503 does not prove the text was refused (a gateway may have passed it on)
    drive.fails(lambda c: c.add_task(created.session_id, "Hi"), UnclearOutcomeError)
    assert drive.sleeps == []
    drive.fails(lambda c: c.terminate_session(created.session_id), ServerError)
    assert len(drive.sleeps) == drive.max_retries
    simulator.set_faults(FaultConfig())
    drive(lambda c: c.terminate_session(created.session_id))


def test_a_reset_task_is_unclear_and_not_sent_again(simulator: Any, drive: Drive) -> None:
    created = drive(lambda c: c.create_session())
    simulator.set_faults(FaultConfig(reset_rate=1.0))
    err = drive.fails(lambda c: c.add_task(created.session_id, "Maybe."), UnclearOutcomeError)
    assert "may or may not be spoken" in err.user_message
    drive.fails(lambda c: c.sdk_task(created.token, "Maybe."), UnclearOutcomeError)
    assert drive.sleeps == []
    # an idempotent call is retried, then gives up
    drive.fails(lambda c: c.get_sdk_session(created.token), NetworkError)
    assert len(drive.sleeps) == drive.max_retries
    simulator.set_faults(FaultConfig())
    assert drive(lambda c: c.get_sdk_session(created.token)).id == created.session_id


def test_latency_beyond_the_timeout_is_a_timeout(simulator: Any) -> None:
    simulator.set_faults(FaultConfig(latency_ms=800))
    sleeps: list[float] = []

    async def record(delay: float) -> None:
        sleeps.append(delay)

    async def main() -> tuple[AppError, AppError]:
        async with httpx.AsyncClient() as http:
            client = AvaturnClient(
                http,
                api_key=KEY,
                base_url=simulator.base_url,
                timeout=0.3,
                max_retries=1,
                sleep=record,
            )
            # A create that may have arrived is not sent again...
            with pytest.raises(ServiceTimeoutError) as create:
                await client.create_session()
            assert sleeps == []
            # ...a lookup is, up to max_retries times.
            with pytest.raises(ServiceTimeoutError) as lookup:
                await client.get_sdk_session("any-token")
            return create.value, lookup.value

    create, lookup = asyncio.run(main())
    assert "within 0.3 s" in create.user_message
    assert "may have been done anyway" in create.user_message
    assert "within 0.3 s" in lookup.user_message
    assert len(sleeps) == 1
