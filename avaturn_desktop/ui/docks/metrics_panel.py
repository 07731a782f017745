"""Live metrics, plotted with Qt's own chart module (QtCharts): how each session connected,
how fast each line started, per voice, and how deep the queues are.

* **Connect phases**: the last sessions of every avatar as stacked bars (create, SDK loaded,
  joined, first frame; seconds), with the slow-connect warning above them;
* **Start latency**: every line's send → speaking latency over this run, a series per voice,
  counted from when the avatar was free to say it (a line queued behind another counts from
  that one's end: see ``services/latency.py``);
* **Per voice**: p50 and p95 of those latencies (this run);
* **Queue depth**: the lines waiting or on the service, per avatar, sampled every second.

The numbers come from the runtime's listeners (the task-log rows the queues write, the slots'
:class:`~avaturn_desktop.services.connect_phases.ConnectWatch`), never from a second record.
Drawing is the costly part, so new points are gathered and the charts redrawn at most once a
second (and not at all while the dock is hidden), which keeps two avatars saying hundreds of
lines from stalling the window.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from PySide6.QtCharts import (
    QBarCategoryAxis,
    QBarSeries,
    QBarSet,
    QChart,
    QChartView,
    QHorizontalStackedBarSeries,
    QLineSeries,
    QValueAxis,
)
from PySide6.QtCore import QMargins, QPointF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from avaturn_desktop.core.queue import ChangeKind, QueueChange
from avaturn_desktop.services.connect_phases import PHASE_LABELS, PHASES, ConnectPhases
from avaturn_desktop.services.latency import percentile
from avaturn_desktop.services.runtime import AvatarSlot, Runtime

log = logging.getLogger("avaturn.ui")

REDRAW_MS: Final = 1000
#: Latency points drawn per voice (the latest; the figures use them all).
MAX_POINTS: Final = 600
#: Connect sessions shown (the latest, across avatars).
CONNECT_BARS: Final = 8
#: Queue depth samples kept per avatar (one a second: ten minutes).
DEPTH_SAMPLES: Final = 600
_PHASE_COLOURS: Final = ("#2563eb", "#7c3aed", "#0891b2", "#16a34a")


def _chart(title: str, *, smooth: bool = True) -> tuple[QChart, QChartView]:
    chart = QChart()
    chart.setTitle(title)
    chart.setMargins(QMargins(4, 4, 4, 4))
    chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
    chart.setAnimationOptions(QChart.AnimationOption.NoAnimation)
    view = QChartView(chart)
    # Antialiasing only where there are few shapes: hundreds of points drawn smooth every
    # second cost the GUI thread more than a frame.
    view.setRenderHint(QPainter.RenderHint.Antialiasing, smooth)
    view.setMinimumSize(260, 200)
    return chart, view


def _ceil_to(value: float, step: float) -> float:
    """``value`` rounded up to a multiple of ``step``: an axis that grows in steps does not
    make the chart lay itself out again every second."""
    return step * max(1, math.ceil(value / step))


class MetricsPanel(QWidget):
    """The four charts over the runtime's slots (see the module docs)."""

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("metrics_panel")
        self._runtime = runtime
        self._started = time.time()
        #: voice id -> latencies (ms) of this run (see :attr:`latencies`), and the points not
        #: drawn yet.
        self._latencies: dict[str, list[float]] = {}
        #: log rows written since they were last read (each line's row changes four or five
        #: times: one read of all of them a second, not a query on the GUI thread per change)
        self._rows_pending: set[int] = set()
        self._pending: dict[str, list[QPointF]] = {}
        self._points: dict[str, list[QPointF]] = {}
        self._started_rows: set[int] = set()
        self._ended_rows: set[int] = set()
        #: session id -> when its last line ended (a line queued behind it counts from then)
        self._last_end: dict[str, float] = {}
        self._depth: dict[int, deque[tuple[float, int]]] = {}
        #: slot index -> the ids of its items not finished (waiting or on the service)
        self._open: dict[int, set[int]] = {}
        self._dirty = True
        #: The plots still to draw in this round, one a loop turn (see :meth:`_draw_in_turns`).
        self._turns: list[Callable[[], None]] = []
        self._unsubscribe: list[Callable[[], None]] = []

        self.warning = QLabel()
        self.warning.setObjectName("metrics.warning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #b45309; font-weight: bold;")
        self.warning.hide()

        self.connect_chart, connect_view = _chart("Connect phases (s)")
        self.connect_series = QHorizontalStackedBarSeries()
        self.phase_sets: dict[str, QBarSet] = {}
        for name, colour in zip(PHASES, _PHASE_COLOURS, strict=True):
            bar = QBarSet(PHASE_LABELS[name])
            bar.setColor(QColor(colour))
            self.phase_sets[name] = bar
            self.connect_series.append(bar)
        self.connect_chart.addSeries(self.connect_series)
        self.connect_axis_y = QBarCategoryAxis()
        self.connect_axis_x = QValueAxis()
        self.connect_axis_x.setLabelFormat("%.1f")
        self.connect_chart.addAxis(self.connect_axis_y, Qt.AlignmentFlag.AlignLeft)
        self.connect_chart.addAxis(self.connect_axis_x, Qt.AlignmentFlag.AlignBottom)
        self.connect_series.attachAxis(self.connect_axis_y)
        self.connect_series.attachAxis(self.connect_axis_x)

        self.latency_chart, latency_view = _chart("Start latency (ms), this run", smooth=False)
        self.latency_axis_x = QValueAxis()
        self.latency_axis_x.setTitleText("s since start")
        self.latency_axis_x.setLabelFormat("%d")
        self.latency_axis_y = QValueAxis()
        self.latency_axis_y.setLabelFormat("%d")
        self.latency_chart.addAxis(self.latency_axis_x, Qt.AlignmentFlag.AlignBottom)
        self.latency_chart.addAxis(self.latency_axis_y, Qt.AlignmentFlag.AlignLeft)
        self.latency_series: dict[str, QLineSeries] = {}

        self.voice_chart, voice_view = _chart("Per voice: p50 / p95 (ms)")
        self.voice_series = QBarSeries()
        self.p50_set = QBarSet("p50")
        self.p95_set = QBarSet("p95")
        self.p50_set.setColor(QColor("#2563eb"))
        self.p95_set.setColor(QColor("#f59e0b"))
        self.voice_series.append(self.p50_set)
        self.voice_series.append(self.p95_set)
        self.voice_chart.addSeries(self.voice_series)
        self.voice_axis_x = QBarCategoryAxis()
        self.voice_axis_y = QValueAxis()
        self.voice_axis_y.setLabelFormat("%d")
        self.voice_chart.addAxis(self.voice_axis_x, Qt.AlignmentFlag.AlignBottom)
        self.voice_chart.addAxis(self.voice_axis_y, Qt.AlignmentFlag.AlignLeft)
        self.voice_series.attachAxis(self.voice_axis_x)
        self.voice_series.attachAxis(self.voice_axis_y)

        self.depth_chart, depth_view = _chart("Queue depth (lines)", smooth=False)
        self.depth_axis_x = QValueAxis()
        self.depth_axis_x.setTitleText("s since start")
        self.depth_axis_x.setLabelFormat("%d")
        self.depth_axis_y = QValueAxis()
        self.depth_axis_y.setLabelFormat("%d")
        self.depth_chart.addAxis(self.depth_axis_x, Qt.AlignmentFlag.AlignBottom)
        self.depth_chart.addAxis(self.depth_axis_y, Qt.AlignmentFlag.AlignLeft)
        self.depth_series: dict[int, QLineSeries] = {}

        grid = QGridLayout()
        grid.addWidget(connect_view, 0, 0)
        grid.addWidget(latency_view, 0, 1)
        grid.addWidget(voice_view, 1, 0)
        grid.addWidget(depth_view, 1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.warning)
        layout.addLayout(grid, 1)

        for slot in runtime.slots:
            self.watch(slot)
        self._unsubscribe.append(runtime.subscribe_slots(self.watch))
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    # -- sources ---------------------------------------------------------------------------

    def watch(self, slot: AvatarSlot) -> None:
        def on_row(row_id: int, new: bool) -> None:
            # read later, with the others written meanwhile, in one query (see _take_rows)
            if not new and row_id not in self._ended_rows:
                self._rows_pending.add(row_id)

        self._unsubscribe.append(slot.queue.subscribe_rows(on_row))
        # the queue's depth, counted change by change (reading the queue each second would
        # make a snapshot of every item: a thousand of them, every second)
        open_items = self._open.setdefault(
            slot.index, {i.item_id for i in slot.queue.items if not i.state.finished}
        )

        def on_change(change: QueueChange) -> None:
            item = change.item
            if item is None:
                return
            if change.kind is ChangeKind.REMOVED or item.state.finished:
                open_items.discard(item.item_id)
            else:
                open_items.add(item.item_id)

        self._unsubscribe.append(slot.queue.subscribe(on_change))
        self._unsubscribe.append(slot.connect.subscribe(self._on_connect))
        self._depth[slot.index] = deque(maxlen=DEPTH_SAMPLES)
        series = QLineSeries()
        series.setName(slot.label)
        self.depth_chart.addSeries(series)
        series.attachAxis(self.depth_axis_x)
        series.attachAxis(self.depth_axis_y)
        self.depth_series[slot.index] = series
        self._dirty = True

    @property
    def latencies(self) -> dict[str, list[float]]:
        """voice id -> the start latencies (ms) of this run's lines, up to date."""
        self._take_rows()
        return self._latencies

    def _take_rows(self) -> None:
        """Read the rows written since the last time (one query) and take the lines that
        started, in the order they started, and those that ended."""
        if not self._rows_pending:
            return
        ids, self._rows_pending = sorted(self._rows_pending), set()
        try:
            records = self._runtime.store.get_many(ids)
        except KeyError:  # a row went away meanwhile: read the rest one by one
            records = []
            for row_id in ids:
                with contextlib.suppress(KeyError):
                    records.append(self._runtime.store.get(row_id))
        never = float("inf")
        records.sort(key=lambda r: (r.started_at or never, r.row_id))
        for record in records:
            row_id = record.row_id
            started, sent = record.started_at, record.sent_at
            if row_id not in self._started_rows and started is not None and sent is not None:
                self._started_rows.add(row_id)
                free = sent
                before = self._last_end.get(record.session_id)
                if before is not None:
                    free = max(sent, min(before, started))
                latency = max(0.0, (started - free) * 1000.0)
                voice = record.voice_id or ""
                self._latencies.setdefault(voice, []).append(latency)
                point = QPointF(started - self._started, latency)
                self._pending.setdefault(voice, []).append(point)
                self._dirty = True
            if record.is_terminal:
                self._ended_rows.add(row_id)
                self._started_rows.discard(row_id)
                if started is not None and record.ended_at is not None:
                    self._last_end[record.session_id] = record.ended_at

    def _on_connect(self, phases: ConnectPhases) -> None:
        threshold = self._runtime.settings.value.slow_connect_s
        total = phases.total_s
        if total is not None and total > threshold and phases.outcome == "live":
            self.warning.setText(
                f"Slow connect: {self._slot_label(phases.slot)} took {total:.1f} s, over "
                f"{threshold:g} s ({phases.describe()})."
            )
            self.warning.show()
        self._dirty = True

    def _slot_label(self, index: int) -> str:
        return f"Avatar {index + 1}"

    # -- drawing ---------------------------------------------------------------------------

    def _tick(self) -> None:
        self._take_rows()
        now = time.time() - self._started
        for index, samples in self._depth.items():
            samples.append((now, len(self._open.get(index, ()))))
        self._dirty = True
        if self._on_screen():
            self._draw_in_turns()

    def _on_screen(self) -> bool:
        """Shown, and not under another dock's tab: the panel shares its place with the log
        and the cue list, and a draw of its four plots is milliseconds of the GUI thread,
        every second, for nobody. It draws when it comes to the front (:meth:`paintEvent`)."""
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self._dirty:  # back in front with what was gathered behind: drawn from next turn
            self._draw_in_turns()

    def redraw(self) -> None:
        """Draw what was gathered since the last time, now (cheap when nothing changed)."""
        if not self._dirty:
            return
        self._dirty = False
        for draw in self._plots():
            draw()

    def _plots(self) -> list[Callable[[], None]]:
        return [self._draw_latency, self._draw_voices, self._draw_connect, self._draw_depth]

    def _draw_in_turns(self) -> None:
        """Draw what was gathered, a plot per loop turn from the next one. Each plot relays
        its chart out when its axes or series change; the four in one turn took 10-16 ms of
        the GUI thread when the panel came back in front, a frame's worth on their own. A
        round under way starts over, so that every plot shows the newest figures."""
        self._dirty = False
        if not self._turns:
            QTimer.singleShot(0, self, self._next_turn)
        self._turns = self._plots()

    def _next_turn(self) -> None:
        if self._turns:
            self._turns.pop(0)()
        if self._turns:
            QTimer.singleShot(0, self, self._next_turn)

    def _draw_latency(self) -> None:
        for voice, points in self._pending.items():
            if not points:
                continue
            series = self.latency_series.get(voice)
            if series is None:
                # Points alone, with no line between them: a line series draws its points
                # in one pass, where a scatter series keeps an item per point (two voices
                # of 500 points: 14 ms of the GUI thread each second to replace and paint
                # them as a scatter, under 3 ms so).
                series = QLineSeries()
                series.setPointsVisible(True)
                series.setMarkerSize(5)
                series.setName(self._runtime.voices.name_of(voice) or "(no voice)")
                self.latency_chart.addSeries(series)  # the theme gives it its colour here
                pen = series.pen()
                pen.setStyle(Qt.PenStyle.NoPen)
                series.setPen(pen)
                series.attachAxis(self.latency_axis_x)
                series.attachAxis(self.latency_axis_y)
                self.latency_series[voice] = series
            shown = self._points.setdefault(voice, [])
            shown.extend(points)
            del shown[:-MAX_POINTS]
            # one replace, not an append per point: QtCharts relays the series out per call
            series.replace(shown)
        self._pending = {}
        top = max((max(values) for values in self._latencies.values() if values), default=0.0)
        _set_range(self.latency_axis_y, _ceil_to(top * 1.1, 100.0))
        _set_range(self.latency_axis_x, _ceil_to(time.time() - self._started, 60.0))

    def _draw_voices(self) -> None:
        voices = [v for v, values in self._latencies.items() if values]
        names = [self._runtime.voices.name_of(v) or "(none)" for v in voices]
        p50 = [percentile(self._latencies[v], 50) or 0.0 for v in voices]
        p95 = [percentile(self._latencies[v], 95) or 0.0 for v in voices]
        if self.voice_axis_x.categories() != names:
            self.voice_axis_x.clear()
            self.voice_axis_x.append(names)
        _replace(self.p50_set, p50)
        _replace(self.p95_set, p95)
        _set_range(self.voice_axis_y, _ceil_to(max(p95, default=0.0) * 1.15, 100.0))

    def _draw_connect(self) -> None:
        sessions = sorted(
            (p for slot in self._runtime.slots for p in slot.connect.history),
            key=lambda p: p.requested_at,
        )[-CONNECT_BARS:]
        labels: list[str] = []
        for n, phases in enumerate(sessions, 1):
            voice = self._runtime.voices.name_of(phases.voice_id) or "?"
            mark = "" if phases.outcome == "live" else f" ({phases.outcome})"
            labels.append(f"{n}. {self._slot_label(phases.slot)} · {voice}{mark}")
        if self.connect_axis_y.categories() != labels:
            self.connect_axis_y.clear()
            self.connect_axis_y.append(labels)
        longest = 1.0
        for name, bar in self.phase_sets.items():
            values = [p.durations_s()[name] or 0.0 for p in sessions]
            _replace(bar, values)
        for phases in sessions:
            longest = max(longest, sum(v or 0.0 for v in phases.durations_s().values()))
        _set_range(self.connect_axis_x, _ceil_to(longest * 1.1, 0.5))

    def _draw_depth(self) -> None:
        top = 1
        for index, samples in self._depth.items():
            series = self.depth_series.get(index)
            if series is None:
                continue
            series.replace([QPointF(t, n) for t, n in samples])
            top = max(top, max((n for _, n in samples), default=0))
        _set_range(self.depth_axis_y, _ceil_to(top + 1, 10.0))
        _set_range(self.depth_axis_x, _ceil_to(time.time() - self._started, 60.0))

    def close_panel(self) -> None:
        self._timer.stop()
        self._turns = []
        self._rows_pending.clear()  # the store closes after the window: nothing more is read
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        self._unsubscribe.clear()


def _set_range(axis: QValueAxis, top: float) -> None:
    if axis.min() != 0 or axis.max() != top:
        axis.setRange(0, top)


def _replace(bar: QBarSet, values: list[float]) -> None:
    """A bar set's values, changed in place (no series rebuilt)."""
    count = bar.count()
    for i, value in enumerate(values):
        if i < count:
            if bar.at(i) != value:
                bar.replace(i, value)
        else:
            bar.append(value)
    if count > len(values):
        bar.remove(len(values), count - len(values))
