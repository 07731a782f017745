"""The control API's routes: the app's second door, for programs (Qt-free).

The contract is ``control-api.md``: its names are relied on by tools outside the repo, so they
stay exactly as written there. Every route only translates a request into a call on the
:class:`~avaturn_desktop.services.runtime.Runtime` and renders what comes back; the rules of
what a line is and when it may be sent live in the services, the same for the window.

Rules for every call: ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (else 401); a
``Host`` that is not the address listened on is refused with 403 (DNS rebinding); no CORS
headers; errors are ``{"detail": "a sentence"}``: 409 when the state does not allow the action,
422 for bad input, never a 500 for bad input.
"""

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from avaturn_desktop import __version__
from avaturn_desktop.control import show
from avaturn_desktop.core.errors import AppError, ConfigError, NotFoundError
from avaturn_desktop.core.queue import QueueItem
from avaturn_desktop.services.cues import NoCueError
from avaturn_desktop.services.outputs import NoWindowError
from avaturn_desktop.services.runtime import (
    AvatarSlot,
    NoSuchSlotError,
    Runtime,
    SlotQuotaError,
)
from avaturn_desktop.services.session import SessionBusyError
from avaturn_desktop.services.speech_queue import NotLiveError, QueueRefusedError

log = logging.getLogger("avaturn.control")

PREFIX = "/api/v1"


class ApiProblem(Exception):
    """An answer other than 2xx, with a sentence a person can act on."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def problem_for(exc: AppError) -> ApiProblem:
    """The status an :class:`AppError` deserves at this door."""
    if isinstance(
        exc,
        SessionBusyError
        | QueueRefusedError
        | NotLiveError
        | NoCueError
        | NoWindowError
        | SlotQuotaError,
    ):
        return ApiProblem(409, exc.user_message)
    if isinstance(exc, NotFoundError | NoSuchSlotError):
        return ApiProblem(404, exc.user_message)
    if isinstance(exc, ConfigError):
        return ApiProblem(422, exc.user_message)
    status = getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 500:
        return ApiProblem(422 if status in (400, 422) else 409, exc.user_message)
    return ApiProblem(502, exc.user_message)


# -- bodies ----------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SayBody(_Body):
    text: str
    now: bool = False


class AskBody(_Body):
    text: str


class VoiceBody(_Body):
    voice_id: Annotated[str, Field(min_length=1, max_length=200)]


class SessionStartBody(_Body):
    avatar_id: str | None = None
    voice_id: str | None = None
    background: str | None = None
    render_model: str | None = None
    user_absent_timeout: int | None = None
    max_duration: int | None = None

    def overrides(self) -> dict[str, Any]:
        fields = self.model_dump(exclude_none=True)
        if "render_model" in fields:
            fields["model"] = fields.pop("render_model")
        return fields


def item_json(item: QueueItem) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": item.item_id,
        "text": item.text,
        "state": item.state.value,
        "reason": item.reason,
    }
    if item.question_id is not None:
        out["question_id"] = item.question_id
    if item.set_aside:
        out["set_aside"] = True
    return out


def answer_json(answer: Any) -> dict[str, Any]:
    return {
        "question_id": answer.question_id,
        "question": answer.question,
        "state": answer.state.value,
        "sentences": list(answer.sentences),
        "reason": answer.reason,
    }


# -- guards ----------------------------------------------------------------------------------


class Guard:
    """ASGI middleware in front of every call, HTTP and WebSocket alike.

    A ``Host`` that is not one of ``allowed`` gets 403 (DNS rebinding); then a call without
    the token (``Authorization: Bearer`` or ``?token=``) gets 401.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed: Callable[[], frozenset[str]],
        token: Callable[[], str],
    ) -> None:
        self.app = app
        self._allowed = allowed
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        host = connection.headers.get("host", "").strip().lower()
        if host not in self._allowed():
            await _deny(scope, receive, send, 403, _FOREIGN_HOST)
            return
        given = bearer_or_query(connection.headers, connection.query_params)
        if given is None or not hmac.compare_digest(given.encode(), self._token().encode()):
            await _deny(scope, receive, send, 401, _NO_TOKEN)
            return
        await self.app(scope, receive, send)


