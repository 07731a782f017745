"""Fault injection: latency, 5xx, 429s and dropped connections on the service's calls, before
the service handled a call or after it did.

Faults touch only the HTTP calls of the service contract (paths under ``/api/v1`` and
``/_sdk/v0``), never CORS preflights, the ``/_sim`` control routes, the SDK file or the
event WebSocket (which has its own knobs, ``drop_event_channels`` and
``refuse_event_channels``).

Before the handler: a refusal the client can prove (429, a 5xx from the service itself, a
reset before anything was read), so the call did nothing. After the handler (``after_accept``):
the call *was* done (a task is queued) but the answer lies about it or never comes: a 2xx with
an empty, HTML or ``{}`` body, a gateway's 502/503/504, no answer until the client gives up, a
reset. A client must treat those as "may have happened".

Reproducible runs: with ``seed`` set, every draw of a call (its jitter, whether it is reset,
refused or answered falsely) comes from its own generator seeded by ``(seed, route, n)``, where
``route`` is the method and the path with the session id left out and ``n`` counts the calls of
that route since the faults were set. The same seed and the same calls give the same faults,
whatever the timing of calls on other routes.

The avatar's media has its own knobs, ``video_fault`` and ``audio_fault``: they are not HTTP
faults but what the audience would see and hear (a frozen or black picture, a mute voice).
The engine hands them to every viewer over the event channel (``sim_media``), and the
simulated Web SDK plays its stream accordingly (see ``engine`` and ``resources/sim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger("avaturn.simulator")

FAULTED_PREFIXES = ("/api/v1", "/_sdk/v0")

#: Where the wrapping app leaves uvicorn's connection transport for a reset (see ``FaultyApp``).
TRANSPORT_SCOPE_KEY = "avaturn.sim.transport"

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

#: What the avatar's picture does under fault injection (``none``: it plays).
VideoFault = Literal["none", "freeze", "black"]
#: What the avatar's voice does under fault injection (``none``: it is heard).
AudioFault = Literal["none", "mute"]
#: What a call that was done answers under ``after_accept`` (see the module docs).
AfterAccept = Literal["empty_2xx", "html_2xx", "object_2xx", "502", "503", "504", "hang", "reset"]
AFTER_ACCEPT_KINDS: Final[tuple[AfterAccept, ...]] = (
    "empty_2xx",
    "html_2xx",
    "object_2xx",
    "502",
    "503",
    "504",
    "hang",
    "reset",
)
#: A gateway's page, as an nginx in front of a service sends it.
_HTML = b"<html><head><title>OK</title></head><body><h1>OK</h1></body></html>\n"
_SESSION_IN_PATH = re.compile(r"^(/api/v1/sessions/)[^/]+")
_ANY_SESSION = r"\1{id}"


class FaultConfig(BaseModel):
    """What goes wrong, and how often. The default is a healthy service."""

    model_config = ConfigDict(extra="forbid")

    #: seeds every call's draws (see the module docs); ``None``: a fresh generator per state
    seed: int | None = None
    latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    #: each request's delay is ``latency_ms`` plus a uniform draw in ``[-jitter_ms, jitter_ms]``
    jitter_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    #: fraction of calls answered with ``error_status`` and ``{"detail": ...}``
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    error_status: Annotated[int, Field(ge=500, le=599)] = 503
    #: the next N calls get ``error_status`` (a counter: it runs down, like the 429 burst)
    error_burst: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    #: the next N calls get 429 with ``Retry-After: retry_after_s`` (a counter: it runs down)
    rate_limit_burst: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    #: fraction of calls that start a burst of ``rate_limit_burst_len`` 429s on their route
    #: (this call included)
    rate_limit_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    rate_limit_burst_len: Annotated[int, Field(ge=1, le=1000)] = 1
    retry_after_s: Annotated[int, Field(ge=0, le=10**9)] = 1
    #: sent as the ``Retry-After`` header verbatim instead of ``retry_after_s`` (any value a
    #: service might send: ``inf``, ``1e400``, ``-5``, an HTTP date, garbage)
    retry_after: Annotated[str, Field(max_length=200)] | None = None
    #: fraction of calls whose TCP connection is reset (RST) without any answer
    reset_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: fraction of accepted calls (the handler answered 2xx) whose answer is replaced by one
    #: of ``after_accept`` (drawn per call) on the routes ``after_accept_routes`` names
    after_accept_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    after_accept: Annotated[list[AfterAccept], Field(min_length=1, max_length=8)] = ["503"]
    after_accept_routes: Literal["tasks", "all"] = "tasks"
    #: how long ``hang`` holds the answer if the client does not give up first
    hang_ms: Annotated[float, Field(ge=0, le=600_000)] = 30_000.0
    #: one-shot action: close every viewer's event channel now (the flag does not stay set)
    drop_event_channels: bool = False
    #: the avatar's picture, in every session until set back: frozen on its last frame, or black
    video_fault: VideoFault = "none"
    #: the avatar's voice, in every session until set back: silent even while it speaks
    audio_fault: AudioFault = "none"
    #: while set, a viewer's event channel is refused at the handshake (503): a page cut off
    #: from the service, whose session ends as ``user_absent_timeout`` once that runs out
    refuse_event_channels: bool = False

    @field_validator("retry_after")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and not all(" " <= c <= "~" for c in value):
            raise ValueError("must be printable ASCII (it is sent as a header)")
        return value


@dataclasses.dataclass(frozen=True)
class Plan:
    """What happens to one call, drawn when it arrives."""

    delay_s: float = 0.0
    reset: bool = False
    rate_limited: bool = False
    error: bool = False
    after_accept: AfterAccept | None = None


class FaultState:
    """The live fault settings: the configured knobs plus the 429 counter running down."""

    def __init__(self, faults: FaultConfig, rng: random.Random | None = None) -> None:
        self._shared_rng = rng or random.Random()
        self._start(faults.model_copy(update={"drop_event_channels": False}))

    def set(self, faults: FaultConfig) -> None:
        """New knobs: the 429 counter and the seeded schedule start over (but see below)."""
        kept = faults.model_copy(update={"drop_event_channels": False})
        if faults.drop_event_channels and kept == self._faults:
            return  # the same faults with a one-shot drop: the schedule runs on
        self._start(kept)

    def _start(self, faults: FaultConfig) -> None:
        self._faults = faults
        self._rate_limit_left = faults.rate_limit_burst
        self._errors_left = faults.error_burst
        self._calls: Counter[str] = Counter()
        self._bursts: Counter[str] = Counter()
        #: What was injected since the faults were set, by kind (for tests and logs).
        self.injected: Counter[str] = Counter()

    def current(self) -> FaultConfig:
        return self._faults.model_copy(
            update={"rate_limit_burst": self._rate_limit_left, "error_burst": self._errors_left}
        )

    def _rng(self, route: str) -> random.Random:
        seed = self._faults.seed
        if seed is None:
            return self._shared_rng
        n = self._calls[route]
        self._calls[route] += 1
        return random.Random(f"{seed}|{route}|{n}")

    def plan(self, method: str, path: str) -> Plan:
        """Draw the fate of one call. Every draw is made, used or not, so that one knob
        changed leaves the other knobs' draws where they were for a given seed."""
        f = self._faults
        route = method + " " + _SESSION_IN_PATH.sub(_ANY_SESSION, path)
        rng = self._rng(route)
        jitter = rng.uniform(-f.jitter_ms, f.jitter_ms)
        reset = rng.random() < f.reset_rate
        burst = rng.random() < f.rate_limit_rate
        error = rng.random() < f.error_rate
        accept_roll = rng.random()
        kind = f.after_accept[rng.randrange(len(f.after_accept))]
        delay = max(0.0, f.latency_ms + (jitter if f.jitter_ms else 0.0)) / 1000.0
        if reset:
            return Plan(delay, reset=True)
        if self._rate_limit_left > 0:  # the configured burst: every route's next calls
            self._rate_limit_left -= 1
            return Plan(delay, rate_limited=True)
        if burst and not self._bursts[route]:  # a drawn burst: this route's next calls
            self._bursts[route] = f.rate_limit_burst_len
        if self._bursts[route] > 0:
            self._bursts[route] -= 1
            return Plan(delay, rate_limited=True)
        if self._errors_left > 0:
            self._errors_left -= 1
            return Plan(delay, error=True)
        if error:
            return Plan(delay, error=True)
        routes_ok = f.after_accept_routes == "all" or path.endswith("/tasks")
        if routes_ok and accept_roll < f.after_accept_rate:
            return Plan(delay, after_accept=kind)
        return Plan(delay)

    @property
    def error_status(self) -> int:
        return self._faults.error_status

    @property
    def retry_after_header(self) -> bytes:
        f = self._faults
        return (f.retry_after if f.retry_after is not None else str(f.retry_after_s)).encode()

    @property
    def hang_s(self) -> float:
        return self._faults.hang_ms / 1000.0


