"""Prometheus metrics of one app instance, for ``/metrics`` (Qt-free).

A kiosk is watched from outside with the tools people already run (Prometheus, Grafana,
Alertmanager), so the app speaks their text format, through the official client library.
Each :class:`AppMetrics` has its own registry (never the library's global one): two app
instances in one process (the tests, a bench) never mix their numbers, and nothing that some
other library registers globally leaks into ``/metrics``.

The numbers are fed by the same listeners the panels use, not by extra calls in the logic:

* the session: ``avaturn_session_state`` (one series per state, 1 for the current one),
  ``avaturn_sessions_live_total``, ``avaturn_session_endings_total{reason}``;
* the speech queue's task-log rows: ``avaturn_lines_total{outcome}`` (spoken, failed, unclear,
  cancelled; each line counted once, when its row ends) and the histogram
  ``avaturn_send_to_speaking_seconds`` (from the log's own timestamps, the figure the log panel
  shows as latency);
* the supervisor (kiosk): ``avaturn_supervisor_restarts_total{reason}``,
  ``avaturn_supervisor_next_try_seconds``, ``avaturn_supervisor_paused``; the page's
  ``avaturn_page_heartbeat_age_seconds`` (NaN before the first heartbeat);
* the stage page's watchdog: ``avaturn_stage_problems_total{problem}`` (black, frozen,
  silent, and ``page_crashed`` for a page process that died), and the heartbeat's age;
* memory: the library's ``process_*`` series (resident memory, CPU, open files, start time) for
  the app, and ``avaturn_child_processes_resident_memory_bytes{name}`` for its child processes
  by name (QtWebEngine's renderers, the simulator), which is where a leaking page shows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from avaturn_desktop.core.queue import REASON_UNCLEAR
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState
from avaturn_desktop.core.tasks import TaskRecord, TaskState
from avaturn_desktop.services.supervisor import RestartReason, SupervisorState

log = logging.getLogger("avaturn.metrics")

#: Send → speaking, seconds: the service takes a few hundred ms; above 5 s something is wrong.
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
OUTCOMES: Final = ("spoken", "failed", "unclear", "cancelled")

_ENDING_LABELS: Final = {reason.value: reason.name.lower() for reason in EndReason}


class SessionSource(Protocol):
    @property
    def snapshot(self) -> SessionSnapshot: ...

    def subscribe(self, listener: Callable[[SessionSnapshot], None]) -> Callable[[], None]: ...


class RowSource(Protocol):
    """The speech queue, as a source of task-log row changes."""

    def subscribe_rows(self, listener: Callable[[int, bool], None]) -> Callable[[], None]: ...


class RowReader(Protocol):
    """The task log store, read by row id."""

    def get(self, row_id: int) -> TaskRecord: ...


class SupervisorSource(Protocol):
    @property
    def state(self) -> SupervisorState: ...

    def heartbeat_age(self) -> float | None: ...


class StageSource(Protocol):
    """The stage page's watch (``services/stage_watch.py``)."""

    @property
    def problems(self) -> Mapping[str, int]: ...

    @property
    def crashes(self) -> int: ...

    def heartbeat_age(self) -> float | None: ...


