"""The one door between the avatar page and Python.

:class:`Bridge` is the only object published on the page's ``QWebChannel``. The page reaches it
through ``resources/web/bridge.js``, which runs in an isolated script world (ApplicationWorld):
the page's own scripts and the third-party Web SDK in the main world never see ``qt``; they
exchange JSON strings with the bridge script through DOM CustomEvents.

- page → Python: ``post(raw)``; at most :data:`MAX_MESSAGES_PER_S` messages a second are taken
  (the rest is dropped, counted in :attr:`Bridge.dropped` and logged once per flood), and every
  message taken is validated (:func:`parse_page_event`) and then emitted typed on
  ``event_received``, or reported on ``bad_message``.
- Python → page: :meth:`Bridge.send` queues commands until the page said ``ready``, then emits
  them in order on ``command`` (which bridge.js relays). A page (re)load resets readiness.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from PySide6.QtCore import QFile, QIODevice, QObject, Signal, Slot
from PySide6.QtWebChannel import QWebChannel
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineScript

from avaturn_desktop.core.events import (
    PageCommand,
    PageMessageError,
    Ready,
    command_json,
    describe_command,
    parse_page_event,
)
from avaturn_desktop.core.paths import resource

log = logging.getLogger("avaturn.web")

#: The script world the channel lives in: not the page's (MainWorld), where the SDK runs.
BRIDGE_WORLD = QWebEngineScript.ScriptWorldId.ApplicationWorld
BRIDGE_OBJECT_NAME = "bridge"
BRIDGE_SCRIPT_NAME = "avaturn-bridge"
_QWEBCHANNEL_JS = ":/qtwebchannel/qwebchannel.js"

#: The most page messages taken in one second. A live avatar sends a handful (four speech
#: events a line, one answer a command; a fast operator's burst of short lines some tens); a
#: page that sends more is broken or hostile, and must not be able to keep the GUI loop busy
#: parsing (400 small messages cost a few ms of the second).
MAX_MESSAGES_PER_S = 400


class Bridge(QObject):
    """The only object on the web channel: one slot in, one signal out, all JSON."""

    command = Signal(str)
    """Python → page: one command's JSON. Emitted only when the page is ready."""

    event_received = Signal(object)
    """A validated :data:`PageEvent` from the page (``ready`` included)."""

    bad_message = Signal(str)
    """A page message was refused; the argument is a short reason without its values."""

    ready_changed = Signal(bool)
    """The page became ready (True) or was reloaded / torn down (False)."""

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        max_per_s: int = MAX_MESSAGES_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(parent)
        self._ready = False
        self._queue: deque[PageCommand] = deque()
        self._max_per_s = max_per_s
        self._clock = clock
        self._window_start = -1.0
        self._window_count = 0
        self._flood_dropped = 0
        self._not_before_ms: float | None = None
        self.dropped = 0
        """Page messages dropped for coming too fast, since this bridge was made."""

    @property
    def ready(self) -> bool:
        return self._ready

    @Slot(str)
    def post(self, raw: str) -> None:
        """page → Python. Never raises: a bad message is logged and reported."""
        if not self._take():
            return
        try:
            event = parse_page_event(raw)
        except PageMessageError as exc:
            log.warning("bad message from the avatar page: %s", exc.reason)
            self.bad_message.emit(exc.reason)
            return
        if isinstance(event, Ready):
            if not self._fresh(event):
                log.debug("a ready from the page being replaced: ignored")
                return
            self._set_ready(True)
        self.event_received.emit(event)
        if isinstance(event, Ready):
            self._flush()

    def _take(self) -> bool:
        """Count the message into this second's window; False when the window is full."""
        now = self._clock()
        if now - self._window_start >= 1.0:
            if self._flood_dropped:
                log.warning(
                    "%d message(s) from the avatar page were dropped (more than %d a second)",
                    self._flood_dropped,
                    self._max_per_s,
                )
                self._flood_dropped = 0
            self._window_start = now
            self._window_count = 0
        if self._window_count >= self._max_per_s:
            if not self._flood_dropped:
                log.warning(
                    "The avatar page sends more than %d messages a second; dropping the excess",
                    self._max_per_s,
                )
            self._flood_dropped += 1
            self.dropped += 1
            return False
        self._window_count += 1
        return True

    def send(self, cmd: PageCommand) -> None:
        """Send ``cmd`` to the page now if it is ready, else once it is (in order)."""
        self._queue.append(cmd)
        if self._ready:
            self._flush()
        else:
            log.debug("page not ready; queued %s", describe_command(cmd))

    def reset(self, *, replacing: bool = False) -> None:
        """The page is (re)loading: wait for its next ``ready`` before sending anything.

        ``replacing``: the app is about to load a new document; a ``ready`` from one created
        before now (the old one, still running) is ignored.
        """
        if replacing:
            self._not_before_ms = time.time() * 1000.0
        self._set_ready(False)

    def _fresh(self, ready: Ready) -> bool:
        if self._not_before_ms is None or ready.time_origin_ms is None:
            return True
        return ready.time_origin_ms >= self._not_before_ms

    def clear_queue(self) -> list[PageCommand]:
        """Drop the commands not yet sent and return them."""
        dropped = list(self._queue)
        self._queue.clear()
        return dropped

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            self._ready = ready
            self.ready_changed.emit(ready)

    def _flush(self) -> None:
        while self._ready and self._queue:
            cmd = self._queue.popleft()
            log.debug("to page: %s", describe_command(cmd))
            self.command.emit(command_json(cmd))


def _read_qrc(path: str) -> str:
    file = QFile(path)
    if not file.open(QIODevice.OpenModeFlag.ReadOnly):
        raise FileNotFoundError(f"Qt resource {path} is missing (is QtWebChannel installed?)")
    try:
        return bytes(file.readAll().data()).decode("utf-8")
    finally:
        file.close()


def install_bridge(page: QWebEnginePage, bridge: Bridge) -> QWebChannel:
    """Publish ``bridge`` on ``page`` in the isolated world, with bridge.js injected there."""
    script = QWebEngineScript()
    script.setName(BRIDGE_SCRIPT_NAME)
    script.setWorldId(BRIDGE_WORLD)
    script.setInjectionPoint(QWebEngineScript.InjectionPoint.DocumentCreation)
    script.setRunsOnSubFrames(False)
    source = _read_qrc(_QWEBCHANNEL_JS) + "\n" + resource("web", "bridge.js").read_text("utf-8")
    script.setSourceCode(source)
    scripts = page.scripts()
    for old in scripts.find(BRIDGE_SCRIPT_NAME):
        scripts.remove(old)
    scripts.insert(script)
    channel = QWebChannel(page)
    channel.registerObject(BRIDGE_OBJECT_NAME, bridge)
    page.setWebChannel(channel, BRIDGE_WORLD)
    page.loadStarted.connect(bridge.reset)
    return channel
