"""A stand-in for an OpenAI-compatible language model: ``POST /v1/chat/completions``.

So that Ask works with no key and no network, and its tests run over real loopback HTTP, the
simulator answers chat completions the way OpenAI's API does, as far as a client can tell:

* ``stream: true``: ``text/event-stream``, one ``data: {chat.completion.chunk}`` event per
  token (a word piece or a punctuation mark, with its leading whitespace), the first carrying
  ``delta.role``, the last ``finish_reason``, then ``data: [DONE]``; with
  ``stream_options.include_usage`` a usage chunk (no choices) comes before ``[DONE]``. Tokens
  leave at ``tokens_per_second``. ``stream`` false or absent: one ``chat.completion`` object.
* Answers are deterministic: :func:`answer_for` builds them from the conversation alone (the
  turn number, the question's first words, and sentences picked by a CRC of the question),
  so a test can compute what it should hear. ``max_tokens`` / ``max_completion_tokens`` cut
  the answer with ``finish_reason: "length"``.
* Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 401 with no
  or an empty bearer key, and with a wrong one when ``api_key`` is configured (otherwise any
  non-empty key is accepted); 404 ``model_not_found`` for a model outside ``models``; 400 for
  a malformed body; 429 ``rate_limit_exceeded`` with ``retry-after`` and ``retry-after-ms``.
* ``GET /v1/models`` lists the models.

Faults (``LlmFaults``, in the config and at run time via ``PUT /_sim/llm/faults``): the next N
requests get 429, or a 5xx; a delay before the answer starts; and a stream that breaks after N
tokens, in one of four ways a client meets in the wild: ``reset`` (the TCP connection is aborted
with an RST), ``close`` (the body ends cleanly, with neither ``finish_reason`` nor ``[DONE]``),
``error_event`` (an SSE ``data: {"error": ...}`` event, as OpenAI sends on a server failure
mid-stream) and ``stall`` (the connection stays open and nothing more comes).
``GET /_sim/llm`` shows the faults and the last requests with how each ended
(``completed``, ``client_closed``, ``broken``, or the error status), so tests can see that a
client closed a stream it no longer wanted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import itertools
import json
import logging
import re
import socket
import struct
import time
import zlib
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.requests import ClientDisconnect

from avaturn_desktop.simulator.faults import TRANSPORT_SCOPE_KEY

log = logging.getLogger("avaturn.simulator.llm")

#: The models the simulator knows (the app's default model among them).
DEFAULT_MODELS: Final = ("sim-chat", "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1")
DEFAULT_TOKENS_PER_SECOND: Final = 20.0
#: How many requests ``GET /_sim/llm`` remembers.
KEEP_REQUESTS: Final = 100

#: Sentences an answer is made of (after its first), picked by a CRC of the question.
SENTENCE_POOL: Final = (
    "This answer comes from the built-in simulator, so it works without a network.",
    "Each sentence is sent to the avatar as soon as it is complete.",
    "The avatar starts speaking before the whole answer has arrived.",
    "A new question replaces this answer, and its remaining sentences are never spoken.",
    "Stop ends the answer and the speech together.",
    "The task log links every sentence to the question it answers.",
    "With a real key, a real language model answers instead of this one.",
    "The simulator streams its answers at a steady pace, one token at a time.",
    "Nothing here needs a cloud account or an internet connection.",
    "Answers are deterministic, so tests can tell exactly what should be said.",
    "Short sentences sound natural when an avatar speaks them.",
    "That is all there is to say about it for now.",
)
_TOKEN: Final = re.compile(r"\s*(?:\w{1,6}|[^\w\s])|\s+")
_TOPIC_STRIP: Final = ".!?‽…\"'“”‘’«»()[]{}"


def tokens_of(text: str) -> list[str]:
    """Cut ``text`` into tokens as a model streams them: word pieces of at most six letters
    and single punctuation marks, each with the whitespace before it. ``"".join`` gives the
    text back."""
    return _TOKEN.findall(text)


def answer_for(messages: Sequence[dict[str, Any]], sentences: int) -> str:
    """The simulator's answer to a conversation: ``sentences`` sentences, deterministic."""
    users = [m for m in messages if m.get("role") == "user"]
    question = _content_text(users[-1].get("content")) if users else ""
    words = question.split()
    topic = " ".join(words[:6]).strip(_TOPIC_STRIP) or "nothing in particular"
    first = f"Here is answer number {len(users)}, about {topic}."
    start = zlib.crc32(question.encode()) % len(SENTENCE_POOL)
    rest = [SENTENCE_POOL[(start + i) % len(SENTENCE_POOL)] for i in range(sentences - 1)]
    return " ".join([first, *rest])


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class LlmFaults(BaseModel):
    """What goes wrong with the model's answers. The default: nothing."""

    model_config = ConfigDict(extra="forbid")

    #: the next N requests get 429 (a counter: it runs down)
    rate_limit_burst: Annotated[int, Field(ge=0)] = 0
    #: the 429's advice, sent as ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``
    retry_after_ms: Annotated[int, Field(ge=0, le=600_000)] = 1000
    #: the next N requests get ``error_status`` (a counter: it runs down)
    error_burst: Annotated[int, Field(ge=0)] = 0
    error_status: Annotated[int, Field(ge=500, le=599)] = 503
    #: delay before the answer starts (before its status line)
    latency_ms: Annotated[float, Field(ge=0, le=600_000)] = 0.0
    #: streams break after this many tokens (``None``: they do not)
    break_after_tokens: Annotated[int | None, Field(ge=0)] = None
    break_mode: Literal["reset", "close", "error_event", "stall"] = "reset"