class AppMetrics:
    """The metrics of one app instance (see the module docs)."""

    def __init__(self, *, process: bool = True, proc_root: Path = Path("/proc")) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.session_state = Enum(
            "avaturn_session_state",
            "The avatar session's state (1 for the current one).",
            states=[state.value for state in SessionState],
            registry=r,
        )
        self.sessions_live = Counter(
            "avaturn_sessions_live", "Sessions that went live.", registry=r
        )
        self.session_endings = Counter(
            "avaturn_session_endings",
            "Sessions that ended or failed, by why.",
            ["reason"],
            registry=r,
        )
        self.lines = Counter(
            "avaturn_lines",
            "Lines of speech by how they ended (unclear: may or may not have been spoken).",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:  # every series from the start, 0 until it happens
            self.lines.labels(outcome)
        self.latency = Histogram(
            "avaturn_send_to_speaking_seconds",
            "From a line's request leaving to the avatar starting to speak it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "avaturn_page_heartbeat_age_seconds",
            "Seconds since the avatar page's last heartbeat (NaN before the first).",
            registry=r,
        )
        self.heartbeat_age.set_function(lambda: math.nan)
        if process:
            ProcessCollector(registry=r)
            r.register(_ChildrenCollector(os.getpid(), proc_root))
        self._rows: dict[int, TaskState] = {}
        self._unsubscribe: list[Callable[[], None]] = []

    # -- sources ---------------------------------------------------------------------------

    def watch_session(self, controller: SessionSource) -> None:
        self._on_session(controller.snapshot, initial=True)
        self._unsubscribe.append(controller.subscribe(self._on_session))

    def watch_rows(self, queue: RowSource, store: RowReader) -> None:
        """Count lines and latencies from the task-log rows the queue writes."""

        def on_row(row_id: int, new: bool) -> None:
            try:
                self._on_row(store.get(row_id), new)
            except Exception:  # a metric must never break the queue
                log.exception("Could not count task row %s", row_id)

        self._unsubscribe.append(queue.subscribe_rows(on_row))

    def watch_supervisor(self, supervisor: SupervisorSource) -> None:
        self.registry.register(_SupervisorCollector(lambda: supervisor.state))
        self.watch_heartbeat(supervisor.heartbeat_age)

    def watch_stage(self, stage: StageSource) -> None:
        """The page's watchdog: its problems by kind, its crashes, its heartbeat's age."""
        self.registry.register(_StageCollector(stage))
        self.watch_heartbeat(stage.heartbeat_age)

    def watch_heartbeat(self, age: Callable[[], float | None]) -> None:
        """Where the page's heartbeat age comes from (seconds, ``None`` before the first)."""

        def read() -> float:
            value = age()
            return math.nan if value is None else value

        self.heartbeat_age.set_function(read)

    def close(self) -> None:
        """Stop listening (the numbers stay readable)."""
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        self._unsubscribe.clear()

    # -- output ----------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Every metric, for ``GET /metrics``: the body and its ``Content-Type``.

        Pass the scraper's ``Accept`` header: the format is chosen from it as the library's own
        HTTP handler does (Prometheus's text format 0.0.4 when nothing better is asked for,
        which every Prometheus reads; OpenMetrics, or the text format 1.0.0, when asked for).
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- feeding ---------------------------------------------------------------------------

    def _on_session(self, snap: SessionSnapshot, initial: bool = False) -> None:
        self.session_state.state(snap.state.value)
        if initial:
            return
        if snap.state is SessionState.LIVE:
            self.sessions_live.inc()
        elif snap.state is SessionState.FAILED:
            self.session_endings.labels("failed").inc()
        elif snap.state is SessionState.ENDED:
            self.session_endings.labels(_ENDING_LABELS.get(snap.reason or "", "other")).inc()

    def _on_row(self, record: TaskRecord, new: bool) -> None:
        row_id = record.row_id
        if new:
            before = None
        elif row_id in self._rows:
            before = self._rows[row_id]
        else:
            return  # a row from before we listened, or one counted already (a late answer)
        if record.state is TaskState.SPEAKING and before is not TaskState.SPEAKING:
            latency = record.latency_ms
            if latency is not None:
                self.latency.observe(max(0.0, latency / 1000.0))
        if record.is_terminal:
            self._rows.pop(row_id, None)
            self.lines.labels(_outcome(record)).inc()
        else:
            self._rows[row_id] = record.state


def _outcome(record: TaskRecord) -> str:
    if record.state is TaskState.SPOKEN:
        return "spoken"
    if record.state is TaskState.CANCELLED:
        return "cancelled"
    if (record.reason or "").startswith(REASON_UNCLEAR):
        return "unclear"
    return "failed"


class _SupervisorCollector(Collector):
    """Reads the supervisor's own counts at scrape time: one source of truth, no drift."""

    def __init__(self, state: Callable[[], SupervisorState]) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        state = self._state()
        restarts = CounterMetricFamily(
            "avaturn_supervisor_restarts",
            "Sessions the supervisor started again after an ending, by why it ended.",
            labels=["reason"],
        )
        for reason in RestartReason:
            restarts.add_metric([reason.value], state.restarts_by_reason.get(reason.value, 0))
        yield restarts
        yield GaugeMetricFamily(
            "avaturn_supervisor_next_try_seconds",
            "Seconds until the supervisor's next try (0 when none is scheduled).",
            value=state.next_try_in_s or 0.0,
        )
        yield GaugeMetricFamily(
            "avaturn_supervisor_paused",
            "1 while the supervisor stands down (ended by hand, paused).",
            value=1.0 if state.paused_reason is not None else 0.0,
        )


class _StageCollector(Collector):
    """The stage watch's counts, read at scrape time."""

    KINDS: Final = ("black", "frozen", "silent")

    def __init__(self, stage: StageSource) -> None:
        self._stage = stage

    def collect(self) -> Iterable[Metric]:
        problems = CounterMetricFamily(
            "avaturn_stage_problems",
            "What the stage's watchdog found (black, frozen, silent) and page processes that "
            "died (page_crashed).",
            labels=["problem"],
        )
        for kind in self.KINDS:
            problems.add_metric([kind], self._stage.problems.get(kind, 0))
        problems.add_metric(["page_crashed"], self._stage.crashes)
        yield problems


class _ChildrenCollector(Collector):
    """Resident memory of the app's descendant processes, by process name (Linux ``/proc``;
    elsewhere nothing)."""

    def __init__(self, pid: int, proc_root: Path) -> None:
        self._pid = pid
        self._proc = proc_root
        try:
            self._page_size = os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            self._page_size = 4096

    def collect(self) -> Iterable[Metric]:
        memory = GaugeMetricFamily(
            "avaturn_child_processes_resident_memory_bytes",
            "Resident memory of the app's child processes (page renderers, simulator), by name.",
            labels=["name"],
        )
        count = GaugeMetricFamily(
            "avaturn_child_processes", "The app's child processes, by name.", labels=["name"]
        )
        totals: dict[str, tuple[int, int]] = {}
        for name, rss in self._descendants():
            processes, total = totals.get(name, (0, 0))
            totals[name] = (processes + 1, total + rss)
        for name, (processes, total) in sorted(totals.items()):
            memory.add_metric([name], float(total))
            count.add_metric([name], float(processes))
        yield memory
        yield count

    def _descendants(self) -> Iterator[tuple[str, int]]:
        parents: dict[int, tuple[int, str, int]] = {}
        try:
            entries = [e for e in os.listdir(self._proc) if e.isdigit()]
        except OSError:
            return
        for entry in entries:
            try:
                stat = (self._proc / entry / "stat").read_text()
                statm = (self._proc / entry / "statm").read_text().split()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            head, _, tail = stat.rpartition(")")
            name = head.partition("(")[2]
            fields = tail.split()
            if len(fields) < 2 or len(statm) < 2:
                continue
            parents[int(entry)] = (int(fields[1]), name, int(statm[1]) * self._page_size)
        for pid, (_, name, rss) in parents.items():
            seen = {pid}
            ancestor = parents[pid][0]
            while ancestor in parents and ancestor not in seen and ancestor != self._pid:
                seen.add(ancestor)
                ancestor = parents[ancestor][0]
            if ancestor == self._pid and pid != self._pid:
                yield name, rss
