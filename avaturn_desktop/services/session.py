"""The session controller: the one owner of the session lifecycle state machine.

Idle → Creating → Connecting → Live → Terminating → Ended (reason) / Failed (reason).
Every panel renders the controller's snapshot; none keeps its own copy. Qt-free: the page is
reached through the :class:`StagePort` protocol, which the ui layer implements over the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from avaturn_desktop.core.errors import AppError, NotFoundError
from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.core.session_state import (
    TRANSITIONS,
    EndReason,
    SessionSnapshot,
    SessionState,
)
from avaturn_desktop.core.tasks import SessionRecord

log = logging.getLogger("avaturn.session")

#: How long ending a session may take before the app gives up waiting (it still ends by itself).
TERMINATE_TIMEOUT_S = 10.0
#: Grace after max_duration before the controller declares the session over on its own.
MAX_DURATION_GRACE_S = 2.0


class SessionBusyError(AppError):
    """A start was asked for while a session is being made, is live, or is ending."""


class StagePort(Protocol):
    """The avatar page, as the controller sees it (implemented by ``ui.web.stage.Stage``)."""

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool
    ) -> str: ...

    async def dispose(self) -> None: ...


class ClientPort(Protocol):
    async def create_session(self, request: SessionCreate | None = None) -> Any: ...

    async def terminate_session(self, session_id: str) -> None: ...


class SessionRegistry(Protocol):
    """Where created sessions are remembered, so a crash does not leave them burning quota."""

    def record_session(self, record: SessionRecord) -> None: ...

    def end_session(self, session_id: str, reason: str, *, at: float | None = None) -> None: ...


Listener = Callable[[SessionSnapshot], None]


class SessionController:
    def __init__(
        self,
        client: ClientPort,
        stage: StagePort,
        *,
        api_host: str,
        sdk_url: str,
        registry: SessionRegistry | None = None,
        init_timeout_s: float = 30.0,
        keep_alive: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._stage = stage
        self._api_host = api_host
        self._sdk_url = sdk_url
        self._registry = registry
        self.init_timeout_s = init_timeout_s
        self.keep_alive = keep_alive
        self._clock = clock
        self._sleep = sleep
        self._snap = SessionSnapshot()
        self._listeners: list[Listener] = []
        self._token: str | None = None
        self._start_task: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- reading -----------------------------------------------------------------------------

    @property
    def snapshot(self) -> SessionSnapshot:
        return self._snap

    @property
    def state(self) -> SessionState:
        return self._snap.state

    @property
    def session_id(self) -> str | None:
        return self._snap.session_id

    @property
    def token(self) -> str | None:
        """The live session's viewer token (for the SDK's private calls); never logged."""
        return self._token if self._snap.state is SessionState.LIVE else None

    @property
    def backend(self) -> str:
        return self._api_host

    def retarget(self, api_host: str, sdk_url: str) -> None:
        """Make the next sessions on another backend (only while none is under way)."""
        if self._snap.state.busy:
            raise SessionBusyError("End the session before switching the backend.")
        self._api_host = api_host
        self._sdk_url = sdk_url

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every new snapshot; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- the state machine -------------------------------------------------------------------

    def _set(self, state: SessionState, **changes: Any) -> None:
        old = self._snap.state
        if state is not old and state not in TRANSITIONS[old]:
            raise RuntimeError(f"illegal session transition {old} -> {state}")
        self._snap = dataclasses.replace(
            self._snap, state=state, history=(*self._snap.history, state), **changes
        )
        log.info(
            "Session %s: %s%s",
            self._snap.session_id or "-",
            state,
            f" ({self._snap.reason})" if self._snap.reason else "",
        )
        for listener in list(self._listeners):
            listener(self._snap)

    async def start(self, request: SessionCreate) -> bool:
        """Create a session and bring the avatar live. True when it went live.

        Refuses a second start while one is under way or live. Failures end in FAILED with
        the reason; a session created on the service but never brought live is ended there.
        """
        if self._snap.state.busy:
            raise SessionBusyError(
                f"A session is already {self._snap.state.value}; end it before starting another."
            )
        self._start_task = asyncio.current_task()
        self._cancel_requested = False
        self._token = None
        self._snap = SessionSnapshot(history=self._snap.history)
        voice = request.voice_id
        self._set(SessionState.CREATING, request=request, voice_id=voice)
        try:
            created = await self._client.create_session(request)
            self._token = created.token
            now = self._clock()
            if self._registry is not None:
                self._registry.record_session(
                    SessionRecord(
                        session_id=created.session_id,
                        backend=self._api_host,
                        avatar_id=request.avatar_id,
                        voice_id=voice,
                        created_at=now,
                        max_duration=request.max_duration,
                    )
                )
            self._set(SessionState.CONNECTING, session_id=created.session_id, created_at=now)
            await self._stage.connect(
                created.token,
                api_host=self._api_host,
                sdk_url=self._sdk_url,
                timeout_s=self.init_timeout_s,
                keep_alive=self.keep_alive,
            )
            self._set(SessionState.LIVE, live_at=self._clock())
            self._watchdog = self._spawn(self._watch_max_duration())
            return True
        except asyncio.CancelledError:
            if not self._cancel_requested:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._discard(EndReason.CANCELLED)
            self._finish(SessionState.ENDED, EndReason.CANCELLED)
            return False
        except AppError as exc:
            log.warning("Session start failed: %s", exc.user_message)
            await self._discard(EndReason.SERVER)
            self._finish(SessionState.FAILED, "could not start", detail=exc.user_message)
            return False
        finally:
            self._start_task = None
            self._cancel_requested = False

    def cancel(self) -> bool:
        """Stop a start under way (Creating or Connecting). True when there was one."""
        if self._start_task is None or self._start_task.done():
            return False
        self._cancel_requested = True
        self._start_task.cancel()
        return True

    async def terminate(self, reason: EndReason = EndReason.BY_USER) -> None:
        """End the session: leave the page, DELETE it on the service, remember it ended."""
        state = self._snap.state
        if state in (SessionState.CREATING, SessionState.CONNECTING):
            task = self._start_task
            if self.cancel() and task is not None:
                await asyncio.wait({task})
            return
        if state is not SessionState.LIVE:
            return
        self._stop_watchdog()
        self._set(SessionState.TERMINATING, reason=reason.value)
        with contextlib.suppress(AppError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stage.dispose(), TERMINATE_TIMEOUT_S / 2)
        session_id = self._snap.session_id
        assert session_id is not None
        try:
            await asyncio.wait_for(self._client.terminate_session(session_id), TERMINATE_TIMEOUT_S)
        except NotFoundError:
            log.info("Session %s had already ended on the service", session_id)
        except (TimeoutError, AppError) as exc:
            detail = exc.user_message if isinstance(exc, AppError) else "no answer in time"
            timeout = self._snap.request.user_absent_timeout if self._snap.request else 60
            self._finish(
                SessionState.FAILED,
                "could not end the session on the service",
                detail=f"{detail}. With nobody watching it ends by itself within {timeout} s.",
                registry=False,
            )
            return
        self._finish(SessionState.ENDED, reason)

    async def end_remotely(self, reason: EndReason, detail: str | None = None) -> None:
        """The session ended elsewhere (max duration, the service, the page): tidy up."""
        if self._snap.state not in (SessionState.LIVE, SessionState.CONNECTING):
            return
        if self._snap.state is SessionState.CONNECTING:
            self.cancel()
            return
        self._stop_watchdog()
        self._set(SessionState.TERMINATING, reason=reason.value)
        with contextlib.suppress(AppError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stage.dispose(), TERMINATE_TIMEOUT_S / 2)
        if reason is not EndReason.MAX_DURATION and self._snap.session_id:
            # The service may still hold it (e.g. the page died): end it so it burns no quota.
            with contextlib.suppress(AppError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._client.terminate_session(self._snap.session_id), TERMINATE_TIMEOUT_S
                )
        self._finish(SessionState.ENDED, reason, detail=detail)

    def handle_page_event(self, event: Any) -> None:
        """Events from the page (typed ``core.events`` models) that bear on the lifecycle."""
        kind = getattr(event, "type", None)
        if self._snap.state is not SessionState.LIVE:
            return
        if kind == "idle" and not self.keep_alive:
            self._spawn(self.end_remotely(EndReason.SDK_IDLE))
        elif kind == "sdk_error":
            code = getattr(event, "code", "")
            message = getattr(event, "message", "") or code
            if code == "limits_exceeded":
                self._spawn(self.end_remotely(EndReason.MAX_DURATION, message))
            elif code in ("session_ended", "user_absent_timeout"):
                reason = (
                    EndReason.USER_ABSENT if code == "user_absent_timeout" else EndReason.SERVER
                )
                self._spawn(self.end_remotely(reason, message))
            else:
                log.warning("Avatar page reported an error: %s", message)
        elif kind == "disposed":
            reason_text = getattr(event, "reason", None)
            self._spawn(self.end_remotely(EndReason.CONNECTION_LOST, reason_text))

    async def shutdown(self) -> None:
        """On quit: end a live session (or a start under way), then stop every own task."""
        if self._snap.state.busy:
            try:
                await asyncio.wait_for(self.terminate(EndReason.APP_QUIT), TERMINATE_TIMEOUT_S + 2)
            except TimeoutError:
                log.warning("Ending the session on quit took too long")
        self._stop_watchdog()
        # An ending already under way (e.g. the page died first) must reach the service: let
        # it finish, within the same bound, before anything left is cancelled.
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=TERMINATE_TIMEOUT_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- helpers -----------------------------------------------------------------------------

    def _finish(
        self,
        state: SessionState,
        reason: EndReason | str,
        *,
        detail: str | None = None,
        registry: bool = True,
    ) -> None:
        reason_text = reason.value if isinstance(reason, EndReason) else reason
        now = self._clock()
        session_id = self._snap.session_id
        if registry and session_id and self._registry is not None:
            try:
                self._registry.end_session(session_id, reason_text, at=now)
            except Exception:  # the registry is a record, not a gate: log and go on
                log.exception("Could not record the end of session %s", session_id)
        self._token = None
        self._set(state, reason=reason_text, detail=detail, ended_at=now)

    async def _discard(self, reason: EndReason) -> None:
        """After a failed or cancelled start: leave the page and end what the service made."""
        with contextlib.suppress(AppError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stage.dispose(), TERMINATE_TIMEOUT_S / 2)
        session_id = self._snap.session_id
        if session_id is None:
            return
        try:
            await asyncio.wait_for(self._client.terminate_session(session_id), TERMINATE_TIMEOUT_S)
        except NotFoundError:
            pass
        except (TimeoutError, AppError):
            log.warning("Could not end session %s after %s", session_id, reason.value)

    async def _watch_max_duration(self) -> None:
        snap = self._snap
        if snap.created_at is None or snap.max_duration is None:
            return
        delay = snap.created_at + snap.max_duration + MAX_DURATION_GRACE_S - self._clock()
        await self._sleep(max(0.0, delay))
        if self._snap.state is SessionState.LIVE and self._snap.session_id == snap.session_id:
            self._watchdog = None
            await self.end_remotely(EndReason.MAX_DURATION)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Session task failed", exc_info=task.exception())