class LlmConfig(BaseModel):
    """The language model stand-in's settings (``SimulatorConfig.llm``)."""

    model_config = ConfigDict(extra="forbid")

    #: the only key accepted; ``None``: any non-empty bearer key
    api_key: SecretStr | None = None
    models: list[str] = list(DEFAULT_MODELS)
    tokens_per_second: Annotated[float, Field(gt=0, le=100_000)] = DEFAULT_TOKENS_PER_SECOND
    #: sentences per answer
    sentences: Annotated[int, Field(ge=1, le=100)] = 4
    faults: LlmFaults = LlmFaults()


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class _ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[_Message], Field(min_length=1)]
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class LlmState:
    """The live state: faults (with the 429 counter running down) and the recent requests."""

    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        self.faults = config.faults
        self._rate_limit_left = config.faults.rate_limit_burst
        self._errors_left = config.faults.error_burst
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEEP_REQUESTS)
        self._ids = itertools.count(1)

    def set_faults(self, faults: LlmFaults) -> None:
        self.faults = faults
        self._rate_limit_left = faults.rate_limit_burst
        self._errors_left = faults.error_burst

    def current_faults(self) -> LlmFaults:
        return self.faults.model_copy(
            update={"rate_limit_burst": self._rate_limit_left, "error_burst": self._errors_left}
        )

    def take_error(self) -> bool:
        if self._errors_left > 0:
            self._errors_left -= 1
            return True
        return False

    def take_rate_limit(self) -> bool:
        if self._rate_limit_left > 0:
            self._rate_limit_left -= 1
            return True
        return False

    def record(self, **fields: Any) -> dict[str, Any]:
        entry = {"id": f"chatcmpl-sim-{next(self._ids)}", "at": time.time(), **fields}
        self.requests.append(entry)
        return entry

    def snapshot(self) -> dict[str, Any]:
        return {
            "faults": self.current_faults().model_dump(),
            "models": list(self.config.models),
            "tokens_per_second": self.config.tokens_per_second,
            "requests": [dict(r) for r in self.requests],
        }


