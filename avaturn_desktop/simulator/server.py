"""The simulator's HTTP face: ``create_app`` (the routers of ``routes``, behind the guards of
``security``) and the uvicorn runners (foreground ``serve`` for the CLI, background
``SimulatorServer`` for the tests).

Routes beyond the service contract (``avaturn-api.md`` §1, §2):

* ``GET /sim/web-sdk.js``: the simulated Web SDK module (``resources/sim/web-sdk.js``).
* ``WS /_sdk/v0/sessions/events?token=<token>``: the event channel (see ``engine``); an
  unknown or ended token is refused at the handshake with 404 ``{"detail": ...}``.
* ``GET /_sim/state``: ``snapshot()``. ``GET``/``PUT /_sim/faults``: ``FaultConfig``.
  ``POST /_sim/sessions/{id}/kill`` body ``{"reason": str}`` (optional): ends it as ``killed``.
  With an API key configured they take that key as a bearer; without one they are open.
* ``GET /openapi.json``: the schema of all of the above (what the API fuzzer works from).

With an API key (the app passes a random one per run), the simulator is locked: only the key
opens ``/api/v1`` and ``/_sim``, and only the allowed origins (by default the app's stage,
``avaturn://stage``) may call it from a page. The ``Host`` check and the body cap hold always.
To add routes (say, another API face), ``app.include_router(router)``: the routers' shared
dependencies are in ``routes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Annotated, Any, Literal, TypeVar

import anyio.lowlevel
import pydantic
import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from pydantic import AfterValidator, ConfigDict, Field

from avaturn_desktop.core.catalog import AVATARS, VOICES
from avaturn_desktop.simulator import listen
from avaturn_desktop.simulator.engine import Engine
from avaturn_desktop.simulator.errors import SafeJSONResponse, validation_error_handler
from avaturn_desktop.simulator.faults import (
    TRANSPORT_SCOPE_KEY,
    FaultConfig,
    FaultMiddleware,
    FaultState,
)
from avaturn_desktop.simulator.llm import LlmConfig, llm_router
from avaturn_desktop.simulator.routes import (
    EVENTS_PATH,
    SDK_PATH,
    ApiKey,
    api_router,
    apply_faults,
    sdk_router,
    sim_router,
)
from avaturn_desktop.simulator.security import (
    ANY_ORIGIN,
    APP_STAGE_ORIGIN,
    MAX_BODY_BYTES,
    Guard,
)

__all__ = [
    "EVENTS_PATH",
    "SDK_PATH",
    "FaultConfig",
    "SimulatorConfig",
    "SimulatorServer",
    "create_app",
    "serve",
]

log = logging.getLogger("avaturn.simulator")

CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_HEADERS = ["X-Session-Token", "Content-Type", "Authorization"]


def _sendable_key(key: str) -> str:
    """A key that could not be sent in a header, or a blank one, is refused up front."""
    if not all("!" <= c <= "~" for c in key):
        raise ValueError("the key must be printable ASCII, without spaces")
    return key


T = TypeVar("T")


class SimulatorConfig(pydantic.BaseModel):
    #: ``hide_input_in_errors``: a refused API key must not be echoed in the error.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0 = a free port
    #: A listening socket handed over by the parent (its file descriptor): host and port are
    #: then the parent's choice, already bound (``listen``).
    listen_fd: Annotated[int, Field(ge=0)] | None = None
    #: None: any non-empty bearer key accepted, and the simulator is open to any origin.
    api_key: (
        Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_sendable_key)] | None
    ) = None
    #: Origins a page may call from (CORS, and the ``Origin`` check); ``["*"]`` any. None:
    #: the app's stage when a key is set, else any.
    allowed_origins: list[Annotated[str, Field(min_length=1, max_length=300)]] | None = None
    #: Host names accepted in ``Host`` besides the addresses the server listens on.
    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = []
    extra_voices: list[str] = []  # added to core.catalog.VOICES ids
    chars_per_second: Annotated[float, Field(gt=0, le=1e6)] = 15.0  # speaking rate
    time_scale: Annotated[float, Field(gt=0, le=1e6)] = 1.0  # >1 speeds up the session timeouts
    phrase_ids: Literal["task", "own"] = "task"  # phrase_id == task_id, or unrelated ids
    #: How long an ended session stays in ``/_sim/state`` (and how many at most), seconds.
    ended_session_ttl_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    max_ended_sessions: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    #: Idle keep-alive connections are closed after this; a request's head must arrive within
    #: ``request_head_timeout_s`` of the connection opening or the last answer.
    keep_alive_s: Annotated[int, Field(ge=1, le=3600)] = 5
    request_head_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = MAX_BODY_BYTES
    faults: FaultConfig = FaultConfig()
    llm: LlmConfig = LlmConfig()  # the language model stand-in (``simulator/llm.py``)

    def __repr__(self) -> str:  # the API key is a secret
        fields = self.model_dump(exclude={"api_key"})
        fields["api_key"] = None if self.api_key is None else "<hidden>"
        return "SimulatorConfig(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    __str__ = __repr__

    @property
    def locked(self) -> bool:
        """Whether one key opens it (the app's own simulator; the CLI with ``--api-key``)."""
        return self.api_key is not None

    @property
    def origins(self) -> list[str]:
        """The origins a page may call from; ``["*"]`` means any."""
        if self.allowed_origins is not None:
            return list(self.allowed_origins)
        return [APP_STAGE_ORIGIN] if self.locked else [ANY_ORIGIN]


# -- the app -------------------------------------------------------------------------------


class _SimulatorApp(FastAPI):
    """FastAPI that hands uvicorn's connection transport to the fault layer (for real resets)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[TRANSPORT_SCOPE_KEY] = transport
        await super().__call__(scope, receive, send)


def create_app(config: SimulatorConfig) -> FastAPI:
    """The simulator as an ASGI app; ``app.state.engine`` and ``app.state.faults`` hold state."""
    engine = Engine(
        voices={v.id for v in VOICES} | set(config.extra_voices),
        avatars={a.id for a in AVATARS},
        chars_per_second=config.chars_per_second,
        time_scale=config.time_scale,
        phrase_ids=config.phrase_ids,
        ended_ttl_s=config.ended_session_ttl_s,
        max_ended=config.max_ended_sessions,
    )
    faults = FaultState(config.faults)
    engine.set_media(config.faults.video_fault, config.faults.audio_fault)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # anyio loads its asyncio backend at its first call, which would be inside the
        # first request (Starlette's request streams): ~10-30 ms of the first session's
        # answer. The server's start pays it instead (the app starts its child early).
        await anyio.lowlevel.checkpoint()
        yield
        await engine.aclose()

    app = _SimulatorApp(
        title="Avaturn Live simulator",
        summary="A local stand-in of the Avaturn Live service (text-echo)",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        default_response_class=SafeJSONResponse,
    )
    app.state.engine = engine
    app.state.faults = faults
    app.state.api_key = ApiKey(config.api_key)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.include_router(api_router())
    app.include_router(sdk_router())
    app.include_router(sim_router())
    app.include_router(llm_router(config.llm))
    # Middleware runs outside in: Guard, then CORS, then faults (so faulted answers carry
    # CORS headers too, and nothing the Guard refuses reaches either).
    app.add_middleware(FaultMiddleware, state=faults)
    origins = config.origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=["Retry-After"],
        max_age=600,
    )
    app.add_middleware(
        Guard,
        hosts=config.allowed_hosts,
        origins=None if ANY_ORIGIN in origins else origins,
        control_key=config.api_key,
        max_body_bytes=config.max_body_bytes,
    )
    return app


# -- logging hygiene -----------------------------------------------------------------------

_TOKEN_RE = re.compile(r"(token=)[^&\s\"']+")


class _RedactTokens(logging.Filter):
    """uvicorn logs WebSocket paths with their query string; hide the session token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _TOKEN_RE.sub(r"\1<hidden>", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_RE.sub(r"\1<hidden>", record.msg)
        return True


def _install_log_redaction() -> None:
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in logger.filters):
            logger.addFilter(_RedactTokens())


# -- running it ----------------------------------------------------------------------------


def _head_deadline(base: type[asyncio.Protocol], timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing connections that never finish a request's head.

    uvicorn's ``timeout_keep_alive`` starts only after an answer: a connection that sends
    nothing, or trickles a header a byte at a time, is kept for ever. Here the head of each
    request must arrive within ``timeout`` of the connection opening or of the last answer.
    """

    class HeadDeadlineProtocol(base):  # type: ignore[valid-type, misc]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_deadline()

        def handle_websocket_upgrade(self, *args: Any) -> None:
            self._disarm_head_deadline()
            super().handle_websocket_upgrade(*args)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_timer = self.loop.call_later(timeout, self._head_deadline_passed)

        def _disarm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_deadline_passed(self) -> None:
            self._head_timer = None
            cycle = self.cycle
            idle = cycle is None or cycle.response_complete  # no request under way
            if idle and not self.transport.is_closing():
                log.info("closed a connection that sent no complete request in %.0f s", timeout)
                self.transport.close()

    return HeadDeadlineProtocol


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling (the caller owns signals) and with a start hook."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._exit_requested = asyncio.Event()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit_requested.set()

    async def main_loop(self) -> None:
        # uvicorn's loop, but woken at once by ``request_exit`` instead of on its next tick.
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._exit_requested.wait()
            should_exit = await self.on_tick(counter)

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


async def _serve_app(
    app: FastAPI, config: SimulatorConfig, ready: Callable[[str], None] | None
) -> None:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    _install_log_redaction()
    if config.listen_fd is None:
        sock = listen.bind(config.host, config.port)
    else:  # handed over by the parent, already listening (see ``listen``)
        sock = socket.socket(fileno=config.listen_fd)
        sock.setblocking(False)
    base_url = listen.base_url(sock)
    server = _Uvicorn(
        uvicorn.Config(
            app,
            http=_head_deadline(AutoHTTPProtocol, config.request_head_timeout_s),
            lifespan="on",
            ws="websockets-sansio",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=config.keep_alive_s,
        ),
        on_started=lambda: ready(base_url) if ready else None,
    )
    log.info("simulator starting on %s", base_url)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.request_exit()
        await task
        raise
    finally:
        sock.close()
        log.info("simulator stopped")


async def serve(config: SimulatorConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator in the foreground; ``ready(base_url)`` is called once it listens.

    Returns when the server exits; on cancellation it shuts down cleanly, then re-raises.
    """
    await _serve_app(create_app(config), config, ready)


class SimulatorServer:
    """The simulator on a background thread with its own event loop (the app's and tests')."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.app = create_app(config)
        self._engine: Engine = self.app.state.engine
        self._faults: FaultState = self.app.state.faults
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._base_url: str | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SimulatorServer(base_url={self._base_url!r})"

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not running")
        return self._base_url

    @property
    def sdk_url(self) -> str:
        return self.base_url + SDK_PATH

    def start(self, timeout: float = 10.0) -> None:
        """Start serving on a background thread; returns once the socket is bound."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the simulator was already started")
            self._thread = threading.Thread(target=self._run, name="avaturn-simulator", daemon=True)
            self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError("the simulator did not start in time")
        if self._error is not None:
            self.stop()
            raise RuntimeError(f"the simulator failed to start: {self._error}") from self._error

    def stop(self) -> None:
        """Stop serving and join the thread. Safe to call more than once."""
        with self._lock:
            thread, loop, main = self._thread, self._loop, self._main
        if thread is None:
            return
        if loop is not None and main is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(main.cancel)
        thread.join()

    def set_faults(self, faults: FaultConfig) -> None:
        self._call(lambda: apply_faults(self._engine, self._faults, faults))

    def faults(self) -> FaultConfig:
        return self._call(self._faults.current)

    def snapshot(self) -> dict[str, Any]:
        return self._call(self._engine.snapshot)

    # -- internals -------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (engine state lives there) and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return fn()
        future: Future[T] = Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return future.result(timeout=10)

    def _run(self) -> None:
        try:
            with asyncio.Runner() as runner:
                runner.run(self._serve())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self._error = exc
            log.exception("the simulator crashed")
        finally:
            self._loop = None
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()

        def ready(base_url: str) -> None:
            self._base_url = base_url
            self._started.set()

        await _serve_app(self.app, self.config, ready)
