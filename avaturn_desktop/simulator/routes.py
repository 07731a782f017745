"""The simulator's routes as three routers: the REST API (``/api/v1``), the Web SDK's private
API (``/_sdk/v0``, the simulated SDK's module and event channel) and the test controls
(``/_sim``).

The checks every route of a group shares are dependencies, declared once: the API key
(``require_api_key``; for ``/_sim`` only when a key is configured), the live session of a path
(``LiveSession``) or of the SDK's session token (``SdkSession``). Their refusals are
``HTTPException``s, answered as ``{"detail": ...}`` like every other error. Routers find the
engine and the fault state on ``app.state`` (``create_app`` puts them there), so another module
can add its own router with the same dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body, Depends, HTTPException, Request, WebSocket
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ConfigDict, Field
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from avaturn_desktop.core.models import (
    ErrorBody,
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
from avaturn_desktop.simulator.faults import FaultConfig, FaultState
from avaturn_desktop.simulator.listen import SDK_PATH

__all__ = [
    "EVENTS_PATH",
    "SDK_PATH",
    "ApiKey",
    "EngineDep",
    "LiveSession",
    "SdkSessionDep",
    "api_router",
    "apply_faults",
    "require_api_key",
    "require_control_key",
    "sdk_router",
    "sim_router",
]

log = logging.getLogger("avaturn.simulator")

EVENTS_PATH = "/_sdk/v0/sessions/events"


class ApiKey:
    """The one API key a simulator accepts, or None: any non-empty bearer key."""

    def __init__(self, key: str | None) -> None:
        self._key = None if key is None else key.encode()

    def __repr__(self) -> str:  # the key is a secret
        return f"ApiKey({'<hidden>' if self._key is not None else None})"

    @property
    def configured(self) -> bool:
        return self._key is not None

    def matches(self, given: str) -> bool:
        return self._key is None or hmac.compare_digest(given.encode(), self._key)


# -- dependencies ----------------------------------------------------------------------------


def _engine(connection: HTTPConnection) -> Engine:
    engine: Engine = connection.app.state.engine
    return engine


def _faults(request: Request) -> FaultState:
    faults: FaultState = request.app.state.faults
    return faults


EngineDep = Annotated[Engine, Depends(_engine)]
FaultsDep = Annotated[FaultState, Depends(_faults)]

_bearer = HTTPBearer(
    auto_error=False,
    description="The API key. Without a configured key any non-empty key is accepted.",
)
_session_token = APIKeyHeader(
    name="X-Session-Token", auto_error=False, description="The session's token"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def _check_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    key = credentials.credentials.strip() if credentials is not None else ""
    if not key:
        raise HTTPException(401, "Not authenticated: an API key is required", _UNAUTHENTICATED)
    api_key: ApiKey = request.app.state.api_key
    if not api_key.matches(key):
        raise HTTPException(401, "Invalid API key", _UNAUTHENTICATED)


def require_api_key(request: Request, credentials: Credentials) -> None:
    """A bearer key: the configured one, or any non-empty one when none is configured."""
    _check_key(request, credentials)


def require_control_key(request: Request, credentials: Credentials) -> None:
    """The configured key for the test controls; with none configured they are open."""
    api_key: ApiKey = request.app.state.api_key
    if api_key.configured:
        _check_key(request, credentials)


def live_session(session_id: str, engine: EngineDep) -> SimSession:
    session = engine.live_session(session_id)
    if session is None:
        raise HTTPException(404, "Session not found")
    return session


def sdk_session(
    engine: EngineDep, token: Annotated[str | None, Depends(_session_token)]
) -> SimSession:
    if not token:
        raise HTTPException(401, "Missing session token")
    session = engine.live_session_by_token(token)
    if session is None:
        raise HTTPException(404, "Session not found")
    return session


LiveSession = Annotated[SimSession, Depends(live_session)]
SdkSessionDep = Annotated[SimSession, Depends(sdk_session)]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


# -- /api/v1 ---------------------------------------------------------------------------------


def api_router() -> APIRouter:
    router = APIRouter(
        prefix="/api/v1",
        tags=["api"],
        dependencies=[Depends(require_api_key)],
        responses=_errors(401),
    )

    @router.post("/sessions", responses=_errors(400, 410))
    async def create_session(
        engine: EngineDep, body: Annotated[SessionCreate | None, Body()] = None
    ) -> SessionCreated:
        try:
            session = engine.create_session(body or SessionCreate())
        except AvatarGone as exc:
            raise HTTPException(410, str(exc)) from None
        except UnknownVoice as exc:
            raise HTTPException(400, str(exc)) from None
        return SessionCreated(session_id=session.id, token=session.token)

    @router.post("/sessions/{session_id}/tasks", responses=_errors(404))
    async def create_task(session: LiveSession, body: TaskCreate) -> TaskCreated:
        return TaskCreated(task_id=session.add_task(body.text, "api").task_id)

    @router.delete("/sessions/{session_id}", response_class=Response, responses=_errors(404))
    async def delete_session(session: LiveSession) -> Response:
        session.end("terminated")
        return Response(status_code=200)

    return router


# -- /_sdk/v0 and the simulated SDK ----------------------------------------------------------


def sdk_router() -> APIRouter:
    router = APIRouter(tags=["sdk"])
    responses = _errors(401, 404)

    @router.get("/_sdk/v0/sessions", responses=responses)
    async def sdk_get_session(request: Request, session: SdkSessionDep) -> SdkSession:
        return SdkSession(
            id=session.id,
            limited_access_token=f"sim-room-{session.id}",
            room_url=f"{str(request.base_url).rstrip('/')}/sim/rooms/{session.id}",
            session_config=SdkSessionConfig(
                uses_stacked_alpha=session.params.background == "transparent"
            ),
        )

    @router.post("/_sdk/v0/sessions/tasks", responses=responses)
    async def sdk_task(session: SdkSessionDep, body: TaskCreate) -> TaskCreated:
        return TaskCreated(task_id=session.add_task(body.text, "sdk").task_id)

    @router.post("/_sdk/v0/sessions/cancel_all_speech_tasks", responses=responses)
    async def sdk_cancel_all(session: SdkSessionDep) -> dict[str, int]:
        return {"cancelled": session.cancel_all()}

    @router.patch("/_sdk/v0/sessions/config", responses=_errors(400, 401, 404))
    async def sdk_patch_config(
        engine: EngineDep, session: SdkSessionDep, body: SdkConfigPatch
    ) -> dict[str, Any]:
        voice_id = body.conversation_engine.tts.voice_id
        try:
            engine.check_voice(voice_id)
        except UnknownVoice as exc:
            raise HTTPException(400, str(exc)) from None
        return {"voice_id": voice_id, "cancelled": session.change_voice(voice_id)}

    @router.post("/_sdk/v0/sessions/start_stream", responses=responses)
    async def sdk_start_stream(session: SdkSessionDep) -> dict[str, Any]:
        session.stream_started = True
        return {}

    @router.websocket(EVENTS_PATH)
    async def sdk_events(websocket: WebSocket, engine: EngineDep, token: str | None = None) -> None:
        faults: FaultState = websocket.app.state.faults
        if faults.current().refuse_event_channels:
            log.info("fault: an event channel refused")
            await websocket.send_denial_response(
                Response(
                    b'{"detail":"The event channel is unreachable (simulated)"}',
                    status_code=503,
                    media_type="application/json",
                )
            )
            return
        session = engine.live_session_by_token(token)
        if session is None:
            await websocket.send_denial_response(
                Response(
                    b'{"detail":"Session not found"}',
                    status_code=404,
                    media_type="application/json",
                )
            )
            return
        # Counted before the handshake completes, so a client that sees the socket open
        # can rely on being a viewer already.
        viewer = session.add_viewer()
        try:
            await websocket.accept()
            await _run_channel(websocket, viewer)
        finally:
            session.remove_viewer(viewer)

    @router.get(SDK_PATH, response_class=Response)
    async def web_sdk() -> Response:
        return Response(
            resource("sim", "web-sdk.js").read_bytes(),
            media_type="text/javascript",
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"},
        )

    return router


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


# -- /_sim -----------------------------------------------------------------------------------


class KillRequest(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(max_length=500)] = "killed by the simulator"


class KillAnswer(pydantic.BaseModel):
    session_id: str
    end_reason: str


def apply_faults(engine: Engine, state: FaultState, faults: FaultConfig) -> None:
    state.set(faults)
    log.info("faults set: %s", faults.model_dump(exclude_defaults=True) or "none")
    if faults.drop_event_channels:
        dropped = engine.drop_event_channels()
        log.info("fault: dropped %d event channel(s)", dropped)
    told = engine.set_media(faults.video_fault, faults.audio_fault)
    if told:
        log.info(
            "fault: media video=%s audio=%s told to %d viewer(s)",
            faults.video_fault,
            faults.audio_fault,
            told,
        )


def sim_router() -> APIRouter:
    router = APIRouter(
        prefix="/_sim",
        tags=["simulator controls"],
        dependencies=[Depends(require_control_key)],
        responses=_errors(401),
    )

    @router.get("/state")
    async def sim_state(engine: EngineDep) -> dict[str, Any]:
        return engine.snapshot()

    @router.get("/faults")
    async def sim_get_faults(faults: FaultsDep) -> FaultConfig:
        return faults.current()

    @router.put("/faults")
    async def sim_put_faults(
        engine: EngineDep, faults: FaultsDep, body: FaultConfig
    ) -> FaultConfig:
        apply_faults(engine, faults, body)
        return faults.current()

    @router.post("/sessions/{session_id}/kill", responses=_errors(404))
    async def sim_kill(
        session: LiveSession, body: Annotated[KillRequest | None, Body()] = None
    ) -> KillAnswer:
        session.end("killed", (body or KillRequest()).reason)
        return KillAnswer(session_id=session.id, end_reason="killed")

    return router
