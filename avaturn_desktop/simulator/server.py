"""The simulator's HTTP face: FastAPI routes of ``/api/v1``, ``/_sdk/v0`` and ``/_sim``, and
the uvicorn runners (foreground ``serve`` for the CLI, background ``SimulatorServer`` for the
app and the tests).

Routes beyond the service contract (``avaturn-api.md`` §1, §2):

* ``GET /sim/web-sdk.js``: the simulated Web SDK module (``resources/sim/web-sdk.js``).
* ``WS /_sdk/v0/sessions/events?token=<token>``: the event channel (see ``engine``); an
  unknown or ended token is refused at the handshake with 404 ``{"detail": ...}``.
* ``GET /_sim/state``: ``snapshot()``. ``GET``/``PUT /_sim/faults``: ``FaultConfig``.
  ``POST /_sim/sessions/{id}/kill`` body ``{"reason": str}`` (optional): ends it as ``killed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Annotated, Any, Literal, TypeVar

import pydantic
import uvicorn
from fastapi import Body, FastAPI, Header, Request, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from avaturn_desktop.core.catalog import AVATARS, VOICES
from avaturn_desktop.core.models import (
    SdkConfigPatch,
    SdkSession,
    SdkSessionConfig,
    SessionCreate,
    SessionCreated,
    TaskCreate,
    TaskCreated,
)
from avaturn_desktop.core.paths import resource
from avaturn_desktop.simulator.engine import (
    AvatarGone,
    Engine,
    SimSession,
    UnknownVoice,
    Viewer,
    _Close,
)
from avaturn_desktop.simulator.faults import (
    TRANSPORT_SCOPE_KEY,
    FaultConfig,
    FaultMiddleware,
    FaultState,
)
from avaturn_desktop.simulator.llm import LlmConfig, llm_router

__all__ = [
    "FaultConfig",
    "SimulatorConfig",
    "SimulatorServer",
    "create_app",
    "serve",
]

log = logging.getLogger("avaturn.simulator")

SDK_PATH = "/sim/web-sdk.js"
EVENTS_PATH = "/_sdk/v0/sessions/events"
CORS_METHODS = ["GET", "POST", "PATCH", "DELETE", "OPTIONS"]
CORS_HEADERS = ["X-Session-Token", "Content-Type", "Authorization"]

T = TypeVar("T")

#: The Web SDK's credential header (module level: FastAPI resolves annotations in globals).
TokenHeader = Annotated[str | None, Header(alias="X-Session-Token")]


class SimulatorConfig(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0 = a free port
    api_key: str | None = None  # None: any non-empty bearer key accepted
    extra_voices: list[str] = []  # added to core.catalog.VOICES ids
    chars_per_second: Annotated[float, Field(gt=0)] = 15.0  # speaking rate
    time_scale: Annotated[float, Field(gt=0)] = 1.0  # >1 speeds up the session timeouts
    phrase_ids: Literal["task", "own"] = "task"  # phrase_id == task_id, or unrelated ids
    faults: FaultConfig = FaultConfig()
    llm: LlmConfig = LlmConfig()  # the language model stand-in (``simulator/llm.py``)

    def __repr__(self) -> str:  # the API key is a secret
        fields = self.model_dump(exclude={"api_key"})
        fields["api_key"] = None if self.api_key is None else "<hidden>"
        return "SimulatorConfig(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    __str__ = __repr__


class KillRequest(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(max_length=500)] = "killed by the simulator"


# -- the app -------------------------------------------------------------------------------


class _SimulatorApp(FastAPI):
    """FastAPI that hands uvicorn's connection transport to the fault layer (for real resets)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[TRANSPORT_SCOPE_KEY] = transport
        await super().__call__(scope, receive, send)


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def create_app(config: SimulatorConfig) -> FastAPI:
    """The simulator as an ASGI app; ``app.state.engine`` and ``app.state.faults`` hold state."""
    engine = Engine(
        voices={v.id for v in VOICES} | set(config.extra_voices),
        avatars={a.id for a in AVATARS},
        chars_per_second=config.chars_per_second,
        time_scale=config.time_scale,
        phrase_ids=config.phrase_ids,
    )
    faults = FaultState(config.faults)
    api_key = config.api_key

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.aclose()

    app = _SimulatorApp(
        title="Avaturn Live simulator",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine
    app.state.faults = faults
    # Added first, so it runs inside CORS: faulted answers carry CORS headers too.
    app.add_middleware(FaultMiddleware, state=faults)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=["Retry-After"],
        max_age=600,
    )

    def auth_error(authorization: str | None) -> JSONResponse | None:
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _detail(
                401, "Not authenticated: an API key is required", {"WWW-Authenticate": "Bearer"}
            )
        if api_key is not None and not hmac.compare_digest(key.encode(), api_key.encode()):
            return _detail(401, "Invalid API key", {"WWW-Authenticate": "Bearer"})
        return None

    def sdk_session(token: str | None) -> SimSession | JSONResponse:
        if not token:
            return _detail(401, "Missing session token")
        session = engine.live_session_by_token(token)
        if session is None:
            return _detail(404, "Session not found")
        return session

    app.include_router(llm_router(config.llm))

    # -- /api/v1 ---------------------------------------------------------------------------

    @app.post("/api/v1/sessions", response_model=None)
    async def create_session(
        body: Annotated[SessionCreate | None, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> SessionCreated | JSONResponse:
        if (denied := auth_error(authorization)) is not None:
            return denied
        try:
            session = engine.create_session(body or SessionCreate())
        except AvatarGone as exc:
            return _detail(410, str(exc))
        except UnknownVoice as exc:
            return _detail(400, str(exc))
        return SessionCreated(session_id=session.id, token=session.token)

    @app.post("/api/v1/sessions/{session_id}/tasks", response_model=None)
    async def create_task(
        session_id: str,
        body: TaskCreate,
        authorization: Annotated[str | None, Header()] = None,
    ) -> TaskCreated | JSONResponse:
        if (denied := auth_error(authorization)) is not None:
            return denied
        session = engine.live_session(session_id)
        if session is None:
            return _detail(404, "Session not found")
        return TaskCreated(task_id=session.add_task(body.text, "api").task_id)

    @app.delete("/api/v1/sessions/{session_id}", response_model=None)
    async def delete_session(
        session_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        if (denied := auth_error(authorization)) is not None:
            return denied
        session = engine.live_session(session_id)
        if session is None:
            return _detail(404, "Session not found")
        session.end("terminated")
        return Response(status_code=200)

    # -- /_sdk/v0 ---------------------------------------------------------------------------

    @app.get("/_sdk/v0/sessions", response_model=None)
    async def sdk_get_session(
        request: Request, token: TokenHeader = None
    ) -> SdkSession | JSONResponse:
        session = sdk_session(token)
        if isinstance(session, JSONResponse):
            return session
        return SdkSession(
            id=session.id,
            limited_access_token=f"sim-room-{session.id}",
            room_url=f"{str(request.base_url).rstrip('/')}/sim/rooms/{session.id}",
            session_config=SdkSessionConfig(
                uses_stacked_alpha=session.params.background == "transparent"
            ),
        )

    @app.post("/_sdk/v0/sessions/tasks", response_model=None)
    async def sdk_task(body: TaskCreate, token: TokenHeader = None) -> TaskCreated | JSONResponse:
        session = sdk_session(token)
        if isinstance(session, JSONResponse):
            return session
        return TaskCreated(task_id=session.add_task(body.text, "sdk").task_id)

    @app.post("/_sdk/v0/sessions/cancel_all_speech_tasks", response_model=None)
    async def sdk_cancel_all(token: TokenHeader = None) -> dict[str, int] | JSONResponse:
        session = sdk_session(token)
        if isinstance(session, JSONResponse):
            return session
        return {"cancelled": session.cancel_all()}

    @app.patch("/_sdk/v0/sessions/config", response_model=None)
    async def sdk_patch_config(
        body: SdkConfigPatch, token: TokenHeader = None
    ) -> dict[str, Any] | JSONResponse:
        session = sdk_session(token)
        if isinstance(session, JSONResponse):
            return session
        voice_id = body.conversation_engine.tts.voice_id
        try:
            engine.check_voice(voice_id)
        except UnknownVoice as exc:
            return _detail(400, str(exc))
        return {"voice_id": voice_id, "cancelled": session.change_voice(voice_id)}

    @app.post("/_sdk/v0/sessions/start_stream", response_model=None)
    async def sdk_start_stream(token: TokenHeader = None) -> dict[str, Any] | JSONResponse:
        session = sdk_session(token)
        if isinstance(session, JSONResponse):
            return session
        session.stream_started = True
        return {}

    @app.websocket(EVENTS_PATH)
    async def sdk_events(websocket: WebSocket, token: str | None = None) -> None:
        session = engine.live_session_by_token(token)
        if session is None:
            await websocket.send_denial_response(_detail(404, "Session not found"))
            return
        # Counted before the handshake completes, so a client that sees the socket open
        # can rely on being a viewer already.
        viewer = session.add_viewer()
        try:
            await websocket.accept()
            await _run_channel(websocket, viewer)
        finally:
            session.remove_viewer(viewer)

    # -- the simulated SDK and the control routes ------------------------------------------

    @app.get(SDK_PATH)
    async def web_sdk() -> Response:
        return Response(
            resource("sim", "web-sdk.js").read_bytes(),
            media_type="text/javascript",
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"},
        )

    @app.get("/_sim/state")
    async def sim_state() -> dict[str, Any]:
        return engine.snapshot()

    @app.get("/_sim/faults")
    async def sim_get_faults() -> FaultConfig:
        return faults.current()

    @app.put("/_sim/faults")
    async def sim_put_faults(body: FaultConfig) -> FaultConfig:
        _apply_faults(engine, faults, body)
        return faults.current()

    @app.post("/_sim/sessions/{session_id}/kill", response_model=None)
    async def sim_kill(
        session_id: str, body: Annotated[KillRequest | None, Body()] = None
    ) -> dict[str, Any] | JSONResponse:
        session = engine.live_session(session_id)
        if session is None:
            return _detail(404, "Session not found")
        session.end("killed", (body or KillRequest()).reason)
        return {"session_id": session_id, "end_reason": "killed"}

    return app


def _apply_faults(engine: Engine, state: FaultState, faults: FaultConfig) -> None:
    state.set(faults)
    log.info("faults set: %s", faults.model_dump(exclude_defaults=True) or "none")
    if faults.drop_event_channels:
        dropped = engine.drop_event_channels()
        log.info("fault: dropped %d event channel(s)", dropped)


async def _run_channel(websocket: WebSocket, viewer: Viewer) -> None:
    """Pump the viewer's outbox into the socket until either side closes."""

    async def pump() -> None:
        while True:
            item = await viewer.outbox.get()
            if isinstance(item, _Close):
                await websocket.close(code=item.code, reason=item.reason)
                return
            await websocket.send_json(item)

    async def drain() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive_text()
                log.debug("event channel: ignored a client message (%d chars)", len(message))

    tasks = [asyncio.create_task(pump()), asyncio.create_task(drain())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(
            result, WebSocketDisconnect | RuntimeError
        ):
            log.warning("event channel failed: %r", result)


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


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, proto, _, address = infos[0]
    # The protocol must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only
    # then, and without it every keep-alive call waits on a delayed ACK (~40 ms on loopback).
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _base_url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = host
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified:
            shown = "127.0.0.1" if ip.version == 4 else "::1"
        if ipaddress.ip_address(shown).version == 6:
            shown = f"[{shown}]"
    return f"http://{shown}:{port}"


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
    _install_log_redaction()
    sock = _bind(config.host, config.port)
    base_url = _base_url(config.host, sock)
    server = _Uvicorn(
        uvicorn.Config(
            app,
            lifespan="on",
            ws="websockets-sansio",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=5,
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
        self._call(lambda: _apply_faults(self._engine, self._faults, faults))

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
