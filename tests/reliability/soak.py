"""The kiosk soak: the app in kiosk mode (built as it builds itself, its real QtWebEngine page
shown full screen) against the simulator in its own process with a time scale, for a number
of simulated hours, while sessions are ended every few simulated minutes by each cause in
turn and lines are queued and spoken all along.

The causes: the service kills the session; its maximum duration (the simulator's clock runs
``time_scale`` times faster); nobody watching (the page cut off from the service: its event
channel dropped and refused until the session ended); the service restarting (the simulator
process stopped and started again on its port); the page's renderer killed (SIGKILL); the
avatar's video frozen (the simulator's media fault, found by the stage's watchdog).

The figures (:class:`Figures`): what was injected and how the supervisor counted the
restarts, how long the kiosk took to be live again, the lines fed, spoken to their end once,
lost (never spoken to the end) and doubled (spoken to the end more than once), as the
service heard them; and the memory of the app and of its page processes at the start and at
the end (``/metrics``' own series).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from avaturn_desktop.app import Assembled, Backend, LaunchOptions, build, teardown
from avaturn_desktop.core.kiosk import KioskSettings
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.session_state import SessionState
from avaturn_desktop.core.settings import SessionDefaults, Settings
from avaturn_desktop.services.runtime import AvatarSlot
from avaturn_desktop.services.supervisor import BackoffPolicy
from tests.blackbox import SIM_KEY, base_url, run_simulator, stop

CAUSES = (
    "kill",
    "max_duration",
    "user_absent",
    "service_restart",
    "renderer_crash",
    "frozen_video",
)
SIM_AUTH = {"Authorization": f"Bearer {SIM_KEY}"}
#: In flight on the service: the line is not over yet.
_OPEN = (ItemState.WAITING, ItemState.SENDING, ItemState.SENT, ItemState.SPEAKING)


@dataclasses.dataclass(frozen=True)
class Plan:
    sim_hours: float
    time_scale: float = 120.0
    #: Real seconds a session plays before the next cause ends it.
    play_s: float = 2.0
    #: The session's maximum duration and nobody-watching timeout, in simulated seconds.
    max_duration: int = 900
    user_absent_timeout: int = 240
    chars_per_second: float = 60.0
    seed: int = 12
    memory_every_s: float = 60.0
    #: The causes taken in turn (all of them by default; ``("kill",)`` keeps the page's
    #: renderer alive all along, to see its memory per session).
    causes: tuple[str, ...] = CAUSES


@dataclasses.dataclass
class Figures:
    plan: dict[str, Any]
    real_s: float = 0.0
    sim_hours: float = 0.0
    sessions_live: int = 0
    injected: Counter[str] = dataclasses.field(default_factory=Counter)
    restarts_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    stage_problems: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Seconds from the cause to the app's session leaving "live", by cause.
    noticed_s: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: Seconds from the session leaving "live" to the next live session, by cause.
    back_live_s: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    lines_fed: int = 0
    lines_spoken_once: int = 0
    lines_lost: int = 0
    lines_doubled: int = 0
    #: Lines the service received more than once and spoke to the end once (said again).
    lines_said_again: int = 0
    lost_examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: A line spoken to its end more than once: what the service did with it in each session,
    #: how that session was ended, and the app's rows for it.
    doubled_examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    memory_mb: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    #: (simulated hours, app MB, page processes MB), every ``Plan.memory_every_s`` real seconds.
    memory_timeline: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)
    stuck: list[str] = dataclasses.field(default_factory=list)
    #: Causes not applied: the session had ended by itself (its maximum duration) first.
    preempted: Counter[str] = dataclasses.field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["injected"] = dict(sorted(self.injected.items()))
        data["preempted"] = dict(sorted(self.preempted.items()))
        for key in ("noticed_s", "back_live_s"):
            data[key] = {
                cause: {
                    "n": len(times),
                    "median": round(statistics.median(times), 2),
                    "max": round(max(times), 2),
                }
                for cause, times in sorted(getattr(self, key).items())
                if times
            }
        return data


class SimProcess:
    """The simulator in its own process, restartable on its port, with the tasks it heard
    collected before each restart and every minute (it forgets an ended session after five).

    The soak runs in the app's process, so what it does itself counts in the app's memory:
    it keeps one HTTP client, and reads the simulator's whole state (every task of every
    session it still holds) only now and then."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        #: task_id -> (text, status): every task of every session, newest status.
        #: task id -> (text, status); status ``spoken`` only when an audience heard it to its end
        #: (the service may finish a phrase after every viewer has gone: nobody heard that)
        self.tasks: dict[str, tuple[str, str]] = {}
        #: The session each task was heard in.
        self.task_sessions: dict[str, str] = {}
        self.http = httpx.AsyncClient(headers=SIM_AUTH, timeout=10)

    def start(self) -> None:
        self.proc = run_simulator(
            "--time-scale",
            f"{self.plan.time_scale:g}",
            "--chars-per-second",
            f"{self.plan.chars_per_second:g}",
            port=self.port,
        )
        self.url = base_url(self.proc)
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    async def restart(self) -> None:
        await self.collect()
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)

    async def state(self) -> dict[str, Any]:
        answer = await self.http.get(f"{self.url}/_sim/state")
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    async def collect(self) -> dict[str, Any]:
        state = await self.state()
        for session in state["sessions"]:
            for task in session["tasks"]:
                status = task["status"]
                if status == "spoken" and not task.get("heard", True):
                    status = "spoken unheard"
                self.tasks[task["task_id"]] = (task["text"], status)
                self.task_sessions[task["task_id"]] = session["session_id"]
        return state

    async def control(self, method: str, path: str, body: Any = None) -> int:
        answer = await self.http.request(method, f"{self.url}{path}", json=body)
        if answer.status_code != 404:  # a session that ended meanwhile: the caller decides
            answer.raise_for_status()
        return answer.status_code


