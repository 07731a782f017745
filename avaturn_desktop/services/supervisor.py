"""The kiosk's supervisor: a live avatar at launch and again after every ending (Qt-free).

A kiosk runs for weeks with nobody at the keyboard, and sessions end all the time: nobody
watching, the maximum duration, the service, the network, a crashed page. The supervisor sits
on top of the session controller (it never owns a session itself: it only calls ``start``,
``cancel`` and ``end_remotely``, the same calls the window makes) and starts a session at launch
and after every ending:

* **Backoff.** The first try after a session that ran well comes after ``first_s``; every
  ending that follows without a session staying live ``stable_after_s`` doubles the wait, up to
  ``cap_s``. Each wait is drawn from ``[d·(1 − jitter), d]``, so a fleet of kiosks behind one
  account does not come back in step. A session that stays live ``stable_after_s`` resets it.
* **Quota.** When the service refuses for quota (a 429 on create that the client did not wait
  out, or the page's ``limits_exceeded`` before the avatar went live) the next try waits
  ``quota_pause_s``: trying again sooner cannot help and would only hammer the service.
  ``limits_exceeded`` on a live session is its maximum duration (as the controller reads it, and
  as the simulator sends it): that is an ordinary ending. Should it really be the quota, the
  next start fails for quota and the long pause follows then.
* **Hangs.** A start still creating or connecting after ``connect_timeout_s`` is cancelled (the
  controller ends what the service made) and counted as ``connect_timeout``.
* **The page.** The page side calls :meth:`Supervisor.page_crashed` (the renderer died) or
  :meth:`Supervisor.heartbeat_stopped` (its watchdog saw the stage go black, freeze or fall
  silent); the live session is ended and a new one started, after ``recover_page`` (e.g. a
  reload) when one is given. :meth:`Supervisor.heartbeat` records the page's heartbeats; with
  ``heartbeat_timeout_s`` set, their absence on a live session is a ``heartbeat_lost`` too
  (a frozen renderer cannot say that it froze).
* **People first.** A session ended or cancelled by a person (or by quitting) is not started
  again: the supervisor stands down until a session is started by hand or :meth:`resume` is
  called. :meth:`pause` stands it down on purpose (an attract screen, closing hours).

Its state (:class:`SupervisorState`) counts restarts in total and by reason (the values of
:class:`RestartReason`, stable for metrics), says the last reason and when the next try comes;
``/state`` shows it under ``supervisor`` (:meth:`SupervisorState.as_dict`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Protocol

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState

log = logging.getLogger("avaturn.supervisor")

#: On stop, how long an ending the supervisor asked for may still take to reach the service.
STOP_TIMEOUT_S: Final = 12.0

#: Words in a failed start's detail that mean "the service refused for quota": the client's
#: message for a 429 it did not wait out, and the page's ``limits_exceeded`` code.
_QUOTA_MARKERS: Final = ("(429)", "limits_exceeded")
#: The controller's reason for a start that failed.
_START_FAILED: Final = "could not start"


class RestartReason(StrEnum):
    """Why the supervisor started a session again (label values of the restart metrics)."""

    MAX_DURATION = "max_duration"
    USER_ABSENT = "user_absent"
    SDK_IDLE = "sdk_idle"
    ENDED_BY_SERVICE = "ended_by_service"
    CONNECTION_LOST = "connection_lost"
    START_FAILED = "start_failed"
    QUOTA = "quota"
    CONNECT_TIMEOUT = "connect_timeout"
    PAGE_CRASHED = "page_crashed"
    HEARTBEAT_LOST = "heartbeat_lost"
    OTHER = "other"


_BY_END_REASON: Final[Mapping[str, RestartReason]] = {
    EndReason.MAX_DURATION.value: RestartReason.MAX_DURATION,
    EndReason.USER_ABSENT.value: RestartReason.USER_ABSENT,
    EndReason.SDK_IDLE.value: RestartReason.SDK_IDLE,
    EndReason.SERVER.value: RestartReason.ENDED_BY_SERVICE,
    EndReason.CONNECTION_LOST.value: RestartReason.CONNECTION_LOST,
}
#: Endings a person (or quitting) asked for: the supervisor stands down.
_BY_HAND: Final[Mapping[str, str]] = {
    EndReason.BY_USER.value: "the session was ended by hand",
    EndReason.APP_QUIT.value: "the app is closing",
    EndReason.CANCELLED.value: "the start was cancelled by hand",
}


class SupervisorStatus(StrEnum):
    OFF = "off"  # not started, or stopped
    STARTING = "starting"  # a session is being created or connected
    WATCHING = "watching"  # a session is live (or ending), or nothing to do
    WAITING = "waiting"  # the next try is scheduled
    PAUSED = "paused"  # stood down: by hand, or :meth:`Supervisor.pause`


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    """How long the supervisor waits, and for what (seconds; see the module docs)."""

    first_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 60.0
    jitter: float = 0.5
    quota_pause_s: float = 900.0
    stable_after_s: float = 60.0
    connect_timeout_s: float = 90.0
    #: A live session with no page heartbeat for this long is recovered (``None``: off).
    heartbeat_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.first_s <= 0 or self.factor < 1 or self.cap_s < self.first_s:
            raise ValueError("backoff needs 0 < first_s <= cap_s and factor >= 1")
        if self.quota_pause_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("quota_pause_s and connect_timeout_s must be positive")

    def nominal(self, failures: int, *, quota: bool = False) -> float:
        """The wait before a try after ``failures`` endings in a row (1 or more), unjittered."""
        if quota:
            return self.quota_pause_s
        exponent = max(0, failures - 1)
        # min() first on the exponent: 2.0 ** 10_000 overflows a float
        return min(self.cap_s, self.first_s * self.factor ** min(exponent, 64))

    def delay(self, failures: int, rng: random.Random, *, quota: bool = False) -> float:
        return self.nominal(failures, quota=quota) * (1.0 - self.jitter * rng.random())


class SupervisedSession(Protocol):
    """The session controller, as the supervisor drives it."""

    @property
    def snapshot(self) -> SessionSnapshot: ...

    def subscribe(self, listener: Callable[[SessionSnapshot], None]) -> Callable[[], None]: ...

    async def start(self, request: SessionCreate) -> bool: ...

    def cancel(self) -> bool: ...

    async def end_remotely(self, reason: EndReason, detail: str | None = None) -> None: ...


@dataclasses.dataclass(frozen=True)
class SupervisorState:
    """What the supervisor has done and will do; replaced, never mutated."""

    status: SupervisorStatus = SupervisorStatus.OFF
    restarts: int = 0
    restarts_by_reason: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    last_reason: RestartReason | None = None
    #: The last ending in words (the service's or the page's message, when there was one).
    last_detail: str | None = None
    next_try_in_s: float | None = None
    #: Endings since a session last stayed live ``stable_after_s`` (drives the backoff).
    failures_in_a_row: int = 0
    paused_reason: str | None = None
    heartbeat_age_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``/state`` shows under ``supervisor``."""
        return {
            "status": self.status.value,
            "restarts": self.restarts,
            "restarts_by_reason": dict(self.restarts_by_reason),
            "last_reason": None if self.last_reason is None else self.last_reason.value,
            "last_detail": self.last_detail,
            "next_try_in_s": (None if self.next_try_in_s is None else round(self.next_try_in_s, 3)),
            "failures_in_a_row": self.failures_in_a_row,
            "paused_reason": self.paused_reason,
            "heartbeat_age_s": (
                None if self.heartbeat_age_s is None else round(self.heartbeat_age_s, 3)
            ),
        }


