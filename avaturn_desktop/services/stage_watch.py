"""What the stage page's watchdog reports, acted on for one avatar slot (Qt-free).

The page (``resources/web/watchdog.js``) sends a heartbeat every few seconds and says when the
live avatar's picture goes black or freezes, or its voice falls silent while it speaks
(:class:`~avaturn_desktop.core.events.StageProblem`). The app's own view says when the page's
process died. :class:`StageWatch` turns these into:

* the heartbeat's age (``/metrics``, ``/state``), fed to the supervisor when there is one;
* a notice a person sees (the status bar) and the log: what is wrong, and when it is over;
  and a notice when the heartbeats stop (a page that hangs cannot say so itself);
* in kiosk mode, a recovery: the supervisor ends the session, reloads the page and starts a
  new one (:meth:`Supervisor.heartbeat_stopped`, :meth:`Supervisor.page_crashed`). A problem
  found while no session is live, or in the window's own mode, is only shown.

Counts by kind (``problems``, ``crashes``) feed ``avaturn_stage_problems_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from avaturn_desktop.core.events import Heartbeat, StageProblem, StageProblemKind
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState

log = logging.getLogger("avaturn.stage")

#: What the audience would notice, in a person's words.
PROBLEM_WORDS: Final[dict[str, str]] = {
    "black": "The avatar's picture went black",
    "frozen": "The avatar's picture froze",
    "silent": "The avatar is speaking but cannot be heard",
}
CLEARED_WORDS: Final[dict[str, str]] = {
    "black": "The avatar's picture is back.",
    "frozen": "The avatar's picture moves again.",
    "silent": "The avatar can be heard again.",
}


class NoticePort(Protocol):
    def info(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...


class SessionPort(Protocol):
    @property
    def snapshot(self) -> SessionSnapshot: ...


class RecoveryPort(Protocol):
    """The supervisor, as far as the watch drives it."""

    def heartbeat(self) -> None: ...

    def heartbeat_stopped(self, detail: str | None = None) -> None: ...

    def page_crashed(self, detail: str | None = None) -> None: ...


class StageWatch:
    """See the module docs. ``supervisor`` is asked for each time (kiosk mode makes one)."""

    def __init__(
        self,
        notices: NoticePort,
        session: SessionPort,
        supervisor: Callable[[], RecoveryPort | None],
        *,
        heartbeat_timeout_s: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._notices = notices
        self._session = session
        self._supervisor = supervisor
        self._timeout = heartbeat_timeout_s
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None
        self._last_beat: Heartbeat | None = None
        self._stale_said = False
        #: The problems the page reports now (cleared ones leave).
        self.current: dict[str, str] = {}
        self.problems: Counter[str] = Counter()
        self.crashes = 0
        self._task: asyncio.Task[None] | None = None
        #: Stopped for good (the app is closing): a late heartbeat starts nothing.
        self._closed = False

    # -- reading ---------------------------------------------------------------------------

    def heartbeat_age(self) -> float | None:
        """Seconds since the page's last heartbeat (None before the first)."""
        return None if self._last is None else max(0.0, self._clock() - self._last)

    def state(self) -> dict[str, Any]:
        """This watch's part of ``/state`` (under ``stage``)."""
        age = self.heartbeat_age()
        beat = self._last_beat
        return {
            "heartbeat_age_s": None if age is None else round(age, 3),
            #: the page's last word: a live avatar is checked; the page is shown
            "watching": beat is not None and beat.watching,
            "visible": beat is not None and beat.visible,
            "problems": sorted(self.current),
            "problems_seen": dict(sorted(self.problems.items())),
            "crashes": self.crashes,
        }

    # -- what the page says ----------------------------------------------------------------

    def handle_page_event(self, event: object) -> None:
        match event:
            case Heartbeat():
                self._beat(event)
            case StageProblem(problem=problem, cleared=False, detail=detail):
                self._problem(problem, detail)
            case StageProblem(problem=problem, cleared=True):
                self._cleared(problem)

    def _beat(self, beat: Heartbeat) -> None:
        self._last = self._clock()
        self.start()
        self._last_beat = beat
        supervisor = self._supervisor()
        if supervisor is not None:
            supervisor.heartbeat()
        if self._stale_said:
            self._stale_said = False
            self._notices.info("The avatar page answers again.")
        # the page's own list wins: an avatar that went took its problems with it
        for problem in [p for p in self.current if p not in beat.problems]:
            del self.current[problem]

    def _problem(self, problem: StageProblemKind, detail: str) -> None:
        if problem in self.current:
            return
        self.current[problem] = detail
        self.problems[problem] += 1
        words = PROBLEM_WORDS[problem]
        supervisor = self._supervisor()
        live = self._session.snapshot.state is SessionState.LIVE
        if supervisor is not None and live:
            self._notices.warning(f"{words}: starting a new session.")
            supervisor.heartbeat_stopped(f"the stage watchdog: {detail or words.lower()}")
        else:
            self._notices.warning(f"{words} ({detail}).")

    def _cleared(self, problem: StageProblemKind) -> None:
        if self.current.pop(problem, None) is not None:
            self._notices.info(CLEARED_WORDS[problem])

    def page_crashed(self, detail: str) -> None:
        """The app's view says the page's process died (never the page itself)."""
        self.crashes += 1
        self.current.clear()
        self._last = None  # the next page's first heartbeat starts the count again
        supervisor = self._supervisor()
        if supervisor is not None:
            supervisor.page_crashed(detail)
        log.warning("Stage: %s", detail)

    # -- heartbeats that stop --------------------------------------------------------------

    def start(self) -> None:
        """Watch for heartbeats that stop (until :meth:`stop`); started by the first heartbeat
        that arrives while the event loop runs."""
        if self._closed or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop running (a bare test): the next heartbeat tries again
        self._task = loop.create_task(self._watch(), name="stage-heartbeat-watch")

    async def stop(self) -> None:
        """Stop watching for good (a heartbeat that arrives later starts nothing)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            timeout = self._timeout()
            await self._sleep(timeout / 2)
            age = self.heartbeat_age()
            beat = self._last_beat
            if age is None or beat is None or self._stale_said:
                continue
            # a hidden page's timers run slow: its heartbeats are not due so often
            if age > timeout and beat.visible:
                self._stale_said = True
                self._notices.warning(
                    f"The avatar page has not answered for {age:.0f} s"
                    + (": it is reloaded." if self._supervisor() is not None else ".")
                )
