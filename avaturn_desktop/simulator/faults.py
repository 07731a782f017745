"""Fault injection: latency, 5xx, 429 bursts and dropped connections on the service's calls.

Faults touch only the HTTP calls of the service contract (paths under ``/api/v1`` and
``/_sdk/v0``), never CORS preflights, the ``/_sim`` control routes, the SDK file or the
event WebSocket (which has its own knobs, ``drop_event_channels`` and
``refuse_event_channels``).

The avatar's media has its own knobs, ``video_fault`` and ``audio_fault``: they are not HTTP
faults but what the audience would see and hear (a frozen or black picture, a mute voice).
The engine hands them to every viewer over the event channel (``sim_media``), and the
simulated Web SDK plays its stream accordingly (see ``engine`` and ``resources/sim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class FaultConfig(BaseModel):
    """What goes wrong, and how often. The default is a healthy service."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    #: each request's delay is ``latency_ms`` plus a uniform draw in ``[-jitter_ms, jitter_ms]``
    jitter_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    #: fraction of calls answered with ``error_status`` and ``{"detail": ...}``
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    error_status: Annotated[int, Field(ge=500, le=599)] = 503
    #: the next N calls get 429 with ``Retry-After: retry_after_s`` (a counter: it runs down)
    rate_limit_burst: Annotated[int, Field(ge=0)] = 0
    retry_after_s: Annotated[int, Field(ge=0)] = 1
    #: fraction of calls whose TCP connection is reset (RST) without any answer
    reset_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: one-shot action: close every viewer's event channel now (the flag does not stay set)
    drop_event_channels: bool = False
    #: the avatar's picture, in every session until set back: frozen on its last frame, or black
    video_fault: VideoFault = "none"
    #: the avatar's voice, in every session until set back: silent even while it speaks
    audio_fault: AudioFault = "none"
    #: while set, a viewer's event channel is refused at the handshake (503): a page cut off
    #: from the service, whose session ends as ``user_absent_timeout`` once that runs out
    refuse_event_channels: bool = False


class FaultState:
    """The live fault settings: the configured knobs plus the 429 counter running down."""

    def __init__(self, faults: FaultConfig, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._faults = faults.model_copy(update={"drop_event_channels": False})
        self._rate_limit_left = faults.rate_limit_burst

    def set(self, faults: FaultConfig) -> None:
        self._faults = faults.model_copy(update={"drop_event_channels": False})
        self._rate_limit_left = faults.rate_limit_burst

    def current(self) -> FaultConfig:
        return self._faults.model_copy(update={"rate_limit_burst": self._rate_limit_left})

    def delay_s(self) -> float:
        f = self._faults
        if not f.latency_ms and not f.jitter_ms:
            return 0.0
        jitter = self._rng.uniform(-f.jitter_ms, f.jitter_ms) if f.jitter_ms else 0.0
        return max(0.0, f.latency_ms + jitter) / 1000.0

    def take_rate_limit(self) -> bool:
        if self._rate_limit_left > 0:
            self._rate_limit_left -= 1
            return True
        return False

    def roll_reset(self) -> bool:
        rate = self._faults.reset_rate
        return rate > 0 and self._rng.random() < rate

    def roll_error(self) -> bool:
        rate = self._faults.error_rate
        return rate > 0 and self._rng.random() < rate

    @property
    def error_status(self) -> int:
        return self._faults.error_status

    @property
    def retry_after_s(self) -> int:
        return self._faults.retry_after_s


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
        delay = state.delay_s()
        if delay:
            await asyncio.sleep(delay)
        if state.roll_reset():
            log.info("fault: resetting the connection of %s %s", scope["method"], scope["path"])
            await _reset_connection(scope, receive, send)
            return
        if state.take_rate_limit():
            log.info("fault: 429 for %s %s", scope["method"], scope["path"])
            await _answer(
                send,
                429,
                {"detail": "Too many requests (simulated)"},
                [(b"retry-after", str(state.retry_after_s).encode())],
            )
            return
        if state.roll_error():
            status = state.error_status
            log.info("fault: %d for %s %s", status, scope["method"], scope["path"])
            await _answer(send, status, {"detail": "Service unavailable (simulated)"})
            return
        await self.app(scope, receive, send)


def _is_faultable(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] == "OPTIONS":
        return False
    path: str = scope["path"]
    return any(path == p or path.startswith(p + "/") for p in FAULTED_PREFIXES)


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
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
