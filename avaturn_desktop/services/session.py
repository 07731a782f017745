"""The session controller: the one owner of the session lifecycle state machine.

Idle → Creating → Connecting → Live → Terminating → Ended (reason) / Failed (reason).
Every panel renders the controller's snapshot; none keeps its own copy. Qt-free: the page is
reached through the :class:`StagePort` protocol, which the ui layer implements over the bridge.

The page's word is not enough to end a session. Script in the page (the third-party SDK, or
anything it loads) can say anything the page can, so an event claiming the session is over
(``sdk_error`` with an ending code, ``disposed``) is checked with the service first, through the
SDK's own session lookup with the session's token:

- the service no longer has the session: it ends here, with the reason the page gave (the
  simulator's ``session_terminated`` or ``reason``, the service's ``session_lifecycle_error``);
- the service still has it: an error is logged and ignored; a page whose SDK says it lost its
  avatar (``disposed``) gets it back, reconnected to the same session, and the session ends as
  "connection to the avatar lost" only if that fails;
- the service cannot be asked: the same, as if it still had it.

``idle`` (the SDK's five quiet minutes, which end the session when keep-alive is off) is
believed only after five minutes without a speech event, when the SDK's own timer would fire.
:class:`~avaturn_desktop.core.events.PageGone` (the page's process died, said by the app's own
stage facade, not by the page) ends the session as "connection to the avatar lost".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from avaturn_desktop.core.errors import ApiError, AppError, NotFoundError
from avaturn_desktop.core.events import (
    AvatarEndedSpeaking,
    AvatarEndedSpeakingPhrase,
    AvatarStartedSpeaking,
    AvatarStartedSpeakingPhrase,
    Disposed,
    Idle,
    PageGone,
    SdkError,
)
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
#: How long the service is given to say whether it still has a session the page says is over.
PROBE_TIMEOUT_S = 5.0
#: The SDK disposes itself after this long with no task and no message from the service.
SDK_IDLE_S = 300.0
#: Clock slack when judging whether an ``idle`` event can be the SDK's own.
IDLE_SLACK_S = 10.0
#: Statuses of the session lookup that mean the service no longer has the session (or its
#: token): the session is over.
_GONE_STATUSES = frozenset({401, 403, 404, 410})

#: Why a session ended, from the words the page passes on: the simulator's end reasons and
#: error codes, and the service's own end reasons (see the API notes). Reasons win over codes.
_END_WORDS: dict[str, EndReason] = {
    "terminated": EndReason.SERVER,
    "session_terminated": EndReason.SERVER,
    "session_ended": EndReason.SERVER,
    "termination_command_received": EndReason.SERVER,
    "killed": EndReason.SERVER,
    "agent_left": EndReason.SERVER,
    "user_absent_timeout": EndReason.USER_ABSENT,
    "max_duration": EndReason.MAX_DURATION,
    "max_duration_reached": EndReason.MAX_DURATION,
    # the simulator's code for its max duration; the service's for a workspace over its limits
    # (its message, shown with it, says which)
    "limits_exceeded": EndReason.MAX_DURATION,
    "idle": EndReason.SDK_IDLE,
}
#: The ``kind`` of a service error about the session's life (the session may be over).
_LIFECYCLE_ERROR = "session_lifecycle_error"


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

    async def get_sdk_session(self, token: str) -> Any: ...


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
        #: The check of a page's claim that the session is over, while it runs.
        self._checking: asyncio.Task[None] | None = None
        #: When the page last reported speech (the SDK's idle timer restarts on it).
        self._last_activity: float | None = None

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

    async def end_remotely(
        self, reason: EndReason, detail: str | None = None, *, delete: bool | None = None
    ) -> None:
        """The session ended elsewhere (max duration, the service, the page): tidy up.

        ``delete`` (by default: unless the max duration ended it) also ends it on the service,
        in case the service still holds it.
        """
        if self._snap.state not in (SessionState.LIVE, SessionState.CONNECTING):
            return
        if self._snap.state is SessionState.CONNECTING:
            self.cancel()
            return
        self._stop_watchdog()
        self._set(SessionState.TERMINATING, reason=reason.value)
        with contextlib.suppress(AppError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stage.dispose(), TERMINATE_TIMEOUT_S / 2)
        if delete is None:
            delete = reason is not EndReason.MAX_DURATION
        if delete and self._snap.session_id:
            # The service may still hold it (e.g. the page died): end it so it burns no quota.
            with contextlib.suppress(AppError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._client.terminate_session(self._snap.session_id), TERMINATE_TIMEOUT_S
                )
        self._finish(SessionState.ENDED, reason, detail=detail)

    def handle_page_event(self, event: Any) -> None:
        """Events from the page (typed ``core.events`` models) that bear on the lifecycle.

        None of them ends the session by itself (see the module docs).
        """
        if self._snap.state is not SessionState.LIVE:
            return
        match event:
            case (
                AvatarStartedSpeaking()
                | AvatarEndedSpeaking()
                | AvatarStartedSpeakingPhrase()
                | AvatarEndedSpeakingPhrase()
            ):
                self._last_activity = self._clock()
            case Idle() if not self.keep_alive:
                quiet_since = max(
                    t for t in (self._snap.live_at, self._last_activity, 0.0) if t is not None
                )
                if self._clock() - quiet_since >= SDK_IDLE_S - IDLE_SLACK_S:
                    self._spawn(self.end_remotely(EndReason.SDK_IDLE))
                else:
                    log.warning(
                        "The avatar page reported idle %.0f s after the last speech; the SDK "
                        "waits %.0f s: ignored",
                        self._clock() - quiet_since,
                        SDK_IDLE_S,
                    )
            case SdkError(code=code, message=message, reason=reason, kind=kind):
                said = _end_reason(reason, code)
                if said is None and kind == _LIFECYCLE_ERROR:
                    said = EndReason.SERVER
                if said is None:
                    log.warning("Avatar page reported an error: %s", message or code)
                    return
                self._check_claim(said, message or code, avatar_gone=False)
            case PageGone(reason=reason):
                # The app's own word, not the page's: the page died with the avatar in it.
                self._spawn(self.end_remotely(EndReason.CONNECTION_LOST, reason))
            case Disposed(reason=None):
                pass  # the answer to a dispose the app asked for
            case Disposed(reason=reason):
                said = _end_reason(reason, None) or EndReason.CONNECTION_LOST
                self._check_claim(said, reason, avatar_gone=True)

    def _check_claim(self, said: EndReason, detail: str | None, *, avatar_gone: bool) -> None:
        if self._checking is not None and not self._checking.done():
            log.debug("Page claim %s while another is checked: ignored", said.value)
            return
        self._checking = self._spawn(self._settle_claim(said, detail, avatar_gone=avatar_gone))

    async def _settle_claim(
        self, said: EndReason, detail: str | None, *, avatar_gone: bool
    ) -> None:
        """Ask the service whether the session the page calls over is over, and act on that."""
        session_id, token = self._snap.session_id, self._token
        if session_id is None or token is None:
            return
        held = await self._service_holds(token)

        def still_ours() -> bool:
            return self._snap.state is SessionState.LIVE and self._snap.session_id == session_id

        if not still_ours():
            return
        if held is False:
            log.info("Session %s: the service confirms it is over (%s)", session_id, said.value)
            self._stop_watchdog()
            await self.end_remotely(said, detail, delete=said is not EndReason.MAX_DURATION)
            return
        doubt = "still has it" if held else "could not be asked"
        if not avatar_gone:
            log.warning(
                "The avatar page says session %s ended (%s), but the service %s: ignored",
                session_id,
                detail or said.value,
                doubt,
            )
            return
        log.warning(
            "The avatar page lost its avatar (%s); the service %s: reconnecting",
            detail or said.value,
            doubt,
        )
        with contextlib.suppress(AppError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stage.dispose(), TERMINATE_TIMEOUT_S / 2)
        try:
            if not still_ours():
                return
            await self._stage.connect(
                token,
                api_host=self._api_host,
                sdk_url=self._sdk_url,
                timeout_s=self.init_timeout_s,
                keep_alive=self.keep_alive,
            )
        except AppError as exc:
            if still_ours():
                await self.end_remotely(
                    EndReason.CONNECTION_LOST, f"{detail or said.value}; {exc.user_message}"
                )
            return
        log.info("Session %s: the avatar is back", session_id)

    async def _service_holds(self, token: str) -> bool | None:
        """True if the service still has the session, False if not, None if it cannot tell."""
        try:
            await asyncio.wait_for(self._client.get_sdk_session(token), PROBE_TIMEOUT_S)
        except ApiError as exc:
            return False if exc.status in _GONE_STATUSES else None
        except (AppError, TimeoutError):
            return None
        return True

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


def _end_reason(*words: str | None) -> EndReason | None:
    """The first of ``words`` that names why a session ended, as an :class:`EndReason`."""
    for word in words:
        if word and (reason := _END_WORDS.get(word.strip().lower())) is not None:
            return reason
    return None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Session task failed", exc_info=task.exception())