StateListener = Callable[[SupervisorState], None]


class Supervisor:
    """See the module docs. All methods run on the event loop's thread."""

    def __init__(
        self,
        controller: SupervisedSession,
        request: Callable[[], SessionCreate],
        *,
        policy: BackoffPolicy | None = None,
        recover_page: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._controller = controller
        self._request = request
        self.policy = policy or BackoffPolicy()
        self._recover_page = recover_page
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._listeners: list[StateListener] = []
        self._running = False
        self._paused: str | None = None
        self._restarts: Counter[RestartReason] = Counter()
        self._last_reason: RestartReason | None = None
        self._last_detail: str | None = None
        self._failures = 0
        self._next_at: float | None = None
        self._next_reason: RestartReason | None = None
        #: A cause the supervisor set itself before ending the session (hang, crash, ...).
        self._cause: tuple[RestartReason, str] | None = None
        self._quota_seen = False
        self._page_needs_recovery = False
        self._own_start = False
        self._live_since: float | None = None
        self._last_heartbeat: float | None = None
        self._timer: asyncio.Task[None] | None = None
        self._connect_watch: asyncio.Task[None] | None = None
        self._heartbeat_watch: asyncio.Task[None] | None = None
        #: Counts the starts seen (CREATING), so a watch knows it still watches its own.
        self._generation = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Endings the supervisor asked for: on stop they finish, they are not cut short.
        self._endings: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> SupervisorState:
        now = self._clock()
        return SupervisorState(
            status=self._status(),
            restarts=self._restarts.total(),
            restarts_by_reason=MappingProxyType(
                {reason.value: count for reason, count in sorted(self._restarts.items())}
            ),
            last_reason=self._last_reason,
            last_detail=self._last_detail,
            next_try_in_s=None if self._next_at is None else max(0.0, self._next_at - now),
            failures_in_a_row=self._failures,
            paused_reason=self._paused,
            heartbeat_age_s=self.heartbeat_age(),
        )

    def heartbeat_age(self) -> float | None:
        """Seconds since the page's last heartbeat (``None`` before the first)."""
        if self._last_heartbeat is None:
            return None
        return max(0.0, self._clock() - self._last_heartbeat)

    def subscribe(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener`` whenever the state changes (not as the countdown runs down)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _status(self) -> SupervisorStatus:
        if not self._running:
            return SupervisorStatus.OFF
        if self._paused is not None:
            return SupervisorStatus.PAUSED
        if self._next_at is not None:
            return SupervisorStatus.WAITING
        state = self._controller.snapshot.state
        if state in (SessionState.CREATING, SessionState.CONNECTING):
            return SupervisorStatus.STARTING
        return SupervisorStatus.WATCHING

    # -- switching it on and off -----------------------------------------------------------

    def start(self) -> None:
        """Begin supervising: start a session now unless one is under way or live."""
        if self._running:
            return
        self._running = True
        self._unsubscribe = self._controller.subscribe(self._on_session)
        snap = self._controller.snapshot
        if snap.state.busy:
            self._on_session(snap)  # watch the one under way (its hang, its heartbeat)
        else:
            self._schedule(0.0, None)
        self._notify()

    async def stop(self) -> None:
        """Stop supervising (on quit, before the controller ends the session)."""
        if not self._running:
            return
        self._running = False
        if self._unsubscribe is not None:
            with contextlib.suppress(ValueError):
                self._unsubscribe()
            self._unsubscribe = None
        self._next_at = None
        self._next_reason = None
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        endings = [t for t in self._endings if t is not current]
        if endings:
            await asyncio.wait(endings, timeout=STOP_TIMEOUT_S)
        self._timer = self._connect_watch = self._heartbeat_watch = None
        self._notify()

    def pause(self, reason: str = "paused") -> None:
        """Stand down: no new session until :meth:`resume` (what is live stays live)."""
        self._stand_down(reason)

    def resume(self) -> None:
        """Supervise again after a pause or a stand-down; starts a session now if none is."""
        if not self._running or self._paused is None:
            return
        log.info("Supervisor resumes (was: %s)", self._paused)
        self._paused = None
        self._failures = 0
        if not self._controller.snapshot.state.busy:
            self._schedule(0.0, None)
        self._notify()

    # -- signals from the page ---------------------------------------------------------------

    def page_crashed(self, detail: str | None = None) -> None:
        """The avatar page's renderer died: end what it showed and start again."""
        self._recover(RestartReason.PAGE_CRASHED, detail or "the avatar page crashed")

    def heartbeat_stopped(self, detail: str | None = None) -> None:
        """The page's watchdog (or a missing heartbeat) says the audience sees or hears nothing."""
        self._recover(RestartReason.HEARTBEAT_LOST, detail or "the avatar page stopped answering")

    def heartbeat(self) -> None:
        """The page is alive and its stage plays (called for every heartbeat it sends)."""
        self._last_heartbeat = self._clock()

    def handle_page_event(self, event: object) -> None:
        """Page events that bear on restarts: ``limits_exceeded`` before the avatar is live."""
        if getattr(event, "type", None) != "sdk_error":
            return
        if getattr(event, "code", None) != "limits_exceeded":
            return
        if self._controller.snapshot.state in (SessionState.CREATING, SessionState.CONNECTING):
            self._quota_seen = True

    def _recover(self, reason: RestartReason, detail: str) -> None:
        if not self._running:
            return
        snap = self._controller.snapshot
        if reason is RestartReason.PAGE_CRASHED or reason is RestartReason.HEARTBEAT_LOST:
            self._page_needs_recovery = True
        log.warning("Supervisor: %s", detail)
        if snap.state is SessionState.LIVE:
            self._cause = (reason, detail)
            ending = asyncio.ensure_future(
                self._controller.end_remotely(EndReason.CONNECTION_LOST, detail)
            )
            self._endings.add(ending)
            ending.add_done_callback(self._endings.discard)
            ending.add_done_callback(_log_failure)
        elif snap.state in (SessionState.CREATING, SessionState.CONNECTING):
            self._cause = (reason, detail)
            if not self._controller.cancel():
                self._cause = None
        # Idle, ended or failed: nothing to end; the next start recovers the page first.

    # -- the session's life ----------------------------------------------------------------

    def _on_session(self, snap: SessionSnapshot) -> None:
        state = snap.state
        if state is SessionState.CREATING:
            if not self._own_start and self._paused is not None:
                log.info("A session was started by hand: the supervisor watches again")
                self._paused = None
                self._failures = 0
            self._cancel_timer()
            self._quota_seen = False
            self._cause = None
            self._generation += 1
            self._cancel(self._connect_watch)
            self._connect_watch = self._spawn(self._watch_connect(self._generation))
        elif state is SessionState.LIVE:
            self._cancel(self._connect_watch)
            self._connect_watch = None
            self._live_since = self._clock()
            if self.policy.heartbeat_timeout_s is not None:
                self._cancel(self._heartbeat_watch)
                self._heartbeat_watch = self._spawn(self._watch_heartbeat(self._live_since))
        elif state is SessionState.TERMINATING:
            self._cancel(self._heartbeat_watch)
            self._heartbeat_watch = None
        elif state in (SessionState.ENDED, SessionState.FAILED):
            for task in (self._connect_watch, self._heartbeat_watch):
                self._cancel(task)
            self._connect_watch = self._heartbeat_watch = None
            self._ended(snap)
        self._notify()

    def _ended(self, snap: SessionSnapshot) -> None:
        lived = None if self._live_since is None else self._clock() - self._live_since
        self._live_since = None
        reason, detail = self._classify(snap)
        if reason is None:
            self._stand_down(detail)
            return
        if not self._running or self._paused is not None:
            return
        if lived is not None and lived >= self.policy.stable_after_s:
            self._failures = 0
        self._failures += 1
        quota = reason is RestartReason.QUOTA
        delay = self.policy.delay(self._failures, self._rng, quota=quota)
        self._last_reason, self._last_detail = reason, detail
        (log.warning if quota else log.info)(
            "Session over (%s: %s); a new one in %.1f s", reason.value, detail, delay
        )
        self._schedule(delay, reason)

    def _classify(self, snap: SessionSnapshot) -> tuple[RestartReason | None, str]:
        """Why it ended, as a restart reason; ``None`` when a person ended it."""
        words = snap.detail or snap.reason or "ended"
        if self._cause is not None:
            (reason, detail), self._cause = self._cause, None
            return reason, detail
        quota_seen, self._quota_seen = self._quota_seen, False
        if snap.state is SessionState.FAILED:
            if snap.reason != _START_FAILED:
                # ending it on the service failed: only a person's or the app's own end does that
                return None, _BY_HAND[EndReason.BY_USER.value]
            quota = quota_seen or any(m in (snap.detail or "") for m in _QUOTA_MARKERS)
            return (RestartReason.QUOTA if quota else RestartReason.START_FAILED), words
        by_hand = _BY_HAND.get(snap.reason or "")
        if by_hand is not None:
            return None, by_hand
        if quota_seen:
            return RestartReason.QUOTA, words
        return _BY_END_REASON.get(snap.reason or "", RestartReason.OTHER), words

    def _stand_down(self, why: str) -> None:
        if self._paused == why:
            return
        log.info("Supervisor stands down: %s", why)
        self._paused = why
        self._cancel_timer()
        self._notify()

    # -- timers ----------------------------------------------------------------------------

    def _schedule(self, delay: float, reason: RestartReason | None) -> None:
        self._cancel_timer()
        # a try right now (launch, resume) is no wait to show
        self._next_at = self._clock() + delay if delay > 0 else None
        self._next_reason = reason
        self._timer = self._spawn(self._try_after(delay, reason))

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        self._next_at = None
        self._next_reason = None

    async def _try_after(self, delay: float, reason: RestartReason | None) -> None:
        if delay > 0:
            await self._sleep(delay)
        if self._timer is asyncio.current_task():
            self._timer = None
        self._next_at = None
        self._next_reason = None
        if not self._running or self._paused is not None:
            self._notify()
            return
        if self._controller.snapshot.state.busy:
            self._notify()  # a session was started meanwhile: watch it
            return
        if self._page_needs_recovery and self._recover_page is not None:
            try:
                await self._recover_page()
            except Exception:  # a failed reload is retried with the next try
                log.exception("Could not recover the avatar page")
                self._schedule(self.policy.delay(self._failures + 1, self._rng), reason)
                return
        self._page_needs_recovery = False
        try:
            request = self._request()
        except AppError as exc:  # the settings cannot make a session: retried, as a failure
            log.warning("Cannot start a session: %s", exc.user_message)
            self._failures += 1
            self._last_reason, self._last_detail = RestartReason.START_FAILED, exc.user_message
            self._schedule(self.policy.delay(self._failures, self._rng), reason)
            return
        if reason is not None:
            self._restarts[reason] += 1
        self._own_start = True
        try:
            await self._controller.start(request)
        except AppError as exc:  # e.g. started by hand a moment before: watch that one
            log.info("Supervisor's start refused: %s", exc.user_message)
        except Exception:  # a bug below: log it, and try again later rather than never
            log.exception("Starting a session failed unexpectedly")
            self._failures += 1
            self._schedule(self.policy.delay(self._failures, self._rng), RestartReason.OTHER)
        finally:
            self._own_start = False

    async def _watch_connect(self, generation: int) -> None:
        timeout = self.policy.connect_timeout_s
        await self._sleep(timeout)
        snap = self._controller.snapshot
        if generation != self._generation:
            return  # another start since: its own watch runs
        if snap.state in (SessionState.CREATING, SessionState.CONNECTING):
            detail = f"the avatar was not live {timeout:g} s after the start ({snap.state.value})"
            self._connect_watch = None
            self._cause = (RestartReason.CONNECT_TIMEOUT, detail)
            log.warning("Supervisor: %s; cancelling it", detail)
            if not self._controller.cancel():
                self._cause = None

    async def _watch_heartbeat(self, live_since: float) -> None:
        timeout = self.policy.heartbeat_timeout_s
        assert timeout is not None
        while True:
            last = self._last_heartbeat
            since = live_since if last is None or last < live_since else last
            wait = since + timeout - self._clock()
            if wait <= 0:
                break
            await self._sleep(wait)
        if self._controller.snapshot.state is SessionState.LIVE:
            self._heartbeat_watch = None
            self.heartbeat_stopped(f"no heartbeat from the avatar page for {timeout:g} s")

    # -- helpers ---------------------------------------------------------------------------

    def _notify(self) -> None:
        if not self._listeners:
            return
        state = self.state
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("A supervisor listener failed")

    def _cancel(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Supervisor task failed", exc_info=task.exception())
