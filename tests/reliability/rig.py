"""The app assembled for fault runs: the Shell (real QtWebEngine page, session controller, real
client) with the speaking docks (speech queue, composer) over it, a GUI-loop watchdog, and an
HTTP transport that counts what the service did wrong."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PySide6.QtCore import QCoreApplication, QEvent, QTimer

from avaturn_desktop.app import Backend, LaunchOptions, build, teardown
from avaturn_desktop.core import paths
from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.session_state import SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.core.tasks import TaskRecord, TaskState
from avaturn_desktop.services.speech_queue import QueueChange, SpeechQueue
from avaturn_desktop.simulator.server import FaultConfig, SimulatorServer
from avaturn_desktop.ui.docks.composer_panel import ComposerPanel
from avaturn_desktop.ui.shell import Shell

#: The longest the GUI loop may go without running a timer, under any fault.
MAX_STALL_MS = 100.0


async def until(predicate: Callable[[], bool], within: float = 15.0, what: str = "") -> None:
    """Wait for ``predicate`` (checked every 10 ms on the running loop); fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


class Watchdog:
    """A 5 ms QTimer in the GUI loop; ``max_gap_ms`` is the longest time between two ticks."""

    INTERVAL_MS = 5

    def __init__(self) -> None:
        self._timer = QTimer()
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self.max_gap_ms = 0.0
        self.ticks = 0
        #: Where the GUI thread was when a tick came late (stack samples, for the report).
        self.stalls: list[str] = []
        self._stopped = threading.Event()

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()
        self._gui_thread = threading.get_ident()
        self._stopped.clear()
        self._sampler = threading.Thread(target=self._sample, name="stall-sampler", daemon=True)
        self._sampler.start()

    def stop(self) -> None:
        self._timer.stop()
        self._stopped.set()

    def _sample(self) -> None:
        """Off the GUI thread: when a tick is 60 ms late, note where the GUI thread is."""
        while not self._stopped.wait(0.02):  # a sample every 20 ms until stopped
            last = self._last
            if last is not None and time.perf_counter() - last > 0.06:
                frame = sys._current_frames().get(self._gui_thread)
                if frame is not None:
                    where = "".join(traceback.format_stack(frame, limit=8))
                    self.stalls.append(f"{(time.perf_counter() - last) * 1000:.0f} ms:\n{where}")

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.max_gap_ms = max(self.max_gap_ms, (now - self._last) * 1000)
        self._last = now
        self.ticks += 1


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real transport, counting faulty answers (5xx, 429) and broken connections."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            self.seen[f"transport:{type(exc).__name__}"] += 1
            raise
        if time.perf_counter() - start >= 1.9:
            self.seen["latency>=1.9s"] += 1
        if response.status_code == 429:
            self.seen["429"] += 1
        elif response.status_code >= 500:
            self.seen[f"{response.status_code}"] += 1
        return response