_FOREIGN_HOST = "This address is not the one the control API listens on."
_NO_TOKEN = (
    "The control API needs its token: send 'Authorization: Bearer TOKEN' or '?token=TOKEN' "
    "(the token is in Settings, or in the control-token file)."
)


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if scope["type"] == "websocket":
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def bearer_or_query(headers: Any, query: Any) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    token = query.get("token")
    return token if isinstance(token, str) else None


# -- the app -----------------------------------------------------------------------------------


def create_app(
    runtime: Runtime,
    *,
    token: Callable[[], str],
    allowed_hosts: Callable[[], frozenset[str]],
    events: "EventHub",
) -> FastAPI:
    """The control API over ``runtime``; ``token`` and ``allowed_hosts`` are read per call."""

    async def slot_of(slot: Annotated[int, Query(ge=0, le=63)] = 0) -> AvatarSlot:
        # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hop there and
        # back on every call (and the runtime is the loop's alone)
        try:
            return runtime.slot(slot)
        except NoSuchSlotError as exc:
            raise ApiProblem(404, exc.user_message) from None

    async def new_or_slot(slot: Annotated[int, Query(ge=0, le=63)] = 0) -> AvatarSlot:
        """``session/start`` may name a slot that does not exist yet: it is made (within the
        quota; past it, 409). ``async``: FastAPI runs a plain ``def`` dependency in a worker
        thread, and a slot's page (Qt widgets) must be made on the GUI thread."""
        try:
            return runtime.ensure_slot(slot)
        except NoSuchSlotError as exc:
            raise ApiProblem(404, exc.user_message) from None
        except SlotQuotaError as exc:
            raise ApiProblem(409, exc.user_message) from None

    app = FastAPI(
        title="Avaturn Desktop control API",
        version=__version__,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    app.add_middleware(Guard, allowed=allowed_hosts, token=token)

    @app.exception_handler(ApiProblem)
    async def _problem(_request: Request, exc: ApiProblem) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_sentence(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "The request was refused."
        if exc.status_code == 404:
            detail = "There is no such call; the calls are listed at /api/v1/openapi.json."
        elif exc.status_code == 405:
            detail = "This call does not take that method; see /api/v1/openapi.json."
        return JSONResponse({"detail": detail}, status_code=exc.status_code)

    api = APIRouter(prefix=PREFIX)
    Slot = Annotated[AvatarSlot, Depends(slot_of)]

    async def doing(call: Awaitable[Any] | Callable[[], Any]) -> Any:
        try:
            if callable(call):
                return call()
            return await call
        except AppError as exc:
            raise problem_for(exc) from None

    @api.get("/state")
    async def state(slot: Slot) -> dict[str, Any]:
        return runtime.state(slot.index)

    @api.get("/state/{path:path}", response_class=PlainTextResponse)
    async def state_field(path: str, slot: Slot) -> PlainTextResponse:
        value: Any = runtime.state(slot.index)
        for part in path.strip("/").split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                raise ApiProblem(404, f"The state has no field {path!r}.")
        return PlainTextResponse(plain(value))

    @api.get("/health")
    async def health() -> dict[str, Any]:
        import time

        states = [s.controller.state.value for s in runtime.slots]
        return {
            "ok": True,
            "uptime_s": round(time.time() - runtime.started_at, 1),
            "sessions": states,
        }

    @api.post("/session/start", status_code=202)
    async def session_start(
        slot: Annotated[AvatarSlot, Depends(new_or_slot)],
        body: Annotated[SessionStartBody | None, Body()] = None,
    ) -> dict[str, Any]:
        overrides = body.overrides() if body is not None else {}
        defaults = await doing(lambda: slot.session_request(overrides))
        await doing(lambda: slot.start_session(defaults))
        return {"session": runtime.state(slot.index)["session"]}

    @api.post("/session/end", status_code=202)
    async def session_end(slot: Slot) -> dict[str, Any]:
        await doing(slot.end_session)
        return {"session": runtime.state(slot.index)["session"]}

    @api.post("/say")
    async def say(body: SayBody, slot: Slot) -> dict[str, Any]:
        if body.now:
            batch = await doing(slot.speaker.speak_now(body.text))
        else:
            batch = await doing(lambda: slot.speaker.say(body.text))
        return {"items": [{"id": i.item_id, "text": i.text} for i in batch.items]}

    @api.post("/ask")
    async def ask(body: AskBody, slot: Slot) -> dict[str, Any]:
        answer = await doing(slot.ask(body.text))
        return answer_json(answer)

    @api.get("/ask/{question_id}")
    async def answer(question_id: str, slot: Slot) -> dict[str, Any]:
        found = slot.answers.answer(question_id)
        if found is None:
            raise ApiProblem(404, f"There is no question {question_id!r} in this app's memory.")
        return answer_json(found)

    @api.post("/stop")
    async def stop(slot: Slot) -> dict[str, Any]:
        await doing(slot.queue.stop())
        return {"stopped": True, "queue": runtime.state(slot.index)["queue"]}

    @api.post("/resume")
    async def resume(slot: Slot) -> dict[str, Any]:
        slot.queue.resume()
        return {"queue": runtime.state(slot.index)["queue"]}

    @api.post("/voice")
    async def voice(body: VoiceBody, slot: Slot) -> dict[str, Any]:
        await doing(slot.queue.change_voice(body.voice_id))
        return {"voice_id": slot.queue.voice_id}

    @api.get("/queue")
    async def queue(slot: Slot) -> dict[str, Any]:
        return {"items": [item_json(i) for i in slot.queue.items]}

    @api.delete("/queue/{item_id}")
    async def remove(item_id: int, slot: Slot) -> dict[str, Any]:
        item = slot.queue.item(item_id)
        if item is None:
            raise ApiProblem(404, f"There is no item {item_id} in the queue.")
        if not slot.queue.remove(item_id):
            raise ApiProblem(
                409, f"Item {item_id} is {item.state.value}: only a waiting item can be removed."
            )
        return {"removed": item_id}

    @api.post("/queue/unfinished")
    async def say_unfinished(slot: Slot) -> dict[str, Any]:
        """Say again what the last session that died did not finish (the window's one click)."""
        items = await doing(lambda: slot.queue.say_unfinished_again())
        return {"items": [item_json(i) for i in items]}

    @api.get("/log")
    async def task_log(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        session: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        from avaturn_desktop.services.export import record_json

        ids = runtime.store.row_ids(session_id=session)
        newest = list(reversed(ids[-limit:]))
        rows = runtime.store.get_many(newest)
        who = runtime.store.slots_by_session()
        return {"rows": [_with_slot(record_json(r), who.get(r.session_id)) for r in rows]}

    # -- the show: cues and outputs (control/show.py) --------------------------------------

    @api.get("/cues")
    async def cues(slot: Slot) -> dict[str, Any]:
        return await show.list_cues(slot, None)

    @api.post("/cues/load")
    async def cues_load(body: show.LoadBody, slot: Slot) -> dict[str, Any]:
        return await doing(show.load(slot, body))

    @api.post("/cues/go")
    async def cues_go(
        slot: Slot, body: Annotated[show.GoBody | None, Body()] = None
    ) -> dict[str, Any]:
        return await doing(show.go(slot, body))

    @api.post("/cues/back")
    async def cues_back(slot: Slot) -> dict[str, Any]:
        return await doing(show.back(slot, None))

    @api.post("/cues/skip")
    async def cues_skip(slot: Slot) -> dict[str, Any]:
        return await doing(show.skip(slot, None))

    @api.post("/cues/standby")
    async def cues_standby(body: show.StandbyBody, slot: Slot) -> dict[str, Any]:
        return await doing(show.standby(slot, body))

    @api.put("/cues/{index}")
    async def cues_edit(
        index: Annotated[int, Path(ge=0, le=1_000_000)], body: show.EditBody, slot: Slot
    ) -> dict[str, Any]:
        return await doing(show.edit(slot, index, body))

    @api.post("/cues/save")
    async def cues_save(
        slot: Slot, body: Annotated[show.SaveBody | None, Body()] = None
    ) -> dict[str, Any]:
        return await doing(show.save(slot, body))

    @api.post("/cues/reload")
    async def cues_reload(slot: Slot) -> dict[str, Any]:
        return await doing(show.reload(slot, None))

    @api.get("/output")
    async def output(slot: Slot) -> dict[str, Any]:
        return await show.output(slot, None)

    @api.post("/output/audience")
    async def output_audience(
        slot: Slot, body: Annotated[show.AudienceBody | None, Body()] = None
    ) -> dict[str, Any]:
        return await doing(show.audience(slot, body))

    @api.post("/output/captions")
    async def output_captions(
        slot: Slot, body: Annotated[show.CaptionsBody | None, Body()] = None
    ) -> dict[str, Any]:
        return await doing(show.captions(slot, body))

    @api.post("/output/background")
    async def output_background(body: show.BackgroundBody, slot: Slot) -> dict[str, Any]:
        return await doing(show.background(slot, body))

    app.include_router(api)
    from avaturn_desktop.control.bench_routes import bench_router

    app.include_router(bench_router(runtime, doing=doing), prefix=PREFIX)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        body, content_type = runtime.metrics().render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @app.websocket(f"{PREFIX}/events")
    async def events_socket(ws: WebSocket) -> None:
        await ws.accept()
        await events.serve(ws, lambda op, args: run_op(runtime, op, args))

    return app


def _with_slot(row: dict[str, Any], who: tuple[int | None, str] | None) -> dict[str, Any]:
    """A log row with the slot and avatar that said it (from its session's record)."""
    slot, avatar = who if who is not None else (None, None)
    return {**row, "slot": slot, "avatar_id": avatar}


def plain(value: Any) -> str:
    """A state field as plain text (Companion puts it straight into a variable)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def validation_sentence(errors: Any) -> str:
    """FastAPI's validation errors as one sentence (no input echoed: it may be huge)."""
    try:
        first = next(iter(errors))
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc)
        msg = str(first.get("msg", "is not valid"))
    except (StopIteration, TypeError, AttributeError):
        return "The request is not valid."
    if first.get("type") == "json_invalid":
        return "The body is not valid JSON."
    return f"{where}: {msg}." if where else f"The request is not valid: {msg}."


# -- WebSocket operations ---------------------------------------------------------------------

OPS = (
    "say",
    "stop",
    "resume",
    "voice",
    "session.start",
    "session.end",
    "queue.remove",
    "state",
    "queue",
    *show.OP_NAMES,
)


async def run_op(runtime: Runtime, op: str, args: dict[str, Any]) -> Any:
    """A command by name, as the HTTP routes run it; raises :class:`ApiProblem`."""
    try:
        index = int(args.pop("slot", 0))
        # a session may be started on a slot that does not exist yet (within the quota)
        slot = runtime.ensure_slot(index) if op == "session.start" else runtime.slot(index)
    except (TypeError, ValueError):
        raise ApiProblem(422, "slot: must be a number.") from None
    except NoSuchSlotError as exc:
        raise ApiProblem(404, exc.user_message) from None
    except SlotQuotaError as exc:
        raise ApiProblem(409, exc.user_message) from None
    try:
        if op == "say":
            body = SayBody.model_validate(args)
            batch = (
                await slot.speaker.speak_now(body.text) if body.now else slot.speaker.say(body.text)
            )
            return {"items": [{"id": i.item_id, "text": i.text} for i in batch.items]}
        if op == "ask":
            return answer_json(await slot.ask(AskBody.model_validate(args).text))
        if op == "stop":
            await slot.queue.stop()
            return {"stopped": True}
        if op == "resume":
            slot.queue.resume()
            return {}
        if op == "voice":
            voice = VoiceBody.model_validate(args)
            await slot.queue.change_voice(voice.voice_id)
            return {"voice_id": slot.queue.voice_id}
        if op == "session.start":
            start = SessionStartBody.model_validate(args)
            slot.start_session(slot.session_request(start.overrides()))
            return {"session": runtime.state(slot.index)["session"]}
        if op == "session.end":
            slot.end_session()
            return {}
        if op == "queue.remove":
            item_id = int(args.get("id", -1))
            if not slot.queue.remove(item_id):
                raise ApiProblem(409, f"Item {item_id} is not a waiting item of the queue.")
            return {"removed": item_id}
        if op == "state":
            return runtime.state(slot.index)
        if op == "queue":
            return {"items": [item_json(i) for i in slot.queue.items]}
        if op in show.OP_NAMES:
            return await show.run_op(slot, op, args)
    except AppError as exc:
        raise problem_for(exc) from None
    except ValueError as exc:  # pydantic's ValidationError is one
        errors = getattr(exc, "errors", None)
        raise ApiProblem(422, validation_sentence(errors() if errors else [])) from None
    raise ApiProblem(404, f"There is no operation {op!r}; try one of: {', '.join(OPS)}.")


class EventHub:
    """The WebSocket clients of ``/api/v1/events``, and what they are sent.

    Each client first gets ``{"type": "state", ...}``; another follows on every change of the
    state (gathered to one per loop turn; the clocks alone do not count as a change); item
    changes come as ``{"type": "item", ...}``.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._clients: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._last_state: dict[str, Any] | None = None
        self._pending = False
        self._unsubscribe: list[Callable[[], None]] = []

    def watch(self) -> None:
        """Listen to every slot, and to the slots added later."""
        for slot in self._runtime.slots:
            self._watch_slot(slot)
        self._unsubscribe.append(self._runtime.subscribe_slots(self._watch_slot))

    def _watch_slot(self, slot: AvatarSlot) -> None:
        self._unsubscribe.append(slot.controller.subscribe(lambda _s: self.state_changed()))
        self._unsubscribe.append(slot.queue.subscribe(self._queue_changed))
        self._unsubscribe.append(slot.cues.subscribe(self.state_changed))
        self._unsubscribe.append(slot.outputs.subscribe(lambda _what: self.state_changed()))
        if slot.supervisor is not None:
            self._unsubscribe.append(slot.supervisor.subscribe(lambda _s: self.state_changed()))

    def _queue_changed(self, change: Any) -> None:
        if change.item is not None:
            self._broadcast({"type": "item", "item": item_json(change.item)})
        self.state_changed()

    def state_changed(self) -> None:
        if self._pending or not self._clients:
            return
        self._pending = True
        asyncio.get_event_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._pending = False
        state = self._runtime.state()
        key = _without_clocks(state)
        if key == self._last_state:
            return
        self._last_state = key
        self._broadcast({"type": "state", "state": state})

    def _broadcast(self, message: dict[str, Any]) -> None:
        for queue in list(self._clients):
            if queue.qsize() > 1000:  # a client that does not read: drop it
                queue.put_nowait(None)
                self._clients.discard(queue)
            else:
                queue.put_nowait(message)

    async def serve(
        self, ws: WebSocket, run: Callable[[str, dict[str, Any]], Awaitable[Any]]
    ) -> None:
        outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._clients.add(outbox)
        outbox.put_nowait({"type": "state", "state": self._runtime.state()})
        sender = asyncio.ensure_future(self._send_loop(ws, outbox))
        try:
            while True:
                try:
                    raw = await ws.receive_text()
                except (WebSocketDisconnect, RuntimeError):
                    break
                outbox.put_nowait(await self._answer(raw, run))
        finally:
            self._clients.discard(outbox)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _answer(
        self, raw: str, run: Callable[[str, dict[str, Any]], Awaitable[Any]]
    ) -> dict[str, Any]:
        try:
            message = json.loads(raw, parse_constant=_no_constant)
        except ValueError:
            return {"id": None, "ok": False, "error": "The message is not valid JSON."}
        if not isinstance(message, dict):
            return {"id": None, "ok": False, "error": "A message is a JSON object with 'op'."}
        request_id = message.get("id")
        if not isinstance(request_id, str | int | None) or isinstance(request_id, bool):
            request_id = None
        op = message.get("op")
        args = message.get("args") or {}
        if not isinstance(op, str) or not isinstance(args, dict):
            return {
                "id": request_id,
                "ok": False,
                "error": "A message needs 'op' (a name) and 'args' (an object).",
            }
        try:
            result = await run(op, dict(args))
        except ApiProblem as exc:
            return {"id": request_id, "ok": False, "error": exc.detail}
        except Exception:
            log.exception("Control API operation %r failed", op)
            return {
                "id": request_id,
                "ok": False,
                "error": "The app could not do that; see its log.",
            }
        return {"id": request_id, "ok": True, "result": result}

    async def _send_loop(self, ws: WebSocket, outbox: asyncio.Queue[dict[str, Any] | None]) -> None:
        while (message := await outbox.get()) is not None:
            try:
                await ws.send_text(json.dumps(message, ensure_ascii=False))
            except Exception:
                return
        await ws.close()

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for queue in list(self._clients):
            queue.put_nowait(None)
        self._clients.clear()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _without_clocks(state: dict[str, Any]) -> dict[str, Any]:
    session = {k: v for k, v in state["session"].items() if k not in ("elapsed_s", "time_left_s")}
    return {**state, "session": session}


__all__ = ["EventHub", "create_app"]