def llm_router(config: LlmConfig) -> APIRouter:
    """The routes of the language model stand-in (``app.include_router(llm_router(...))``)."""
    state = LlmState(config)
    api = APIRouter()
    key = config.api_key.get_secret_value() if config.api_key is not None else None

    def auth_error(authorization: str | None) -> JSONResponse | None:
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        headers = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not given:
            return _error(
                401,
                "You didn't provide an API key. Provide it in an Authorization header "
                "(Bearer auth).",
                "invalid_request_error",
                "missing_api_key",
                headers=headers,
            )
        if key is not None and not hmac.compare_digest(given.encode(), key.encode()):
            # OpenAI echoes a masked key here; the simulator echoes none of it
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key",
                headers=headers,
            )  # fmt: skip
        return None

    @api.get("/v1/models", response_model=None)
    async def list_models(request: Request) -> dict[str, Any] | JSONResponse:
        if (denied := auth_error(request.headers.get("authorization"))) is not None:
            return denied
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "avaturn-simulator"}
                for m in config.models
            ],
        }

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        faults = state.faults
        try:
            raw = await request.body()
        except ClientDisconnect:
            return Response(status_code=499)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if (denied := auth_error(request.headers.get("authorization"))) is not None:
            state.record(outcome=401)
            return denied
        try:
            body = _ChatRequest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            state.record(outcome=400)
            return _error(
                400, f"Invalid request: {where}: {first['msg']}", "invalid_request_error",
                None, where,
            )  # fmt: skip
        if body.model not in config.models:
            state.record(model=body.model, outcome=404)
            return _error(
                404,
                f"The model `{body.model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        if state.take_rate_limit():
            state.record(model=body.model, outcome=429)
            wait_ms = faults.retry_after_ms
            return _error(
                429,
                f"Rate limit reached for {body.model} (simulated). "
                f"Please try again in {wait_ms / 1000:g}s.",
                "requests",
                "rate_limit_exceeded",
                headers={"retry-after": str(-(-wait_ms // 1000)), "retry-after-ms": str(wait_ms)},
            )
        if state.take_error():
            status = faults.error_status
            state.record(model=body.model, outcome=status)
            return _error(
                status,
                "The server had an error while processing your request (simulated).",
                "server_error",
                None,
            )
        messages = [m.model_dump() for m in body.messages]
        text = answer_for(messages, config.sentences)
        tokens = tokens_of(text)
        limit = body.max_completion_tokens or body.max_tokens
        finish = "stop"
        if limit is not None and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        question = _content_text(messages[-1].get("content"))[:200]
        prompt_tokens = sum(len(tokens_of(_content_text(m.get("content")))) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        entry = state.record(model=body.model, question=question, stream=bool(body.stream),
                             roles=[m["role"] for m in messages], tokens_sent=0,
                             tokens=len(tokens), outcome="answering")  # fmt: skip
        if not body.stream:
            entry.update(tokens_sent=len(tokens), outcome="completed")
            return JSONResponse(
                {
                    "id": entry["id"],
                    "object": "chat.completion",
                    "created": int(entry["at"]),
                    "model": body.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(tokens)},
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return _SseAnswer(
            entry,
            tokens,
            finish,
            usage if include_usage else None,
            config.tokens_per_second,
            faults,
        )

    @api.get("/_sim/llm")
    async def sim_llm() -> dict[str, Any]:
        return state.snapshot()

    @api.put("/_sim/llm/faults")
    async def sim_llm_faults(body: LlmFaults) -> LlmFaults:
        state.set_faults(body)
        log.info("llm faults set: %s", body.model_dump(exclude_defaults=True) or "none")
        return state.current_faults()

    return api


class _SseAnswer(Response):
    """The streamed answer, as a raw ASGI response: paced tokens, the faults, and the client's
    disconnect noticed at once (the stream stops, and is recorded as ``client_closed``)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        entry: dict[str, Any],
        tokens: list[str],
        finish: str,
        usage: dict[str, int] | None,
        tokens_per_second: float,
        faults: LlmFaults,
    ) -> None:
        # Not Response.__init__: it would announce a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]
        self._entry = entry
        self._tokens = tokens
        self._finish = finish
        self._usage = usage
        self._interval = 1.0 / tokens_per_second
        self._faults = faults

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        """A ``chat.completion.chunk``; ``delta=None``: the usage chunk, with no choices."""
        entry = self._entry
        choices = [] if delta is None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        ]  # fmt: skip
        return {
            "id": entry["id"],
            "object": "chat.completion.chunk",
            "created": int(entry["at"]),
            "model": entry["model"],
            "system_fingerprint": "fp_simulator",
            "choices": choices,
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await self._stream(scope, send, gone)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _stream(self, scope: Any, send: Any, gone: asyncio.Event) -> None:
        entry = self._entry
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await self._body(send, _event(self._chunk({"role": "assistant", "content": ""}, None)))
        breaks_at = self._faults.break_after_tokens
        start = time.monotonic()
        for n, token in enumerate(self._tokens):
            if breaks_at is not None and n >= breaks_at:
                await self._break(scope, send, gone)
                return
            # paced from the start, so a slow loop does not slow the whole answer down
            delay = start + (n + 1) * self._interval - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), delay)
            if gone.is_set():
                entry["outcome"] = "client_closed"
                return
            await self._body(send, _event(self._chunk({"content": token}, None)))
            entry["tokens_sent"] = n + 1
        if breaks_at == len(self._tokens):  # all the text, but neither finish_reason nor [DONE]
            await self._break(scope, send, gone)
            return
        await self._body(send, _event(self._chunk({}, self._finish)))
        if self._usage is not None:
            await self._body(send, _event({**self._chunk(None, None), "usage": self._usage}))
        await self._body(send, b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        entry["outcome"] = "completed"

    @staticmethod
    async def _body(send: Any, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _break(self, scope: Any, send: Any, gone: asyncio.Event) -> None:
        entry = self._entry
        entry["outcome"] = "broken"
        mode = self._faults.break_mode
        log.info("llm fault: %s after %d tokens", mode, entry["tokens_sent"])
        if mode == "close":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif mode == "error_event":
            error = {
                "message": "The server had an error while processing your request (simulated).",
                "type": "server_error",
                "param": None,
                "code": None,
            }
            await self._body(send, _event({"error": error}))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif mode == "stall":
            await gone.wait()  # until the client gives up
            entry["outcome"] = "client_closed"
        else:
            transport = scope.get(TRANSPORT_SCOPE_KEY)
            if transport is None:  # not under the simulator's uvicorn: end the body early
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            await gone.wait()


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
