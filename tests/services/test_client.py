"""AvaturnClient over httpx.MockTransport: requests, error mapping, retry rules, secrets."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from avaturn_desktop.core.errors import (
    RETRY_AFTER_CEILING_S,
    ApiError,
    AppError,
    AuthError,
    BadAnswerError,
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
    MAX_TASK_TEXT,
    SdkSession,
    SessionCreate,
    SessionCreated,
    TaskCreated,
    TextEchoEngine,
    TTSConfig,
)
from avaturn_desktop.services.client import MAX_RETRY_AFTER, AvaturnClient

KEY = "sk-live-SECRET-KEY-0123456789"
TOKEN = "tok-SECRET-TOKEN-abcdef"
BASE = "https://api.example.test"

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler that plays its steps in order and records every request."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.steps, f"unexpected extra request {request.method} {request.url}"
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            if isinstance(step, httpx.RequestError):
                step.request = request
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    @property
    def count(self) -> int:
        return len(self.requests)


def ok(body: Any = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body) if body is not None else httpx.Response(status)


def error(
    status: int, detail: Any = "nope", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail}, headers=headers)


class Run:
    """Runs one coroutine against a fresh client over ``script``; records the retry sleeps."""

    def __init__(self, script: Script, **kwargs: Any) -> None:
        self.script = script
        self.kwargs = kwargs
        self.sleeps: list[float] = []
        self.http_closed_after: bool | None = None

    async def _sleep(self, delay: float) -> None:
        self.sleeps.append(delay)

    def __call__(self, fn: Callable[[AvaturnClient], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            async with httpx.AsyncClient(transport=httpx.MockTransport(self.script)) as http:
                client = AvaturnClient(
                    http, api_key=KEY, base_url=BASE, sleep=self._sleep, **self.kwargs
                )
                try:
                    return await fn(client)
                finally:
                    self.http_closed_after = http.is_closed

        return asyncio.run(main())


def run(script: Script, fn: Callable[[AvaturnClient], Awaitable[Any]], **kwargs: Any) -> Any:
    return Run(script, **kwargs)(fn)


def fails(
    script: Script, fn: Callable[[AvaturnClient], Awaitable[Any]], kind: type[AppError], **kw: Any
) -> AppError:
    with pytest.raises(kind) as info:
        run(script, fn, **kw)
    return info.value


CREATED = {"session_id": "s-1", "token": TOKEN}
SDK_SESSION = {
    "id": "s-1",
    "limited_access_token": "lat",
    "room_url": "https://rooms.example.test/r1",
    "session_config": {"uses_stacked_alpha": True},
}


# -- requests and answers ---------------------------------------------------------------------


def test_create_session_with_no_request_posts_an_empty_body() -> None:
    script = Script(ok(CREATED))
    created = run(script, lambda c: c.create_session())
    assert isinstance(created, SessionCreated)
    assert created.session_id == "s-1"
    assert created.token == TOKEN
    (req,) = script.requests
    assert (req.method, str(req.url)) == ("POST", f"{BASE}/api/v1/sessions")
    assert req.content == b""
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert "x-session-token" not in req.headers


def test_create_session_sends_every_field_it_was_given() -> None:
    request = SessionCreate(
        avatar_id="ann_20240901",
        conversation_engine=TextEchoEngine(tts=TTSConfig(voice_id="21m00Tcm4TlvDq8ikWAM")),
        background="transparent",
        model="golf",
        user_absent_timeout=30,
        max_duration=600,
    )
    script = Script(ok(CREATED))
    run(script, lambda c: c.create_session(request))
    (req,) = script.requests
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == {
        "avatar_id": "ann_20240901",
        "conversation_engine": {
            "type": "text-echo",
            "tts": {"engine": "elevenlabs", "voice_id": "21m00Tcm4TlvDq8ikWAM"},
        },
        "background": "transparent",
        "model": "golf",
        "user_absent_timeout": 30,
        "max_duration": 600,
    }


def test_create_session_leaves_defaults_to_the_service() -> None:
    script = Script(ok(CREATED))
    run(script, lambda c: c.create_session(SessionCreate(model="golf")))
    assert json.loads(script.requests[0].content) == {"model": "golf"}


def test_add_task_posts_the_text_to_the_session() -> None:
    script = Script(ok({"task_id": "t-9"}))
    answer = run(script, lambda c: c.add_task("s-1", "Hello, world!"))
    assert answer == TaskCreated(task_id="t-9")
    (req,) = script.requests
    assert (req.method, req.url.path) == ("POST", "/api/v1/sessions/s-1/tasks")
    assert json.loads(req.content) == {"text": "Hello, world!"}
    assert req.headers["authorization"] == f"Bearer {KEY}"


def test_session_ids_are_quoted_into_the_path() -> None:
    script = Script(ok())
    run(script, lambda c: c.terminate_session("a/../b c"))
    assert script.requests[0].url.raw_path == b"/api/v1/sessions/a%2F..%2Fb%20c"


def test_terminate_session_deletes_it() -> None:
    script = Script(ok())
    assert run(script, lambda c: c.terminate_session("s-1")) is None
    (req,) = script.requests
    assert (req.method, req.url.path) == ("DELETE", "/api/v1/sessions/s-1")


def test_sdk_calls_carry_the_token_and_never_the_key() -> None:
    script = Script(
        ok(SDK_SESSION),
        ok({"task_id": "t-1"}),
        ok({"cancelled": 2}),
        ok(),
        ok(),
    )

    async def calls(c: AvaturnClient) -> tuple[SdkSession, TaskCreated, dict[str, Any]]:
        session = await c.get_sdk_session(TOKEN)
        task = await c.sdk_task(TOKEN, "Hi")
        cancelled = await c.cancel_all(TOKEN)
        await c.change_voice(TOKEN, "EXAVITQu4vr4xnSDxMaL")
        await c.start_stream(TOKEN)
        return session, task, cancelled

    session, task, cancelled = run(script, calls)
    assert isinstance(session, SdkSession)
    assert session.session_config.uses_stacked_alpha is True
    assert session.room_url == "https://rooms.example.test/r1"
    assert task == TaskCreated(task_id="t-1")
    assert cancelled == {"cancelled": 2}
    assert [(r.method, r.url.path) for r in script.requests] == [
        ("GET", "/_sdk/v0/sessions"),
        ("POST", "/_sdk/v0/sessions/tasks"),
        ("POST", "/_sdk/v0/sessions/cancel_all_speech_tasks"),
        ("PATCH", "/_sdk/v0/sessions/config"),
        ("POST", "/_sdk/v0/sessions/start_stream"),
    ]
    for req in script.requests:
        assert req.headers["x-session-token"] == TOKEN
        assert "authorization" not in req.headers
    assert json.loads(script.requests[1].content) == {"text": "Hi"}
    assert json.loads(script.requests[3].content) == {
        "conversation_engine": {
            "type": "text-echo",
            "tts": {"engine": "elevenlabs", "voice_id": "EXAVITQu4vr4xnSDxMaL"},
        }
    }


def test_sdk_headers_follow_a_new_token() -> None:
    script = Script(ok(SDK_SESSION), ok(SDK_SESSION))

    async def calls(c: AvaturnClient) -> None:
        await c.get_sdk_session("first")
        await c.get_sdk_session("second")

    run(script, calls)
    assert [r.headers["x-session-token"] for r in script.requests] == ["first", "second"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200), {}),
        (ok([1, 2]), {"result": [1, 2]}),
        (ok({"ok": True}), {"ok": True}),
    ],
)
def test_cancel_all_copes_with_any_json_answer(
    response: httpx.Response, expected: dict[str, Any]
) -> None:
    assert run(Script(response), lambda c: c.cancel_all(TOKEN)) == expected


def test_cancel_all_refuses_a_non_json_answer() -> None:
    err = fails(
        Script(httpx.Response(200, text="<html>")), lambda c: c.cancel_all(TOKEN), BadAnswerError
    )
    assert "not JSON" in err.user_message


def test_every_call_uses_the_per_call_timeout() -> None:
    script = Script(ok(CREATED))
    run(script, lambda c: c.create_session(), timeout=2.5)
    assert script.requests[0].extensions["timeout"] == {
        "connect": 2.5,
        "read": 2.5,
        "write": 2.5,
        "pool": 2.5,
    }


def test_the_injected_http_client_is_shared_and_left_open() -> None:
    seen: list[int] = []

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(Script(ok(), ok()))) as http:
            client = AvaturnClient(http, api_key=KEY, base_url=BASE + "/")
            assert client.base_url == BASE
            await client.terminate_session("a")
            await client.terminate_session("b")
            seen.append(int(http.is_closed))

    asyncio.run(main())
    assert seen == [0]


# -- input validated before anything is sent --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "empty"), ("   \n\t", "empty"), ("x" * (MAX_TASK_TEXT + 1), f"at most {MAX_TASK_TEXT}")],
)
@pytest.mark.parametrize("sdk", [False, True])
def test_bad_text_raises_config_error_and_sends_nothing(text: str, words: str, sdk: bool) -> None:
    script = Script()

    def send(c: AvaturnClient) -> Awaitable[TaskCreated]:
        return c.sdk_task(TOKEN, text) if sdk else c.add_task("s-1", text)

    err = fails(script, send, ConfigError)
    assert words in err.user_message
    assert script.count == 0


def test_text_of_exactly_the_limit_is_sent() -> None:
    script = Script(ok({"task_id": "t"}))
    run(script, lambda c: c.add_task("s-1", "x" * MAX_TASK_TEXT))
    assert script.count == 1


@pytest.mark.parametrize("voice", ["", "v" * 201])
def test_bad_voice_id_raises_config_error_and_sends_nothing(voice: str) -> None:
    script = Script()
    fails(script, lambda c: c.change_voice(TOKEN, voice), ConfigError)
    assert script.count == 0


def test_missing_ids_raise_config_error() -> None:
    script = Script()
    fails(script, lambda c: c.terminate_session(""), ConfigError)
    fails(script, lambda c: c.add_task(" ", "hi"), ConfigError)
    fails(script, lambda c: c.get_sdk_session(""), ConfigError)
    assert script.count == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_key": ""},
        {"api_key": "  "},
        {"base_url": "api.avaturn.live"},
        {"timeout": 0},
        {"max_retries": -1},
    ],
)
def test_bad_construction_is_refused(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"api_key": KEY, "base_url": BASE, **kwargs}
    with pytest.raises(ConfigError):
        AvaturnClient(httpx.AsyncClient(), **args)


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "kind", "words"),
    [
        (error(401, "Invalid API key"), AuthError, ["API key rejected", "Invalid API key"]),
        (
            error(400, "Unknown voice id 'zzz'"),
            InvalidRequestError,
            ["(400)", "Unknown voice id 'zzz'"],
        ),
        (
            error(
                422,
                [
                    {
                        "loc": ["body", "conversation_engine", "tts"],
                        "msg": "Field required",
                        "type": "missing",
                    },
                    {
                        "loc": ["body", "max_duration"],
                        "msg": "Input should be less than or equal to 86400",
                        "type": "x",
                    },
                ],
            ),
            InvalidRequestError,
            [
                "conversation_engine.tts: Field required",
                "max_duration: Input should be less than or equal to 86400",
            ],
        ),
        (error(404, "Session not found"), NotFoundError, ["(404)", "Session not found"]),
        (error(410, "Avatar retired"), GoneError, ["(410)", "Avatar retired"]),
        (error(500, "boom"), ServerError, ["(500)", "boom"]),
        (error(503, "overloaded"), ServerError, ["(503)", "overloaded"]),
        (error(403, "forbidden"), ApiError, ["(403)", "forbidden"]),
        (
            httpx.Response(502, text="<html><body>Bad gateway</body></html>"),
            ServerError,
            ["Bad gateway"],
        ),
        (httpx.Response(401), AuthError, ["API key rejected"]),
        (ok({"unexpected": True}, status=409), ApiError, ['"unexpected": true']),
    ],
)
def test_status_errors_are_typed_and_readable(
    response: httpx.Response, kind: type[ApiError], words: list[str]
) -> None:
    err = fails(Script(response), lambda c: c.create_session(), kind, max_retries=0)
    assert type(err) is kind
    assert isinstance(err, ApiError)
    assert err.status == response.status_code
    for word in words:
        assert word in err.user_message
    assert str(err) == err.user_message


def test_long_non_json_error_bodies_are_truncated() -> None:
    body = "Internal trouble " * 100
    err = fails(Script(httpx.Response(500, text=body)), lambda c: c.create_session(), ServerError)
    assert isinstance(err, ServerError)
    assert err.detail.startswith("Internal trouble Internal trouble")
    assert len(err.detail) <= 200
    assert err.detail.endswith("…")


def test_rate_limited_carries_retry_after_in_seconds() -> None:
    err = fails(
        Script(error(429, "slow down", {"Retry-After": "7"})),
        lambda c: c.create_session(),
        RateLimitedError,
        max_retries=0,
    )
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == 7
    assert "7 s" in err.user_message


def test_rate_limited_understands_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    err = fails(
        Script(error(429, "slow", {"Retry-After": when})),
        lambda c: c.create_session(),
        RateLimitedError,
        max_retries=0,
    )
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == RETRY_AFTER_CEILING_S  # clamped
    assert err.advised is not None and 100 < err.advised <= 121


def test_rate_limited_without_a_usable_retry_after() -> None:
    err = fails(
        Script(error(429, "slow", {"Retry-After": "soon-ish"})),
        lambda c: c.create_session(),
        RateLimitedError,
        max_retries=0,
    )
    assert isinstance(err, RateLimitedError)
    assert err.retry_after is None


@pytest.mark.parametrize(
    "response",
    [
        ok({"session_id": "s-1"}),
        ok({"session_id": 5, "token": None}),
        httpx.Response(200, text="<html>welcome</html>"),
        httpx.Response(200),
    ],
)
def test_a_2xx_off_contract_is_a_bad_answer(response: httpx.Response) -> None:
    err = fails(Script(response), lambda c: c.create_session(), BadAnswerError)
    assert "unexpected body" in err.user_message
    assert "/api/v1/sessions" in err.user_message


def test_bad_answer_does_not_echo_the_body() -> None:
    err = fails(Script(ok({"token": TOKEN})), lambda c: c.create_session(), BadAnswerError)
    assert "session_id: Field required" in err.user_message
    assert TOKEN not in err.user_message


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), NetworkError),
        (httpx.ConnectTimeout("slow"), ServiceTimeoutError),
        (httpx.ReadTimeout("slow"), ServiceTimeoutError),
        (httpx.PoolTimeout("busy"), ServiceTimeoutError),
        (httpx.ReadError("reset"), NetworkError),
        (httpx.RemoteProtocolError("bye"), NetworkError),
    ],
)
def test_transport_failures_on_idempotent_calls(exc: Exception, kind: type[AppError]) -> None:
    script = Script(*([exc] * 3))
    err = fails(script, lambda c: c.terminate_session("s-1"), kind, max_retries=2)
    assert type(err) is kind
    assert script.count == 3
    assert BASE in err.user_message


def test_unsupported_protocol_is_not_retried() -> None:
    script = Script(httpx.UnsupportedProtocol("no"))
    fails(script, lambda c: c.terminate_session("s-1"), NetworkError)
    assert script.count == 1


# -- retry rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow"),
        httpx.WriteTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected without sending a response"),
        httpx.ReadError("connection reset"),
        httpx.WriteError("broken pipe"),
    ],
)
@pytest.mark.parametrize("sdk", [False, True])
def test_a_task_that_may_have_arrived_is_never_retried(exc: Exception, sdk: bool) -> None:
    script = Script(exc, ok({"task_id": "dup"}))
    runner = Run(script)

    def send(c: AvaturnClient) -> Awaitable[TaskCreated]:
        return c.sdk_task(TOKEN, "Hello") if sdk else c.add_task("s-1", "Hello")

    with pytest.raises(UnclearOutcomeError) as info:
        runner(send)
    assert script.count == 1
    assert runner.sleeps == []
    assert "may or may not be spoken" in info.value.user_message


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")]
)
def test_a_task_that_never_left_is_retried(exc: Exception) -> None:
    script = Script(exc, ok({"task_id": "t-1"}))
    runner = Run(script)
    assert runner(lambda c: c.add_task("s-1", "Hello")) == TaskCreated(task_id="t-1")
    assert script.count == 2
    assert len(runner.sleeps) == 1


def test_create_is_retried_on_connect_error() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ConnectError("refused"), ok(CREATED))
    runner = Run(script)
    assert runner(lambda c: c.create_session()).session_id == "s-1"
    assert script.count == 3
    assert len(runner.sleeps) == 2


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ReadTimeout("slow"), ServiceTimeoutError),
        (httpx.RemoteProtocolError("x"), NetworkError),
    ],
)
def test_create_is_not_retried_once_it_may_have_arrived(
    exc: Exception, kind: type[AppError]
) -> None:
    script = Script(exc, ok(CREATED))
    err = fails(script, lambda c: c.create_session(), kind)
    assert type(err) is kind
    assert script.count == 1
    assert "may have been done anyway" in err.user_message


def test_429_retry_after_is_honoured_through_the_injected_sleep() -> None:
    script = Script(error(429, "slow", {"Retry-After": "2"}), ok(CREATED))
    runner = Run(script)
    assert runner(lambda c: c.create_session()).session_id == "s-1"
    assert runner.sleeps == [2.0]
    assert script.count == 2


@pytest.mark.parametrize(
    "call", [lambda c: c.add_task("s-1", "Hello"), lambda c: c.sdk_task(TOKEN, "Hello")]
)
def test_a_tasks_429_goes_to_the_caller_at_once(
    call: Callable[[AvaturnClient], Awaitable[Any]],
) -> None:
    """The speech queue waits it out where the person sees it (and can skip it)."""
    script = Script(error(429, "slow", {"Retry-After": "2"}))
    runner = Run(script)
    with pytest.raises(RateLimitedError) as info:
        runner(call)
    assert (info.value.retry_after, script.count, runner.sleeps) == (2.0, 1, [])


def test_429_without_retry_after_backs_off() -> None:
    script = Script(error(429), ok(CREATED))
    runner = Run(script)
    runner(lambda c: c.create_session())
    assert len(runner.sleeps) == 1
    assert 0 < runner.sleeps[0] <= 0.25


def test_429_asking_for_too_long_a_wait_goes_to_the_caller() -> None:
    script = Script(error(429, "later", {"Retry-After": str(int(MAX_RETRY_AFTER) + 90)}))
    runner = Run(script)
    with pytest.raises(RateLimitedError) as info:
        runner(lambda c: c.create_session())
    assert info.value.retry_after == MAX_RETRY_AFTER  # clamped for whoever waits
    assert info.value.advised == MAX_RETRY_AFTER + 90
    assert runner.sleeps == []


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_for_delete(status: int) -> None:
    script = Script(error(status), error(status), ok())
    runner = Run(script)
    runner(lambda c: c.terminate_session("s-1"))
    assert script.count == 3
    assert len(runner.sleeps) == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_sdk_session(TOKEN),
        lambda c: c.cancel_all(TOKEN),
        lambda c: c.change_voice(TOKEN, "EXAVITQu4vr4xnSDxMaL"),
        lambda c: c.start_stream(TOKEN),
    ],
)
def test_idempotent_sdk_calls_are_retried(call: Callable[[AvaturnClient], Awaitable[Any]]) -> None:
    body = SDK_SESSION
    script = Script(error(503), httpx.ReadTimeout("slow"), ok(body))
    run(script, call)
    assert script.count == 3


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda c: c.add_task("s-1", "Hello"), UnclearOutcomeError),
        (lambda c: c.sdk_task(TOKEN, "Hello"), UnclearOutcomeError),
        (lambda c: c.create_session(), ServerError),
    ],
)
def test_gateway_errors_are_not_retried_for_posts(
    call: Callable[[AvaturnClient], Awaitable[Any]], kind: type[AppError]
) -> None:
    script = Script(error(503, "overloaded"), ok({"task_id": "dup"}))
    runner = Run(script)
    with pytest.raises(kind):
        runner(call)
    assert script.count == 1
    assert runner.sleeps == []


def test_500_is_not_retried_even_for_delete() -> None:
    script = Script(error(500))
    fails(script, lambda c: c.terminate_session("s-1"), ServerError)
    assert script.count == 1


@pytest.mark.parametrize("status", [400, 401, 404, 409, 410, 422])
def test_other_4xx_are_never_retried(status: int) -> None:
    script = Script(error(status))
    runner = Run(script)
    with pytest.raises(ApiError):
        runner(lambda c: c.terminate_session("s-1"))
    assert script.count == 1
    assert runner.sleeps == []


@pytest.mark.parametrize("max_retries", [0, 1, 4])
def test_retries_are_bounded_by_max_retries(max_retries: int) -> None:
    script = Script(*([error(503)] * (max_retries + 1)))
    runner = Run(script, max_retries=max_retries)
    with pytest.raises(ServerError):
        runner(lambda c: c.terminate_session("s-1"))
    assert script.count == max_retries + 1
    assert len(runner.sleeps) == max_retries


def test_backoff_grows_exponentially_with_jitter() -> None:
    script = Script(*([httpx.ConnectError("x")] * 5))
    runner = Run(script, max_retries=4)
    with pytest.raises(NetworkError):
        runner(lambda c: c.create_session())
    for attempt, delay in enumerate(runner.sleeps):
        full = 0.25 * 2**attempt
        assert full / 2 <= delay <= full


def test_cancellation_is_not_turned_into_an_error() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
            client = AvaturnClient(http, api_key=KEY, base_url=BASE)
            task = asyncio.create_task(client.add_task("s-1", "Hello"))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


# -- secrets ----------------------------------------------------------------------------------


def test_repr_hides_the_key() -> None:
    client = AvaturnClient(httpx.AsyncClient(), api_key=KEY, base_url=BASE)
    for text in (repr(client), str(client)):
        assert KEY not in text
        assert "<hidden>" in text
        assert BASE in text


def test_secrets_are_absent_from_messages_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The server echoes the secrets the client sent: the key on REST calls, the token on SDK ones.
    echo = f"bad key {KEY}"
    sdk_echo = f"bad token {TOKEN}"
    cases: list[tuple[Step, Callable[[AvaturnClient], Awaitable[Any]]]] = [
        (error(401, echo), lambda c: c.create_session()),
        (error(400, echo), lambda c: c.add_task("s-1", "hi")),
        (
            error(422, [{"loc": ["body", "x"], "msg": echo, "type": "t"}]),
            lambda c: c.create_session(),
        ),
        (error(404, sdk_echo), lambda c: c.get_sdk_session(TOKEN)),
        (error(410, sdk_echo), lambda c: c.sdk_task(TOKEN, "hi")),
        (error(429, sdk_echo, {"Retry-After": "999"}), lambda c: c.cancel_all(TOKEN)),
        (error(500, sdk_echo), lambda c: c.change_voice(TOKEN, "v1")),
        (httpx.Response(502, text=sdk_echo), lambda c: c.start_stream(TOKEN)),
        (ok({"token": TOKEN, "session_id": 1}), lambda c: c.create_session()),
        (httpx.ReadTimeout(echo), lambda c: c.add_task("s-1", "hi")),
        (httpx.RemoteProtocolError(sdk_echo), lambda c: c.sdk_task(TOKEN, "hi")),
        (httpx.ConnectError(sdk_echo), lambda c: c.get_sdk_session(TOKEN)),
        (httpx.ReadTimeout(echo), lambda c: c.create_session()),
    ]
    errors: list[AppError] = []
    for step, call in cases:
        with pytest.raises(AppError) as info:
            run(Script(step), call, max_retries=0)
        errors.append(info.value)
    # and some successes, so DEBUG lines for every kind of call are captured too
    run(Script(ok(CREATED), ok({"task_id": "t"}), ok(SDK_SESSION), ok()), _happy_path)

    assert len({type(e) for e in errors}) >= 8
    for err in errors:
        for text in (str(err), repr(err), err.user_message, getattr(err, "detail", "")):
            assert KEY not in text
            assert TOKEN not in text
    logged = [r.getMessage() for r in caplog.records]
    assert any("/api/v1/sessions/s-1/tasks -> 200" in line for line in logged)
    for line in logged:
        assert KEY not in line
        assert TOKEN not in line


async def _happy_path(c: AvaturnClient) -> None:
    created = await c.create_session()
    await c.add_task(created.session_id, "Hello")
    await c.get_sdk_session(created.token)
    await c.terminate_session(created.session_id)


def test_debug_log_names_method_path_status_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="avaturn.api")
    run(Script(ok()), lambda c: c.terminate_session("s-42"))
    (record,) = [r for r in caplog.records if r.name == "avaturn.api"]
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert message.startswith("DELETE /api/v1/sessions/s-42 -> 200 in ")
    assert message.endswith(" ms")


@pytest.mark.parametrize(
    ("issues", "expected"),
    [
        (
            [{"loc": ["body", "conversation_engine", "text-echo", "tts"], "msg": "Field required"}],
            "conversation_engine.tts: Field required",
        ),
        (
            [{"loc": ["body", "items", 2, "text"], "msg": "bad"}],
            "items[2].text: bad",
        ),
        (
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 1],
                    "msg": "JSON decode error",
                    "ctx": {"error": "Expecting value"},
                }
            ],
            "the body is not valid JSON (Expecting value)",
        ),
        ([{"loc": ["body"], "msg": "Value error, text is empty"}], "Value error, text is empty"),
        (
            [{"loc": ["body", f"f{i}"], "msg": "x"} for i in range(7)],
            "f0: x; f1: x; f2: x; f3: x; f4: x; and 2 more",
        ),
    ],
)
def test_422_issues_are_formatted_readably(issues: list[dict[str, Any]], expected: str) -> None:
    err = fails(Script(error(422, issues)), lambda c: c.create_session(), InvalidRequestError)
    assert isinstance(err, InvalidRequestError)
    assert err.detail == expected
    assert err.user_message.endswith(f": {expected}")


def test_401_on_an_sdk_call_blames_the_token_not_the_key() -> None:
    err = fails(
        Script(error(401, "Missing session token")), lambda c: c.cancel_all(TOKEN), AuthError
    )
    assert err.user_message == "Session token rejected by the service (401): Missing session token"


def test_401_message_reads_as_sentences() -> None:
    err = fails(Script(error(401, "Invalid API key")), lambda c: c.create_session(), AuthError)
    assert err.user_message == (
        "API key rejected by the service (401): Invalid API key. Check the key in the settings."
    )


def test_a_local_protocol_error_is_not_an_unclear_outcome() -> None:
    script = Script(httpx.LocalProtocolError("bad header"))
    err = fails(script, lambda c: c.add_task("s-1", "Hello"), NetworkError)
    assert type(err) is NetworkError
    assert script.count == 1


# -- Retry-After: every value a header can take ----------------------------------------------

CEIL = RETRY_AFTER_CEILING_S


def _http_date(offset_s: float) -> str:
    return email.utils.formatdate(time.time() + offset_s, usegmt=True)


RETRY_AFTER_VALUES: list[tuple[str, float | None]] = [
    ("0", 0.0),
    ("7", 7.0),
    (" 7 ", 7.0),
    ("2.5", 2.5),
    ("-5", 0.0),
    ("-inf", 0.0),
    ("30", 30.0),
    ("31", CEIL),
    ("3600", CEIL),
    ("3000000", CEIL),  # 34 days: past a Qt timer's 2**31 ms
    ("1000000000", CEIL),
    ("1" + "0" * 400, CEIL),
    ("1e400", CEIL),
    ("inf", CEIL),
    ("Infinity", CEIL),
    ("nan", None),
    ("", None),
    ("soon", None),
    ("0x10", None),
    ("7 seconds", None),
    ("Fri, 31 Dec 2099 23:59:59 GMT", CEIL),
    ("Fri, 31 Dec 9999 23:59:59 GMT", CEIL),
    ("Fri, 31 Dec 99999 23:59:59 GMT", None),
    ("Mon, 32 Foo 2024 25:61:61 GMT", None),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ("Thu, 01 Jan 1970 00:00:00 -0000", 0.0),
]


@pytest.mark.parametrize(("value", "expected"), RETRY_AFTER_VALUES)
def test_any_retry_after_becomes_a_sane_wait(value: str, expected: float | None) -> None:
    err = fails(
        Script(error(429, "slow", {"Retry-After": value})),
        lambda c: c.add_task("s-1", "Hello"),
        RateLimitedError,
    )
    assert isinstance(err, RateLimitedError)
    if expected is None:
        assert err.retry_after is None
    else:
        assert err.retry_after == pytest.approx(expected)
        assert 0 <= err.retry_after <= CEIL
    assert "inf" not in err.user_message and "nan" not in err.user_message


@pytest.mark.parametrize(("offset", "expected"), [(12.0, 12.0), (-60.0, 0.0), (86400.0, CEIL)])
def test_a_retry_after_date_counts_from_now(offset: float, expected: float) -> None:
    err = fails(
        Script(error(429, "slow", {"Retry-After": _http_date(offset)})),
        lambda c: c.add_task("s-1", "Hello"),
        RateLimitedError,
    )
    assert isinstance(err, RateLimitedError) and err.retry_after is not None
    assert err.retry_after == pytest.approx(expected, abs=1.5)


@pytest.mark.parametrize(("value", "expected"), RETRY_AFTER_VALUES)
def test_the_client_never_sleeps_past_the_ceiling(value: str, expected: float | None) -> None:
    """For calls it may retry itself: a readable wait up to the ceiling is slept (a longer one
    goes to the caller), an unreadable one backs off."""
    script = Script(error(429, "slow", {"Retry-After": value}), ok(CREATED))
    runner = Run(script)
    try:
        runner(lambda c: c.create_session())
    except RateLimitedError as exc:
        assert exc.advised is not None and exc.advised > CEIL
    assert all(0 <= s <= CEIL for s in runner.sleeps)


# -- a task's answers that do not prove a refusal ---------------------------------------------

MAYBE_ANSWERS: list[tuple[str, Step]] = [
    ("200 empty", httpx.Response(200)),
    ("200 empty json type", httpx.Response(200, headers={"content-type": "application/json"})),
    ("200 html", httpx.Response(200, text="<html><body>OK</body></html>")),
    ("200 {}", httpx.Response(200, json={})),
    ("200 null", httpx.Response(200, json=None)),
    ("200 list", httpx.Response(200, json=[])),
    ("200 wrong field", httpx.Response(200, json={"id": "t-1"})),
    ("201 empty", httpx.Response(201)),
    ("204", httpx.Response(204)),
    ("500", error(500, "boom")),
    ("502 html", httpx.Response(502, text="<html>Bad Gateway</html>")),
    ("503", error(503, "overloaded")),
    ("504 empty", httpx.Response(504)),
    ("read timeout", httpx.ReadTimeout("slow")),
    ("reset", httpx.ReadError("connection reset by peer")),
    ("closed", httpx.RemoteProtocolError("Server disconnected without sending a response")),
]


@pytest.mark.parametrize(("name", "answer"), MAYBE_ANSWERS, ids=[n for n, _ in MAYBE_ANSWERS])
@pytest.mark.parametrize("sdk", [False, True])
def test_a_task_answer_that_does_not_prove_refusal_is_unclear(
    name: str, answer: Step, sdk: bool
) -> None:
    script = Script(answer, ok({"task_id": "dup"}))
    runner = Run(script)

    def send(c: AvaturnClient) -> Awaitable[TaskCreated]:
        return c.sdk_task(TOKEN, "Hello") if sdk else c.add_task("s-1", "Hello")

    with pytest.raises(UnclearOutcomeError) as info:
        runner(send)
    assert script.count == 1 and runner.sleeps == []  # never sent twice
    assert "may or may not be spoken" in info.value.user_message
    assert KEY not in info.value.user_message and TOKEN not in info.value.user_message


@pytest.mark.parametrize("status", [400, 401, 404, 409, 410, 422, 429])
def test_a_task_refused_with_a_4xx_is_not_unclear(status: int) -> None:
    script = Script(error(status, "no"))
    with pytest.raises(ApiError) as info:
        run(script, lambda c: c.add_task("s-1", "Hello"))
    assert not isinstance(info.value, UnclearOutcomeError)
