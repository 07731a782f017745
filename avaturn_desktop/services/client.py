"""The typed async client of the Avaturn Live service (REST ``/api/v1`` and the SDK's ``/_sdk/v0``).

One injected, pooled :class:`httpx.AsyncClient` carries every call; this class neither creates
nor closes it. Requests and answers are the pydantic models of :mod:`avaturn_desktop.core.models`;
failures are the typed errors of :mod:`avaturn_desktop.core.errors`, each with a message a person
can read and none with a secret in it.

Retries are bounded by ``max_retries`` with exponential backoff and jitter:

* idempotent calls (session lookup, DELETE, PATCH config, cancel-all, start stream) retry on
  connection failures, timeouts, 429 and 502/503/504;
* non-idempotent POSTs (create session, tasks) retry only when the request provably never
  reached the service (connect error, connect or pool timeout); creating a session also on 429.
  A task that may have reached the service is never sent twice: the caller gets
  :class:`UnclearOutcomeError` instead. That is every answer that does not prove a refusal:
  a broken connection or no answer after the request left, any 5xx (a gateway's 502/503/504
  says nothing of what the service behind it did), a 2xx without a task id. A task's 429 goes
  to the caller at once: the speech queue waits it out where the person can see it.

``Retry-After`` is read as seconds or an HTTP date; anything else (garbage, ``nan``) counts as
absent, and any value is clamped to ``[0, RETRY_AFTER_CEILING_S]`` (``inf``, ``1e400``, a date
in 2099), so no caller ever sleeps for days or overflows a Qt timer.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx
import pydantic

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
    SdkConfigPatch,
    SdkSession,
    SessionCreate,
    SessionCreated,
    TaskCreate,
    TaskCreated,
    TextEchoEngine,
    TTSConfig,
)

__all__ = ["AvaturnClient"]

log = logging.getLogger("avaturn.api")

_M = TypeVar("_M", bound=pydantic.BaseModel)

#: Longest Retry-After the client waits out by itself; beyond it the 429 goes to the caller.
MAX_RETRY_AFTER: Final = RETRY_AFTER_CEILING_S
#: Backoff: ``BACKOFF_BASE * 2**attempt`` seconds, at most ``BACKOFF_CAP``, with jitter.
BACKOFF_BASE: Final = 0.25
BACKOFF_CAP: Final = 8.0
#: How much of a non-JSON error body ends up in a message.
MAX_DETAIL_CHARS: Final = 200
#: How many validation issues of a 422 a message lists.
MAX_ISSUES: Final = 5

_RETRY_STATUSES: Final = frozenset({502, 503, 504})
#: The request never left this machine: safe to send again, whatever the method.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_JSON: Final = "application/json"


class _Call:
    """What one endpoint is: fixed per method of the client, built once."""

    __slots__ = ("idempotent", "is_task", "method", "sdk", "what")

    def __init__(
        self, method: str, what: str, *, idempotent: bool, is_task: bool = False, sdk: bool = False
    ) -> None:
        self.method = method
        self.what = what
        self.idempotent = idempotent
        self.is_task = is_task
        self.sdk = sdk  # authenticated with the session token, not the API key


_CREATE = _Call("POST", "create the session", idempotent=False)
_TASK = _Call("POST", "send the text", idempotent=False, is_task=True)
_DELETE = _Call("DELETE", "end the session", idempotent=True)
_SDK_GET = _Call("GET", "look up the session", idempotent=True, sdk=True)
_SDK_TASK = _Call("POST", "send the text", idempotent=False, is_task=True, sdk=True)
# Cancelling twice is the same as cancelling once; so is starting the stream.
_SDK_CANCEL = _Call("POST", "cancel the speech", idempotent=True, sdk=True)
_SDK_VOICE = _Call("PATCH", "change the voice", idempotent=True, sdk=True)
_SDK_START = _Call("POST", "start the stream", idempotent=True, sdk=True)


class AvaturnClient:
    """Typed calls to the Avaturn Live service over one shared ``httpx.AsyncClient``.

    ``base_url`` is the service root (``https://api.avaturn.live`` or the simulator's).
    ``timeout`` applies to each attempt of each call. ``sleep`` waits between retries; tests
    pass a recorder so they never wait.
    """

    __slots__ = (
        "_api_key",
        "_auth_headers",
        "_base_url",
        "_http",
        "_json_headers",
        "_max_retries",
        "_sdk_headers",
        "_sdk_json_headers",
        "_sdk_token",
        "_sleep",
        "_timeout",
        "_timeout_s",
    )

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str,
        timeout: float = 10.0,
        max_retries: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ConfigError("No API key is set: enter the key of your Avaturn Live account.")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"The service address must start with http:// or https://: {base_url!r}"
            )
        if timeout <= 0:
            raise ConfigError("The request timeout must be more than zero seconds.")
        if max_retries < 0:
            raise ConfigError("The number of retries must not be negative.")
        self._http = http
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._timeout_s = float(timeout)
        self._timeout = httpx.Timeout(timeout)
        self._max_retries = max_retries
        self._sleep = sleep
        # Prebuilt once; kept minimal, as every header costs on every call.
        self._auth_headers: dict[str, str] = {"Authorization": f"Bearer {api_key}"}
        self._json_headers = {**self._auth_headers, "Content-Type": _JSON}
        # The SDK calls of one session all carry the same token: build its headers once.
        self._sdk_token: str | None = None
        self._sdk_headers: dict[str, str] = {}
        self._sdk_json_headers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AvaturnClient(base_url={self._base_url!r}, api_key=<hidden>)"

    __str__ = __repr__

    @property
    def base_url(self) -> str:
        return self._base_url

    # -- public REST API, authenticated with the API key -------------------------------------

    async def create_session(self, request: SessionCreate | None = None) -> SessionCreated:
        """``POST /api/v1/sessions``; no ``request`` sends an empty body (the avatar's defaults)."""
        if request is None:
            content = None
            headers = self._auth_headers
        else:
            content = json.dumps(request.to_body()).encode()
            headers = self._json_headers
        response = await self._send(_CREATE, "/api/v1/sessions", headers, content)
        return self._parse(SessionCreated, response, _CREATE, "/api/v1/sessions")

    async def add_task(self, session_id: str, text: str) -> TaskCreated:
        """``POST /api/v1/sessions/{id}/tasks``: queue ``text``; never sent twice."""
        content = _task_body(text)
        path = f"{_session_path(session_id)}/tasks"
        response = await self._send(_TASK, path, self._json_headers, content)
        return self._parse(TaskCreated, response, _TASK, path)

    async def terminate_session(self, session_id: str) -> None:
        """``DELETE /api/v1/sessions/{id}``: end the session at once."""
        await self._send(_DELETE, _session_path(session_id), self._auth_headers, None)

    # -- the SDK's private API, authenticated with the session token -------------------------

    async def get_sdk_session(self, token: str) -> SdkSession:
        """``GET /_sdk/v0/sessions``: what the Web SDK learns from its token."""
        path = "/_sdk/v0/sessions"
        response = await self._send(_SDK_GET, path, self._token_headers(token, False), None)
        return self._parse(SdkSession, response, _SDK_GET, path)

    async def sdk_task(self, token: str, text: str) -> TaskCreated:
        """``POST /_sdk/v0/sessions/tasks``: what ``avatar.task(text)`` sends."""
        content = _task_body(text)
        path = "/_sdk/v0/sessions/tasks"
        response = await self._send(_SDK_TASK, path, self._token_headers(token, True), content)
        return self._parse(TaskCreated, response, _SDK_TASK, path)

    async def cancel_all(self, token: str) -> dict[str, Any]:
        """``POST /_sdk/v0/sessions/cancel_all_speech_tasks``: stop speaking, empty the queue.

        The answer's shape is undocumented: a JSON object is returned as is, anything else
        wrapped as ``{"result": value}``, an empty body as ``{}``.
        """
        path = "/_sdk/v0/sessions/cancel_all_speech_tasks"
        response = await self._send(_SDK_CANCEL, path, self._token_headers(token, False), None)
        if not response.content.strip():
            return {}
        try:
            value = response.json()
        except ValueError:
            raise BadAnswerError(
                "The service answered the cancel request with something that is not JSON."
            ) from None
        return value if isinstance(value, dict) else {"result": value}

    async def change_voice(self, token: str, voice_id: str) -> None:
        """``PATCH /_sdk/v0/sessions/config``: later tasks use ``voice_id``.

        The service drops the tasks still queued, as the SDK's ``changeVoice`` does.
        """
        try:
            patch = SdkConfigPatch(
                conversation_engine=TextEchoEngine(tts=TTSConfig(voice_id=voice_id))
            )
        except pydantic.ValidationError:
            raise ConfigError(
                f"The voice id must be 1 to 200 characters long; got {len(voice_id)}."
            ) from None
        content = patch.model_dump_json().encode()
        path = "/_sdk/v0/sessions/config"
        await self._send(_SDK_VOICE, path, self._token_headers(token, True), content)

    async def start_stream(self, token: str) -> None:
        """``POST /_sdk/v0/sessions/start_stream`` (used with ``preconnect``)."""
        path = "/_sdk/v0/sessions/start_stream"
        await self._send(_SDK_START, path, self._token_headers(token, False), None)

    # -- the machinery ------------------------------------------------------------------------

    def _token_headers(self, token: str, with_body: bool) -> dict[str, str]:
        if token != self._sdk_token:
            if not token or not token.strip():
                raise ConfigError("No session token: start a session first.")
            self._sdk_token = token
            self._sdk_headers = {"X-Session-Token": token}
            self._sdk_json_headers = {**self._sdk_headers, "Content-Type": _JSON}
        return self._sdk_json_headers if with_body else self._sdk_headers

    async def _send(
        self, call: _Call, path: str, headers: dict[str, str], content: bytes | None
    ) -> httpx.Response:
        """One call with its retries; returns a 2xx response or raises a typed error."""
        url = self._base_url + path
        method = call.method
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                response = await self._http.request(
                    method, url, content=content, headers=headers, timeout=self._timeout
                )
            except httpx.DecodingError:
                # An answer came, but its body could not be decoded (a bad Content-Encoding).
                raise self._undecodable(call, path) from None
            except httpx.TransportError as exc:
                log.debug(
                    "%s %s -> %s after %.1f ms",
                    method, path, type(exc).__name__, (time.perf_counter() - start) * 1000,
                )  # fmt: skip
                error = self._transport_error(call, path, exc)
                if attempt < self._max_retries and (
                    isinstance(exc, _NOT_SENT)
                    or (call.idempotent and not isinstance(error, _NoRetry))
                ):
                    delay = _backoff(attempt)
                    log.info(
                        "%s %s failed (%s); retry %d of %d in %.2f s",
                        method, path, type(exc).__name__, attempt + 1, self._max_retries, delay,
                    )  # fmt: skip
                    attempt += 1
                    await self._sleep(delay)
                    continue
                if isinstance(error, _NoRetry):
                    raise error.error from exc
                raise error from exc
            status = response.status_code
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s -> %d in %.1f ms",
                    method, path, status, (time.perf_counter() - start) * 1000,
                )  # fmt: skip
            if status < 300:
                return response
            if attempt < self._max_retries:
                wait = self._retry_delay(call, response, attempt)
                if wait is not None:
                    log.info(
                        "%s %s answered %d; retry %d of %d in %.2f s",
                        method, path, status, attempt + 1, self._max_retries, wait,
                    )  # fmt: skip
                    attempt += 1
                    await self._sleep(wait)
                    continue
            raise self._status_error(call, response)

    def _retry_delay(self, call: _Call, response: httpx.Response, attempt: int) -> float | None:
        """How long to wait before sending again, or ``None`` for "do not"."""
        status = response.status_code
        if status == 429:
            if call.is_task:  # the queue waits it out, visibly and skippably
                return None
            advice = _retry_after(response)
            if advice is None:
                return _backoff(attempt)
            wait, advised = advice
            return wait if advised <= MAX_RETRY_AFTER else None
        if status in _RETRY_STATUSES and call.idempotent:
            return _backoff(attempt)
        return None

    def _undecodable(self, call: _Call, path: str) -> AppError:
        if call.is_task:
            return UnclearOutcomeError(
                "The service's answer to the text could not be decoded, so it may or may not "
                "be spoken. Check the avatar before sending it again."
            )
        return BadAnswerError(
            f"The service answered {call.method} {path} with a body that could not be decoded. "
            f"Is {self._base_url} an Avaturn Live service?"
        )

    def _transport_error(
        self, call: _Call, path: str, exc: httpx.TransportError
    ) -> NetworkError | _NoRetry:
        """The typed error for a failure with no answer (``_NoRetry`` wraps the final ones)."""
        where = f"{call.method} {self._base_url}{path}"
        if isinstance(exc, _NOT_SENT):
            if isinstance(exc, httpx.TimeoutException):
                return ServiceTimeoutError(
                    f"Could not reach the service at {self._base_url} within "
                    f"{self._timeout_s:g} s, so could not {call.what}."
                )
            return NetworkError(
                f"Could not connect to the service at {self._base_url}, so could not "
                f"{call.what}. Check the network and the service address."
            )
        if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
            # The request may have reached the service.
            if call.is_task:
                return _NoRetry(
                    UnclearOutcomeError(
                        "The connection to the service failed after the text was sent, so it "
                        "may or may not be spoken. Check the avatar before sending it again."
                    )
                )
            maybe = "" if call.idempotent else " It may have been done anyway."
            if isinstance(exc, httpx.TimeoutException):
                error: NetworkError = ServiceTimeoutError(
                    f"The service did not answer {where} within {self._timeout_s:g} s.{maybe}"
                )
            else:
                error = NetworkError(
                    f"The connection to the service broke during {where} "
                    f"({type(exc).__name__}).{maybe}"
                )
            return error if call.idempotent else _NoRetry(error)
        # UnsupportedProtocol, ProxyError, LocalProtocolError: sending again will not help.
        return _NoRetry(NetworkError(f"Could not {call.what}: {type(exc).__name__} for {where}."))

    def _status_error(self, call: _Call, response: httpx.Response) -> AppError:
        status = response.status_code
        detail = self._redact(_detail(response))
        suffix = f": {detail}" if detail else "."
        if status >= 500 and call.is_task:
            # A gateway's 502/503/504, or a service that failed after it queued the text:
            # nothing here proves the text was refused.
            return UnclearOutcomeError(
                f"The service answered {status} to the text{_paren(detail)}, so it may or may "
                "not be spoken. Check the avatar before sending it again.",
                status=status,
            )
        if status == 401:
            if call.sdk:
                message = f"Session token rejected by the service (401){suffix}"
            else:
                message = (
                    f"API key rejected by the service (401){_sentence(suffix)} "
                    "Check the key in the settings."
                )
            return AuthError(message, status=status, detail=detail)
        if status in (400, 422):
            return InvalidRequestError(
                f"The service refused the request to {call.what} ({status}){suffix}",
                status=status,
                detail=detail,
            )
        if status == 404:
            return NotFoundError(
                f"Could not {call.what}: the session is unknown or has ended (404){suffix}",
                status=status,
                detail=detail,
            )
        if status == 410:
            return GoneError(
                f"Could not {call.what}: the avatar is unknown or retired (410){suffix}",
                status=status,
                detail=detail,
            )
        if status == 429:
            parsed = _retry_after(response)
            wait, advised = parsed if parsed is not None else (None, None)
            advice = f" Try again in {wait:g} s." if wait is not None else ""
            return RateLimitedError(
                f"The service is busy and refused the request to {call.what} (429).{advice}",
                retry_after=wait,
                advised=advised,
            )
        if status >= 500:
            return ServerError(
                f"The service failed to {call.what} ({status}){suffix}",
                status=status,
                detail=detail,
            )
        return ApiError(
            f"The service refused the request to {call.what} ({status}){suffix}",
            status=status,
            detail=detail,
        )

    def _parse(self, model: type[_M], response: httpx.Response, call: _Call, path: str) -> _M:
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            if call.is_task:
                # A 2xx says the service took it; without a task id nobody can tell for sure.
                what = _describe_body(response)
                raise UnclearOutcomeError(
                    f"The service answered the text with {response.status_code} but no task id "
                    f"({what}), so it may or may not be spoken. Check the avatar before "
                    "sending it again.",
                    status=response.status_code,
                ) from None
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise BadAnswerError(
                f"The service answered {call.method} {path} with an unexpected body "
                f"({problems}). Is {self._base_url} an Avaturn Live service?"
            ) from None

    def _redact(self, text: str) -> str:
        """Keep secrets out of a message even if the server echoes them."""
        if self._api_key in text:
            text = text.replace(self._api_key, "<hidden>")
        if self._sdk_token and self._sdk_token in text:
            text = text.replace(self._sdk_token, "<hidden>")
        return text


class _NoRetry(Exception):
    """Marks a transport failure that must not be retried, whatever the method."""

    def __init__(self, error: NetworkError) -> None:
        super().__init__(error.user_message)
        self.error = error


def _session_path(session_id: str) -> str:
    if not session_id or not session_id.strip():
        raise ConfigError("No session id: start a session first.")
    return f"/api/v1/sessions/{quote(session_id, safe='')}"


def _task_body(text: str) -> bytes:
    """Validate ``text`` as the service would and return the JSON body; nothing is sent if bad."""
    try:
        task = TaskCreate(text=text)
    except pydantic.ValidationError:
        if not isinstance(text, str):
            raise ConfigError("The text to speak must be a string.") from None
        if len(text) > MAX_TASK_TEXT:
            raise ConfigError(
                f"The text is {len(text)} characters long; one task may carry at most "
                f"{MAX_TASK_TEXT}. Split it into sentences."
            ) from None
        raise ConfigError("The text is empty: there is nothing for the avatar to say.") from None
    return task.model_dump_json().encode()


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: between half and all of ``BASE * 2**attempt``."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * (2**attempt))
    return delay * (0.5 + random.random() / 2)  # jitter, not cryptography


def _retry_after(response: httpx.Response) -> tuple[float, float] | None:
    """``Retry-After`` as ``(wait, advised)`` seconds; ``None`` if absent or unreadable.

    Seconds or an HTTP date (RFC 9110 §10.2.3); fractions and a sign are tolerated. ``advised``
    is what the service asked for (``inf`` for ``inf``, ``1e400`` or a date too far off);
    ``wait`` is that, clamped to ``[0, RETRY_AFTER_CEILING_S]``.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    advised: float
    try:
        advised = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are UTC
            when = when.replace(tzinfo=datetime.UTC)
        advised = when.timestamp() - time.time()
    if math.isnan(advised):
        return None
    return min(max(0.0, advised), RETRY_AFTER_CEILING_S), max(0.0, advised)


def _describe_body(response: httpx.Response) -> str:
    """A 2xx body that is not a task, in a few words."""
    raw = response.content.strip()
    if not raw:
        return "an empty body"
    kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    if raw.startswith(b"<"):
        return f"an HTML page ({kind})"
    if raw in (b"{}", b"null", b"[]"):
        return f"the body {raw.decode()}"
    return f"an unexpected body ({kind})"


def _paren(detail: str) -> str:
    return f" ({detail})" if detail else ""


def _detail(response: httpx.Response) -> str:
    """The server's own explanation: ``detail`` as text, a 422 list made readable, or the body."""
    raw = response.content
    if not raw.strip():
        return ""
    try:
        body = json.loads(raw)
    except ValueError:
        return _truncate(response.text)
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return _truncate(detail)
    if isinstance(detail, list) and detail and all(isinstance(i, dict) for i in detail):
        shown = [_issue(issue) for issue in detail[:MAX_ISSUES]]
        if len(detail) > MAX_ISSUES:
            shown.append(f"and {len(detail) - MAX_ISSUES} more")
        return _bound("; ".join(shown))
    return _truncate(json.dumps(detail, ensure_ascii=False))


def _issue(issue: dict[str, Any]) -> str:
    """One FastAPI validation issue: ``conversation_engine.tts: Field required``.

    The leading ``body`` is dropped, list indexes are shown as ``[n]``, and the tags pydantic
    inserts for tagged unions (``text-echo``: not a field name) are left out.
    """
    msg = str(issue.get("msg", "invalid"))
    if issue.get("type") == "json_invalid":
        ctx = issue.get("ctx")
        reason = ctx.get("error") if isinstance(ctx, dict) else None
        return f"the body is not valid JSON ({reason})" if reason else "the body is not valid JSON"
    parts = list(issue.get("loc", ()))
    if parts and parts[0] in ("body", "query", "path", "header"):
        del parts[0]
    where = ""
    for part in parts:
        if isinstance(part, int):
            where += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            where += f".{part}" if where else part
    return f"{where}: {msg}" if where else msg


def _bound(text: str) -> str:
    """Bound a joined list of issues (each ``msg`` may quote what was sent)."""
    return text if len(text) <= 4 * MAX_DETAIL_CHARS else text[: 4 * MAX_DETAIL_CHARS - 1] + "…"


def _sentence(text: str) -> str:
    """``text`` ending as a sentence, so another can follow it."""
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_DETAIL_CHARS:
        return text[: MAX_DETAIL_CHARS - 1] + "…"
    return text
