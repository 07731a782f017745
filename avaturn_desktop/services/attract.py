"""Kiosk mode's attract screen and opening hours, for one avatar slot (Qt-free).

A kiosk that nobody uses still burns quota while its avatar waits. After
``kiosk.attract_after_min`` minutes without a trigger, :class:`AttractMode` ends the session
and shows the attract screen on the stage (a line of text, an image); the supervisor stands
down meanwhile. A trigger starts a session again: a line to say (``say``, a cue's GO, Ask:
anything the speech queue takes), a touch or a key on the stage (the view reports it), or a
session started by hand. A line that is spoken, or waits to be, counts as use: the avatar is
never cut off mid-show.

Outside ``kiosk.opening_hours`` the kiosk is closed: no session, the closed text on the
stage, triggers ignored (a session started by hand is the staff's business and is left
alone). At opening time the supervisor starts a session again.

Time: the idle count runs on a monotonic clock, the opening hours on the local wall clock;
both, and the sleep, are injected so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import enum
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from avaturn_desktop.core.kiosk import MAX_ATTRACT_IMAGE_BYTES, KioskSettings
from avaturn_desktop.core.queue import ChangeKind, ItemState, QueueChange, QueueItem
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot

log = logging.getLogger("avaturn.attract")

_CLOSED: Final = "closed: outside the opening hours"
#: The longest the loop sleeps between two looks at the clock (the settings may change).
MAX_NAP_S: Final = 30.0
_IMAGE_TYPES: Final = {"image/png", "image/jpeg", "image/webp", "image/gif", "image/svg+xml"}


class AttractState(enum.StrEnum):
    OFF = "off"  # not started
    LIVE = "live"  # open: sessions run (or are being started)
    ATTRACT = "attract"  # the attract screen shows; no session
    CLOSED = "closed"  # outside the opening hours; no session


class SessionPort(Protocol):
    @property
    def snapshot(self) -> SessionSnapshot: ...

    def subscribe(self, listener: Callable[[SessionSnapshot], None]) -> Callable[[], None]: ...

    async def terminate(self, reason: EndReason = EndReason.BY_USER) -> None: ...


class SupervisorPort(Protocol):
    def pause(self, reason: str = "paused") -> None: ...

    def resume(self) -> None: ...


class QueuePort(Protocol):
    @property
    def items(self) -> Sequence[QueueItem]: ...

    def subscribe(self, listener: Callable[[QueueChange], None]) -> Callable[[], None]: ...


class NoticePort(Protocol):
    def info(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...


#: Shows the screen (its text, its image as a ``data:`` URL) or, given None, takes it away.
Display = Callable[[tuple[str, str | None] | None], Awaitable[None]]


class AttractMode:
    """See the module docs. Start with :meth:`start` (before the supervisor's first start)."""

    def __init__(
        self,
        *,
        session: SessionPort,
        supervisor: SupervisorPort,
        queue: QueuePort,
        display: Display,
        settings: Callable[[], KioskSettings],
        notices: NoticePort,
        now: Callable[[], dt.datetime] = dt.datetime.now,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session = session
        self._supervisor = supervisor
        self._queue = queue
        self._display = display
        self._settings = settings
        self._notices = notices
        self._now = now
        self._clock = clock
        self._sleep = sleep
        self.state = AttractState.OFF
        self._last_use = clock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._woken = False  # a trigger came while the attract screen showed
        self._staff = False  # closed, and a session started by hand runs
        #: How many times the screen was shown and left, by why (for /state and tests).
        self.shown = 0
        self.woken = 0

    # -- reading ---------------------------------------------------------------------------

    def idle_s(self) -> float:
        """Seconds since the last trigger or the last sign of use."""
        return max(0.0, self._clock() - self._last_use)

    def as_dict(self) -> dict[str, Any]:
        """``/state``'s ``attract``."""
        settings = self._settings()
        after = settings.attract_after_min * 60
        return {
            "state": self.state.value,
            "idle_s": round(self.idle_s(), 1),
            "attract_in_s": (
                round(max(0.0, after - self.idle_s()), 1)
                if after and self.state is AttractState.LIVE
                else None
            ),
            "open": settings.hours().is_open(self._now()),
            "shown": self.shown,
        }

    # -- switching it on and off -----------------------------------------------------------

    def start(self) -> None:
        """Watch from now on. Closed now: the supervisor stands down before it starts a
        session (call this before ``Supervisor.start``)."""
        if self._task is not None:
            return
        self.state = AttractState.LIVE
        self._last_use = self._clock()
        if not self._settings().hours().is_open(self._now()):
            self._supervisor.pause(_CLOSED)
        self._unsubscribe = [
            self._queue.subscribe(self._on_queue),
            self._session.subscribe(self._on_session),
        ]
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        self._unsubscribe = []
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state = AttractState.OFF

    # -- triggers ----------------------------------------------------------------------------

    def trigger(self, source: str) -> None:
        """Someone wants the avatar (``source``: "touch", "key", "line", ...)."""
        self._last_use = self._clock()
        if self.state is AttractState.ATTRACT:
            log.info("Attract screen: woken by a %s", source)
            self._woken = True
            self._wake.set()

    def _on_queue(self, change: QueueChange) -> None:
        if change.kind is ChangeKind.ADDED:
            self.trigger("line")
        elif self._busy():
            self._last_use = self._clock()

    def _on_session(self, snap: SessionSnapshot) -> None:
        if self.state in (AttractState.ATTRACT, AttractState.CLOSED):
            self._wake.set()  # a session started (or ended) by hand: look again now

    def _busy(self) -> bool:
        """Lines are spoken or wait to be: the kiosk is in use."""
        return any(
            item.state in (ItemState.WAITING, ItemState.SENDING, ItemState.SENT, ItemState.SPEAKING)
            for item in self._queue.items
        )

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                nap = await self._step()
            except Exception:  # a bug must not end the kiosk's watch: log, look again later
                log.exception("The attract screen's watch failed")
                nap = MAX_NAP_S
            if self._wake.is_set():
                continue  # something happened while it acted: look again at once
            sleeper = asyncio.ensure_future(self._sleep(nap))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, waker):
                    task.cancel()
                await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def _step(self) -> float:
        """Act on what the clocks say now; returns how long to sleep before looking again."""
        settings = self._settings()
        hours = settings.hours()
        now = self._now()
        busy = self._session.snapshot.state.busy
        if not hours.is_open(now):
            if self.state is not AttractState.CLOSED:
                await self._enter(AttractState.CLOSED, settings.closed_text, None)
            elif busy and not self._staff:
                # closed, and a session started by hand: the staff's, left alone
                self._staff = True
                await self._show(None)
            elif not busy and self._staff:
                self._staff = False
                self._supervisor.pause(_CLOSED)  # it may want to start another: not now
                await self._show((settings.closed_text, None))
        elif self.state is AttractState.CLOSED:
            await self._leave("opening time")
        elif self.state is AttractState.ATTRACT and (self._woken or busy):
            await self._leave("a trigger" if self._woken else "a session started by hand")
        elif self.state is AttractState.LIVE and settings.attract_after_min > 0:
            if self._busy():
                self._last_use = self._clock()
            elif self.idle_s() >= settings.attract_after_min * 60:
                image = _image_data_url(settings.attract_image, self._notices)
                await self._enter(AttractState.ATTRACT, settings.attract_text, image)
        naps = [MAX_NAP_S]
        if self.state is AttractState.LIVE and settings.attract_after_min > 0:
            naps.append(settings.attract_after_min * 60 - self.idle_s())
        change = hours.next_change(now, within=dt.timedelta(seconds=MAX_NAP_S))
        if change is not None:
            naps.append((change - now).total_seconds())
        return max(0.05, min(naps))

    async def _enter(self, state: AttractState, text: str, image: str | None) -> None:
        why = (
            _CLOSED
            if state is AttractState.CLOSED
            else f"attract screen: no trigger for {self._settings().attract_after_min:g} min"
        )
        log.info("Kiosk: %s", why)
        self._supervisor.pause(why)
        self.state = state
        self._woken = False
        self._staff = False
        if state is AttractState.ATTRACT:
            self.shown += 1
        if self._session.snapshot.state.busy:
            await self._session.terminate(
                EndReason.CLOSED if state is AttractState.CLOSED else EndReason.ATTRACT
            )
            # a start cut short ends as cancelled by hand, which stands the supervisor down
            # with its own words: the reason is this one
            self._supervisor.pause(why)
        await self._show((text, image))

    async def _leave(self, why: str) -> None:
        if self.state is AttractState.LIVE:
            return
        log.info("Kiosk: the avatar comes back (%s)", why)
        was = self.state
        self.state = AttractState.LIVE
        self._woken = False
        self._staff = False
        self._last_use = self._clock()
        if was is AttractState.ATTRACT:
            self.woken += 1
        await self._show(None)
        self._supervisor.resume()

    async def _show(self, screen: tuple[str, str | None] | None) -> None:
        try:
            await self._display(screen)
        except Exception as exc:  # the page may be reloading: it is shown again once ready
            log.warning(
                "The attract screen could not be %s: %s", "shown" if screen else "hidden", exc
            )


def _image_data_url(path: str | None, notices: NoticePort) -> str | None:
    """The attract image as a ``data:`` URL (None when there is none, or it cannot be used)."""
    if not path:
        return None
    file = Path(path).expanduser()
    kind = mimetypes.guess_type(file.name)[0]
    if kind not in _IMAGE_TYPES:
        notices.warning(
            f"The attract image {file.name} is not a PNG, JPEG, WebP, GIF or SVG file; "
            "the attract screen shows its text only."
        )
        return None
    try:
        size = file.stat().st_size
        if size > MAX_ATTRACT_IMAGE_BYTES:
            notices.warning(
                f"The attract image {file.name} is {size / 1e6:.1f} MB; at most "
                f"{MAX_ATTRACT_IMAGE_BYTES / 1e6:.0f} MB is shown. The text shows alone."
            )
            return None
        data = file.read_bytes()
    except OSError as exc:
        notices.warning(
            f"The attract image {file.name} could not be read ({exc.strerror}); "
            "the attract screen shows its text only."
        )
        return None
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