async def until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def memory(app: Assembled) -> dict[str, float]:
    """The app's resident memory and its page processes', MB, from its own ``/metrics``; and
    the page processes' by Chromium process type (``--type=``), from ``/proc``."""
    text = app.runtime.metrics().render()[0].decode()
    found = {"app": 0.0, "page_processes": 0.0, "page_process_count": 0.0}
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            found["app"] = float(line.split()[1]) / 1e6
        elif match := re.match(
            r'avaturn_child_processes_resident_memory_bytes\{name="(QtWebEngine[^"]*)"\} (\S+)',
            line,
        ):
            found["page_processes"] += float(match.group(2)) / 1e6
        elif match := re.match(r'avaturn_child_processes\{name="(QtWebEngine[^"]*)"\} (\S+)', line):
            found["page_process_count"] += float(match.group(2))
    for kind, rss in _page_processes_by_type().items():
        found[f"page:{kind}"] = rss / 1e6
    return {k: round(v, 1) for k, v in found.items()}


def _page_processes_by_type() -> Counter[str]:
    """Resident bytes of this process's QtWebEngine descendants, by their ``--type=``."""
    page = os.sysconf("SC_PAGE_SIZE")
    me = os.getpid()
    procs: dict[int, tuple[int, list[bytes], int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            rss = int((entry / "statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        procs[int(entry.name)] = (parent, cmdline, rss)
    by_type: Counter[str] = Counter()
    for pid, (parent, cmdline, rss) in procs.items():
        seen = {pid}
        while parent in procs and parent != me and parent not in seen:
            seen.add(parent)
            parent = procs[parent][0]
        if parent != me or not cmdline or b"QtWebEngine" not in cmdline[0]:
            continue
        args = {a.split(b"=", 1)[0]: a.split(b"=", 1)[1].decode() for a in cmdline if b"=" in a}
        kind = args.get(b"--type", "main")
        if kind == "utility" and b"--utility-sub-type" in args:
            kind = f"utility:{args[b'--utility-sub-type'].rsplit('.', 1)[-1]}"
        by_type[kind] += rss
    return by_type


class Soak:
    def __init__(self, plan: Plan, home: Path) -> None:
        self.plan = plan
        self.home = home
        self.sim = SimProcess(plan)
        self.figures = Figures(plan=dataclasses.asdict(plan))
        self.fed: list[str] = []
        self.session_causes: dict[str, str] = {}
        self.rows: list[Any] = []
        self.rng = random.Random(plan.seed)
        self._feeding = True
        self._collected = time.monotonic()

    # -- the app ---------------------------------------------------------------------------

    def settings(self) -> Settings:
        return Settings(
            session=SessionDefaults(
                max_duration=self.plan.max_duration,
                user_absent_timeout=self.plan.user_absent_timeout,
            ),
            # the watchdog quick, so that a frozen video is found in about a second
            kiosk=KioskSettings(
                heartbeat_s=0.5,
                heartbeat_timeout_s=5,
                sample_s=0.25,
                black_after_s=1.5,
                frozen_after_s=1.5,
                silent_after_s=2.0,
            ),
            offline_policy="hold",
        )

    def build(self) -> Assembled:
        backend = Backend("external", self.sim.url, f"{self.sim.url}/sim/web-sdk.js", SIM_KEY)
        app = build(
            LaunchOptions(
                settings=self.settings(),
                backend=backend,
                data_dir=self.home,
                config_dir=self.home / "config",
                kiosk=True,
            )
        )
        slot = app.runtime.slots[0]
        assert slot.supervisor is not None
        # the app's backoff, shortened to the soak's pace: a session that played 1.5 s ran well
        slot.supervisor.policy = BackoffPolicy(
            first_s=0.3,
            cap_s=3.0,
            stable_after_s=1.5,
            connect_timeout_s=20.0,
            heartbeat_timeout_s=5.0,
            quota_pause_s=5.0,
        )
        return app

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> Figures:
        await asyncio.to_thread(self.sim.start)
        app = self.build()
        try:
            await self._run(app)
        finally:
            self._feeding = False
            with contextlib.suppress(Exception):
                await self.sim.collect()
            with contextlib.suppress(Exception):
                self.rows = app.runtime.store.query(limit=1_000_000)
            await teardown(app)
            await self.sim.http.aclose()
            self.sim.stop()
        self._count()
        return self.figures

    async def _run(self, app: Assembled) -> None:
        shell = app.shell
        slot = app.runtime.slots[0]
        shell.enter_kiosk()  # full screen: a shown page, as a kiosk's is
        ready = asyncio.Event()
        shell.view.bridge.ready_changed.connect(lambda ok: ready.set() if ok else None)
        if not shell.view.bridge.ready:
            await asyncio.wait_for(ready.wait(), 30)
        slot.supervise()
        await self._live(slot, None, 30, "the first session")
        self.figures.memory_mb["start"] = memory(app)
        feeder = asyncio.ensure_future(self._feed(slot))
        started = time.monotonic()
        target_s = self.plan.sim_hours * 3600 / self.plan.time_scale
        causes: list[str] = []
        sampled = started
        self.figures.memory_timeline.append((0.0, *self._mb(app)))
        try:
            while time.monotonic() - started < target_s:
                if time.monotonic() - sampled >= self.plan.memory_every_s:
                    sampled = time.monotonic()
                    hours = (sampled - started) * self.plan.time_scale / 3600
                    self.figures.memory_timeline.append((round(hours, 2), *self._mb(app)))
                if not causes:
                    causes = list(self.plan.causes)
                    self.rng.shuffle(causes)
                cause = causes.pop()
                await self._one(app, slot, cause)
        finally:
            self._feeding = False
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        self.figures.real_s = round(time.monotonic() - started, 1)
        self.figures.sim_hours = round(self.figures.real_s * self.plan.time_scale / 3600, 2)
        # the end: a live session says what still waits
        await self._live(slot, None, 30, "a live session at the end")
        await until(
            lambda: not any(i.state in _OPEN for i in slot.queue.items),
            90,
            "the queue to be spoken",
        )
        await self.sim.collect()
        self.figures.memory_mb["end"] = memory(app)
        supervisor = slot.supervisor
        assert supervisor is not None
        self.figures.restarts_by_reason = dict(supervisor.state.restarts_by_reason)
        self.figures.stage_problems = {**slot.watch.problems, "page_crashed": slot.watch.crashes}

    @staticmethod
    def _mb(app: Assembled) -> tuple[float, float]:
        now = memory(app)
        return now["app"], now["page_processes"]

    async def _live(self, slot: AvatarSlot, old: str | None, within: float, what: str) -> str:
        def new_live() -> bool:
            snap = slot.controller.snapshot
            return snap.state is SessionState.LIVE and snap.session_id not in (None, old)

        await until(new_live, within, what)
        session_id = slot.controller.snapshot.session_id
        assert session_id is not None
        return session_id

    async def _one(self, app: Assembled, slot: AvatarSlot, cause: str) -> None:
        """Let the live session play a while, end it by ``cause``, wait for the next one."""
        session_id = await self._live(slot, None, 30, "a live session")
        self.figures.sessions_live += 1
        # the session plays (the pace of the soak, not a wait for a condition)
        await asyncio.sleep(self.plan.play_s)
        if slot.controller.snapshot.session_id != session_id:
            return  # it ended by itself meanwhile (its max duration): counted as it was
        self.figures.injected[cause] += 1
        self.session_causes[session_id] = cause
        if time.monotonic() - self._collected > 60:  # before the service forgets them
            self._collected = time.monotonic()
            await self.sim.collect()
        injected_at = time.monotonic()
        left: list[float] = []

        def on_session(snap: Any) -> None:
            if not left and (snap.state is not SessionState.LIVE or snap.session_id != session_id):
                left.append(time.monotonic())

        unsubscribe = slot.controller.subscribe(on_session)

        def still_live() -> bool:
            snap = slot.controller.snapshot
            return snap.state is SessionState.LIVE and snap.session_id == session_id

        match cause:
            case "kill":
                path = f"/_sim/sessions/{session_id}/kill"
                if await self.sim.control("POST", path, {}) == 404:
                    self._preempted(cause)
            case "max_duration":
                pass  # it reaches it by itself (the simulator's clock runs faster)
            case "user_absent":
                await self.sim.control(
                    "PUT",
                    "/_sim/faults",
                    {"refuse_event_channels": True, "drop_event_channels": True},
                )
                # nobody watches for the session's timeout (and a little more), then the
                # service is reachable again
                absent_s = self.plan.user_absent_timeout / self.plan.time_scale
                await asyncio.sleep(absent_s + 0.3)
                reason = await self._service_ended(session_id)
                await self.sim.control("PUT", "/_sim/faults", {})
                if reason != "user_absent_timeout":
                    self._preempted(cause)
            case "service_restart":
                await self.sim.restart()
            case "renderer_crash":
                pid = app.shell.view.page().renderProcessPid()
                assert pid > 0, "no renderer to kill"  # never 0: that signals the whole group
                os.kill(pid, signal.SIGKILL)
            case "frozen_video":
                before = slot.watch.problems["frozen"]
                await self.sim.control("PUT", "/_sim/faults", {"video_fault": "freeze"})
                await until(
                    lambda: slot.watch.problems["frozen"] > before or not still_live(),
                    20,
                    "a frozen video",
                )
                await self.sim.control("PUT", "/_sim/faults", {})
                if slot.watch.problems["frozen"] == before:
                    self._preempted(cause)
        try:
            await self._live(slot, session_id, 30, f"a live session after {cause}")
        except TimeoutError as exc:
            self.figures.stuck.append(str(exc))
            raise
        finally:
            unsubscribe()
        left_at = left[0] if left else injected_at
        self.figures.noticed_s.setdefault(cause, []).append(left_at - injected_at)
        self.figures.back_live_s.setdefault(cause, []).append(time.monotonic() - left_at)

    def _preempted(self, cause: str) -> None:
        self.figures.injected[cause] -= 1
        self.figures.preempted[cause] += 1

    async def _service_ended(self, session_id: str) -> str:
        """Why the service ended the session (waits until it did)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = await self.sim.state()
            ended = [s for s in state["sessions"] if s["session_id"] == session_id]
            if ended and ended[0]["end_reason"] is not None:
                return str(ended[0]["end_reason"])
            await asyncio.sleep(0.25)
        raise TimeoutError(f"session {session_id} did not end")

    async def _feed(self, slot: AvatarSlot) -> None:
        """Keep two or three lines waiting all along, each a sentence of its own."""
        n = 0
        while self._feeding:
            waiting = sum(1 for i in slot.queue.items if i.state is ItemState.WAITING)
            if waiting < 3:
                n += 1
                text = f"Line {n:05d} of the soak, spoken once and to its end."
                slot.queue.enqueue(text)
                self.fed.append(text)
            await asyncio.sleep(0.3)

    # -- the figures -----------------------------------------------------------------------

    def _count(self) -> None:
        spoken: Counter[str] = Counter()
        received: Counter[str] = Counter()
        statuses: dict[str, list[str]] = {}
        for text, status in self.sim.tasks.values():
            received[text] += 1
            statuses.setdefault(text, []).append(status)
            if status == "spoken":
                spoken[text] += 1
        f = self.figures
        f.lines_fed = len(self.fed)
        f.lines_spoken_once = sum(1 for t in self.fed if spoken[t] == 1)
        f.lines_doubled = sum(1 for t in self.fed if spoken[t] > 1)
        lost = [t for t in self.fed if spoken[t] == 0]
        f.lines_lost = len(lost)
        f.lines_said_again = sum(1 for t in self.fed if spoken[t] == 1 and received[t] > 1)
        f.lost_examples = [{"text": t, "service": statuses.get(t, [])} for t in lost[:10]]
        heard: dict[str, list[tuple[str, str]]] = {}
        for task_id, (text, status) in self.sim.tasks.items():
            session = self.sim.task_sessions.get(task_id, "?")
            heard.setdefault(text, []).append((self.session_causes.get(session, "-"), status))
        f.doubled_examples = [
            {
                "text": t,
                "service": heard.get(t, []),
                "app": [
                    (r.row_id, r.state.value, r.reason, r.resumed_from)
                    for r in self.rows
                    if r.text == t
                ],
            }
            for t in self.fed
            if spoken[t] > 1
        ][:10]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.figures.as_json(), indent=2) + "\n", encoding="utf-8")