class Rig:
    """One app instance against ``sim``; build with :meth:`open`, end with :meth:`close`."""

    def __init__(
        self,
        sim: SimulatorServer,
        store_path: Path,
        *,
        kind: str = "simulator",
        api_key: str = "local-simulator",
        max_retries: int = 3,
        settings: Settings | None = None,
    ) -> None:
        self.sim = sim
        self.api_key = api_key
        self.transport = CountingTransport()
        self.settings = settings or Settings()
        backend = Backend(kind, sim.base_url, sim.sdk_url, api_key)  # type: ignore[arg-type]
        # The app as it builds itself (app.build), over a transport that counts the faults.
        self.app = build(
            LaunchOptions(
                settings=self.settings,
                backend=backend,
                data_dir=store_path.parent,
                config_dir=paths.config_dir(),
                http_transport=self.transport,
                max_retries=max_retries,
            )
        )
        self.shell: Shell = self.app.shell
        self.http = self.app.runtime.http
        self.client = self.app.runtime.client
        self.store = self.app.runtime.store
        self.speaking = self.shell.speaking
        self.queue: SpeechQueue = self.speaking.queue
        self.composer: ComposerPanel = self.speaking.composer
        self.controller = self.shell.controller
        self.changes: list[QueueChange] = []
        self.queue.subscribe(self.changes.append)
        self.watchdog = Watchdog()
        #: What ``check_promises`` allows for the longest GUI-loop gap.
        self.stall_budget_ms = MAX_STALL_MS

    async def open(self) -> None:
        ready = asyncio.Event()
        bridge = self.shell.view.bridge
        bridge.ready_changed.connect(lambda ok: ready.set() if ok else None)
        if not bridge.ready:
            await asyncio.wait_for(ready.wait(), 30)

    async def start(self, request: SessionCreate | None = None) -> str:
        ok = await self.controller.start(request or self.settings.session.to_request())
        snap = self.controller.snapshot
        assert ok, f"the session did not go live: {snap.state} {snap.reason} {snap.detail}"
        assert snap.session_id is not None
        return snap.session_id

    async def close(self) -> None:
        self.watchdog.stop()
        await teardown(self.app)
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        # Qt objects caught in reference cycles must be collected here, on the GUI thread: a
        # collection that happens to run on the simulator's thread would destroy them there.
        self.__dict__.clear()
        gc.collect()

    # -- what the app and the service say ------------------------------------------------------

    def set_faults(self, **knobs: Any) -> None:
        self.sim.set_faults(FaultConfig(**knobs))

    async def sim_tasks(self, session_id: str | None = None) -> list[dict[str, Any]]:
        state = await asyncio.to_thread(self.sim.snapshot)
        return [
            task
            for session in state["sessions"]
            if session_id is None or session["session_id"] == session_id
            for task in session["tasks"]
        ]

    async def sim_state(self) -> dict[str, Any]:
        """What the simulator received, as ``GET /_sim/state`` tells anyone who asks."""
        response = await self.http.get(
            f"{self.sim.base_url}/_sim/state", headers={"Authorization": f"Bearer {self.api_key}"}
        )
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    async def sim_session(self, session_id: str) -> dict[str, Any]:
        state = await asyncio.to_thread(self.sim.snapshot)
        (session,) = [s for s in state["sessions"] if s["session_id"] == session_id]
        return session

    def rows(self) -> list[TaskRecord]:
        return self.store.query()

    def composer_text(self) -> str:
        return self.composer.editor.toPlainText()

    def type_and_queue(self, text: str) -> bool:
        self.composer.editor.setPlainText(text)
        return self.composer.queue_text()

    async def live(self) -> None:
        await until(lambda: self.controller.state is SessionState.LIVE, 30, "a live session")


@dataclasses.dataclass
class Invariants:
    """What :func:`check_invariants` found (all empty when the promises hold)."""

    #: text -> how many times the service received it, for texts received more than once
    doubled: dict[str, int]
    #: log rows called spoken whose text (and task id) the service never received
    spoken_unreceived: list[TaskRecord]
    #: items still sending, log rows still ``queued``/``sent``/``speaking`` once settled
    left_sending: list[str]
    #: texts received, for the counts
    received: int

    @property
    def ok(self) -> bool:
        return not (self.doubled or self.spoken_unreceived or self.left_sending)

    def explain(self) -> str:
        return (
            f"doubled={self.doubled} spoken_unreceived="
            f"{[(r.row_id, r.text) for r in self.spoken_unreceived]} "
            f"left_sending={self.left_sending}"
        )


async def check_invariants(rig: Rig, *, session_ended: bool = True) -> Invariants:
    """The promises checked after every scenario, from what the simulator actually received
    (``GET /_sim/state``) against the app's own log and queue:

    * each text reaches the service at most once (the scenarios send each text once; the
      only way back is the app saying it was not sent);
    * every line the log calls spoken was received by the service;
    * nothing is left sending (no item in ``sending``; once the session ended, no row still
      ``queued``, ``sent`` or ``speaking``).
    """
    state = await rig.sim_state()
    tasks = [t for s in state["sessions"] for t in s["tasks"]]
    per_text = Counter(t["text"] for t in tasks)
    by_id = {t["task_id"]: t for t in tasks}
    doubled = {text: n for text, n in per_text.items() if n > 1}
    rows = rig.rows()
    unreceived = [
        r
        for r in rows
        if r.state is TaskState.SPOKEN
        and (r.text not in per_text or (r.task_id is not None and r.task_id not in by_id))
    ]
    left = [f"item {i.item_id} {i.text!r}" for i in rig.queue.items if i.state is ItemState.SENDING]
    if session_ended:
        open_states = (TaskState.QUEUED, TaskState.SENT, TaskState.SPEAKING)
        left += [f"row {r.row_id} {r.state} {r.text!r}" for r in rows if r.state in open_states]
    return Invariants(doubled, unreceived, left, len(tasks))
