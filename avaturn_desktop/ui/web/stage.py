"""An async facade over the bridge: what the session controller calls to drive the page.

Every method sends one command and awaits its answer (an asyncio future resolved from the
bridge's signal, so no nested event loop), with a timeout. The controller, which is Qt-free,
sees this through a Protocol of plain ``async def`` methods.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, Signal

from avaturn_desktop.core.errors import AppError, InvalidRequestError
from avaturn_desktop.core.events import (
    AttractCommand,
    AudioOutputCommand,
    CancelAllCommand,
    ChangeVoiceCommand,
    CommandResult,
    DisposeCommand,
    InitCommand,
    Inited,
    InitFailed,
    PageCommand,
    PageEvent,
    PageGone,
    SdkFailed,
    TaskCommand,
    WatchdogCommand,
)
from avaturn_desktop.ui.web.bridge import Bridge

log = logging.getLogger("avaturn.web")

#: Time for the page to answer a command (task, cancel, voice, dispose).
DEFAULT_COMMAND_TIMEOUT_S = 15.0
#: Extra time beyond ``timeout_s`` that ``connect`` gives the page (SDK import, page load).
CONNECT_MARGIN_S = 10.0
#: How long a reload of the page may take before :meth:`Stage.reload` gives up.
RELOAD_TIMEOUT_S = 30.0


class StageError(AppError):
    """The avatar page could not do what was asked (SDK not loaded, init failed, no answer)."""

    def __init__(self, user_message: str, *, timed_out: bool = False) -> None:
        super().__init__(user_message)
        self.timed_out = timed_out


class Stage(QObject):
    """Drives the avatar page: ``connect`` / ``task`` / ``cancel_all`` / ``change_voice`` /
    ``dispose``; every page event is re-emitted on ``event``."""

    # Shadows QObject.event() on purpose (the controller listens to ``stage.event``); PySide
    # still dispatches Qt events to the C++ implementation.
    event = Signal(object)  # type: ignore[assignment]
    """Every validated :data:`PageEvent` from the page (speech events, idle, errors, ...), and
    :class:`PageGone` when the page went away with a live avatar in it."""

    def __init__(
        self,
        bridge: Bridge,
        parent: QObject | None = None,
        *,
        allow_media_origins: Callable[[Iterable[str]], None] | None = None,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        reload_page: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._allow_media_origins = allow_media_origins
        self._command_timeout_s = command_timeout_s
        self._reload_page = reload_page
        self._refs = itertools.count(1)
        self._results: dict[int, asyncio.Future[CommandResult]] = {}
        self._init_waiter: asyncio.Future[PageEvent] | None = None
        self._connected = False
        #: What every page load is told again once it is ready: the watchdog's times, and the
        #: attract screen while it shows (a reloaded page starts with neither).
        self._watchdog: WatchdogCommand | None = None
        self._attract: AttractCommand | None = None
        bridge.event_received.connect(self._on_event)
        bridge.ready_changed.connect(self._on_ready_changed)

    # -- commands -------------------------------------------------------------------------------

    async def connect(  # type: ignore[override]  # not QObject.connect: the session's connect
        self,
        token: str,
        *,
        api_host: str,
        sdk_url: str,
        timeout_s: float,
        keep_alive: bool = True,
    ) -> str:
        """Load the SDK and bring the avatar live; returns the SDK's session id (may be "").

        ``timeout_s`` bounds ``init()`` in the page (and, separately, the SDK's import); the
        whole call gives up after ``2 * timeout_s + CONNECT_MARGIN_S``.
        """
        if self._init_waiter is not None and not self._init_waiter.done():
            raise StageError("The avatar is already connecting.")
        if self._allow_media_origins is not None:
            self._allow_media_origins([api_host, sdk_url])
        ref = next(self._refs)
        cmd = InitCommand(
            ref=ref,
            token=token,
            api_host=api_host,
            sdk_url=sdk_url,
            timeout_ms=max(1, math.ceil(timeout_s * 1000)),
            keep_alive=keep_alive,
        )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[PageEvent] = loop.create_future()
        refused: asyncio.Future[CommandResult] = loop.create_future()
        self._init_waiter = waiter
        self._results[ref] = refused
        try:
            self._bridge.send(cmd)
            pending: set[asyncio.Future[Any]] = {waiter, refused}
            done, _ = await asyncio.wait(
                pending,
                timeout=2 * timeout_s + CONNECT_MARGIN_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._results.pop(ref, None)
            if self._init_waiter is waiter:
                self._init_waiter = None
        # Look at every finished future (a reload fails both), then raise the first error.
        errors = [exc for fut in done if (exc := fut.exception()) is not None]
        if errors:
            raise errors[0]
        if refused in done:
            answer = refused.result()
            raise StageError(answer.error or "The avatar page refused to connect.")
        if waiter not in done:
            waiter.cancel()
            raise StageError("The avatar page did not answer in time.", timed_out=True)
        event = waiter.result()
        if isinstance(event, Inited):
            self._connected = True
            return event.session_id
        if isinstance(event, SdkFailed):
            raise StageError(f"The avatar software could not be loaded: {event.message}")
        if isinstance(event, InitFailed):
            if event.timed_out:
                raise StageError(
                    f"The avatar did not connect within {timeout_s:g} s.", timed_out=True
                )
            raise StageError(f"The avatar could not connect: {event.message}")
        raise StageError("The avatar page was reloaded while connecting.")

    async def task(self, text: str) -> str:
        """Queue ``text`` for speech; returns the SDK's task id."""
        answer = await self._call(TaskCommand(ref=next(self._refs), text=text), "send the text")
        data = answer.data
        if isinstance(data, str) and data:
            return data
        if isinstance(data, dict) and isinstance(data.get("task_id"), str):
            return str(data["task_id"])
        raise StageError("The avatar accepted the text but returned no task id.")

    async def cancel_all(self) -> None:
        await self._call(CancelAllCommand(ref=next(self._refs)), "stop speaking")

    async def change_voice(self, voice_id: str) -> None:
        await self._call(
            ChangeVoiceCommand(ref=next(self._refs), voice_id=voice_id), "change the voice"
        )

    def set_watchdog(self, config: WatchdogCommand | None) -> None:
        """Turn the page's watchdog on with these times, now and after every reload (None: it
        stays as it is until the next load, which starts without it)."""
        self._watchdog = config
        if config is not None and self._bridge.ready:
            self._bridge.send(config.model_copy(update={"ref": next(self._refs)}))

    async def attract(self, show: bool, text: str = "", image: str | None = None) -> None:
        """Show the attract screen (``text``, and ``image`` as a ``data:image/`` URL) over the
        stage, or take it away; a reloaded page shows it again."""
        cmd = AttractCommand(ref=next(self._refs), show=show, text=text, image=image)
        self._attract = cmd if show else None
        if not self._bridge.ready:
            return  # sent when the page is ready (see _on_ready_changed)
        await self._call(cmd, "show the attract screen" if show else "hide the attract screen")

    async def reload(self) -> None:
        """Load the page again and wait until it is ready (the supervisor's recovery of a page
        that hung or showed nothing). :class:`StageError` if it is not ready in time."""
        if self._reload_page is None:
            raise StageError("The avatar page cannot be reloaded from here.")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_ready(is_ready: bool) -> None:
            if is_ready and not ready.done():
                ready.set_result(None)

        self._bridge.ready_changed.connect(on_ready)
        try:
            self._reload_page()
            await asyncio.wait_for(ready, RELOAD_TIMEOUT_S)
        except TimeoutError:
            raise StageError(
                f"The avatar page was not ready {RELOAD_TIMEOUT_S:g} s after a reload.",
                timed_out=True,
            ) from None
        finally:
            self._bridge.ready_changed.disconnect(on_ready)

    async def audio_output(self, sink_id: str, volume: float, muted: bool) -> dict[str, Any]:
        """Where the page's sound goes (see ``resources/web/audio.js``); the answer lists the
        output devices the page sees and whether the device could be chosen."""
        cmd = AudioOutputCommand(ref=next(self._refs), sink_id=sink_id, volume=volume, muted=muted)
        answer = await self._call(cmd, "set the sound output")
        return answer.data if isinstance(answer.data, dict) else {}

    async def dispose(self) -> None:
        """Leave the avatar room and show the placeholder again (the session itself lives on)."""
        self._connected = False
        if not self._bridge.ready:
            return  # the page is gone, and its avatar with it: nothing to leave
        await self._call(DisposeCommand(ref=next(self._refs)), "close the avatar")

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(self, cmd: PageCommand, doing: str) -> CommandResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[CommandResult] = loop.create_future()
        self._results[cmd.ref] = fut
        try:
            self._bridge.send(cmd)
            answer = await asyncio.wait_for(fut, self._command_timeout_s)
        except TimeoutError:
            raise StageError(
                f"The avatar page did not answer in time (could not {doing}).", timed_out=True
            ) from None
        finally:
            self._results.pop(cmd.ref, None)
        if not answer.ok:
            raise _result_error(answer, doing)
        return answer

    def _on_event(self, event: PageEvent) -> None:
        if isinstance(event, CommandResult):
            fut = self._results.get(event.ref)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, Inited | InitFailed | SdkFailed):
            waiter = self._init_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        self.event.emit(event)

    def _on_ready_changed(self, ready: bool) -> None:
        if ready:
            for cmd in (self._watchdog, self._attract):
                if cmd is not None:  # fire and forget: a late answer finds no waiter
                    self._bridge.send(cmd.model_copy(update={"ref": next(self._refs)}))
            return
        # The page went away (reload, shutdown): nothing in flight will ever be answered, and
        # what was still queued must not reach the next page.
        dropped = self._bridge.clear_queue()
        if dropped:
            log.info("page reloaded; %d queued command(s) dropped", len(dropped))
        error = StageError("The avatar page was reloaded.")
        for fut in [*self._results.values(), self._init_waiter]:
            if fut is not None and not fut.done():
                fut.set_exception(error)
        if self._connected:
            # The avatar went with its page (a crash, a reload): the session must hear of it.
            self._connected = False
            self.event.emit(PageGone(reason="the avatar page stopped"))


def _result_error(answer: CommandResult, doing: str) -> AppError:
    data: dict[str, Any] = answer.data if isinstance(answer.data, dict) else {}
    status = data.get("status")
    detail = data.get("detail")
    message = answer.error or "unknown error"
    if isinstance(status, int) and status in (400, 422):
        return InvalidRequestError(
            f"Could not {doing}: {message}",
            status=status,
            detail=detail if isinstance(detail, str) else message,
        )
    return StageError(f"Could not {doing}: {message}")