class FaultMiddleware:
    """Pure ASGI middleware that applies ``FaultState`` to the service's calls."""

    def __init__(self, app: ASGIApp, state: FaultState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_faultable(scope):
            await self.app(scope, receive, send)
            return
        state = self.state
        method, path = scope["method"], scope["path"]
        plan = state.plan(method, path)
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        if plan.reset:
            log.info("fault: resetting the connection of %s %s", method, path)
            state.injected["reset"] += 1
            await _reset_connection(scope, receive, send)
            return
        if plan.rate_limited:
            log.info("fault: 429 for %s %s", method, path)
            state.injected["429"] += 1
            await _answer(
                send,
                429,
                {"detail": "Too many requests (simulated)"},
                [(b"retry-after", state.retry_after_header)],
            )
            return
        if plan.error:
            status = state.error_status
            log.info("fault: %d for %s %s", status, method, path)
            state.injected[str(status)] += 1
            await _answer(send, status, {"detail": "Service unavailable (simulated)"})
            return
        if plan.after_accept is None:
            await self.app(scope, receive, send)
            return
        await self._after_accept(plan.after_accept, scope, receive, send)

    async def _after_accept(
        self, kind: AfterAccept, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run the handler (the call is done), then answer ``kind`` instead of its answer."""
        held: list[dict[str, Any]] = []

        async def hold(message: dict[str, Any]) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        status = next((m["status"] for m in held if m["type"] == "http.response.start"), 500)
        if status >= 300:  # refused: nothing was done, so nothing to lie about
            for message in held:
                await send(message)
            return
        method, path = scope["method"], scope["path"]
        log.info("fault after accept: %s for %s %s", kind, method, path)
        self.state.injected[f"after_accept:{kind}"] += 1
        if kind == "reset":
            await _reset_connection(scope, receive, send)
        elif kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_disconnected(receive), self.state.hang_s)
                return  # the client gave up: nobody to answer
            for message in held:
                await send(message)
        elif kind in ("502", "503", "504"):
            detail = {"detail": f"Bad gateway (simulated {kind} after the call was done)"}
            await _answer(send, int(kind), detail)
        elif kind == "empty_2xx":
            await _raw(send, 200, b"", b"application/json")
        elif kind == "html_2xx":
            await _raw(send, 200, _HTML, b"text/html; charset=utf-8")
        else:  # object_2xx
            await _raw(send, 200, b"{}", b"application/json")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _is_faultable(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] == "OPTIONS":
        return False
    path: str = scope["path"]
    return any(path == p or path.startswith(p + "/") for p in FAULTED_PREFIXES)


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await _raw(send, status, json.dumps(body).encode(), b"application/json", headers)


async def _raw(
    send: Send,
    status: int,
    data: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _reset_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """Drop the TCP connection with an RST and no answer at all.

    Under uvicorn the wrapping app puts the connection's transport in the scope; with
    ``SO_LINGER`` set to zero, aborting it makes the kernel send RST, so the client sees a
    real "connection reset". Under any other server (no transport) the nearest thing is done:
    a 502 with ``Connection: close``.
    """
    transport = scope.get(TRANSPORT_SCOPE_KEY)
    if transport is None:
        await _answer(
            send, 502, {"detail": "Connection reset (simulated)"}, [(b"connection", b"close")]
        )
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Wait until the server has seen the connection go, so it does not answer it with a 500.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
