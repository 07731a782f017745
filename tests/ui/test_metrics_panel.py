"""The metrics panel's start latencies: the log rows its lines write are read together, once a
second (or when the figures are read), never a query on the GUI thread per row change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QWidget

from avaturn_desktop.core.tasks import TaskRoute
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.docks.metrics_panel import MetricsPanel


class _CountingStore:
    """The real store, counting the reads the panel makes."""

    def __init__(self, store: TaskLogStore) -> None:
        self._store = store
        self.reads = 0

    def get(self, row_id: int) -> Any:
        self.reads += 1
        return self._store.get(row_id)

    def get_many(self, row_ids: Any) -> Any:
        self.reads += 1
        return self._store.get_many(row_ids)


class _Queue:
    def __init__(self) -> None:
        self.items: tuple[Any, ...] = ()
        self.row_listeners: list[Callable[[int, bool], None]] = []

    def subscribe(self, listener: Any) -> Callable[[], None]:
        return lambda: None

    def subscribe_rows(self, listener: Callable[[int, bool], None]) -> Callable[[], None]:
        self.row_listeners.append(listener)
        return lambda: self.row_listeners.remove(listener)

    def written(self, row_id: int, new: bool = False) -> None:
        for listener in self.row_listeners:
            listener(row_id, new)


def _runtime(store: Any, queue: _Queue) -> Any:
    slot = SimpleNamespace(
        index=0,
        label="Avatar 1",
        queue=queue,
        connect=SimpleNamespace(subscribe=lambda listener: lambda: None, history=[]),
    )
    return SimpleNamespace(
        slots=[slot],
        store=store,
        subscribe_slots=lambda listener: lambda: None,
        settings=SimpleNamespace(value=SimpleNamespace(slow_connect_s=5.0)),
        voices=SimpleNamespace(name_of=lambda voice_id: voice_id),
    )


def test_lines_are_read_together_and_each_latency_counts_from_when_the_avatar_was_free(
    tmp_path: Path, qtbot: Any
) -> None:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    counting = _CountingStore(store)
    queue = _Queue()
    panel = MetricsPanel(_runtime(counting, queue))
    qtbot.addWidget(panel)
    t = 1000.0
    rows = []
    for n in range(3):  # three lines queued back to back, each started 50 ms after it could
        record = store.add(session_id="s1", text=f"Line {n}.", voice_id="v1", route=TaskRoute.REST)
        queue.written(record.row_id, True)
        rows.append(record.row_id)
    for n, row_id in enumerate(rows):
        store.mark_sent(row_id, at=t)
        queue.written(row_id)
        start = t + 0.05 + n * 1.0
        store.mark_speaking(row_id, at=start)
        queue.written(row_id)
        store.mark_spoken(row_id, at=start + 0.95)
        queue.written(row_id)
    assert counting.reads == 0  # nothing read per change
    latencies = panel.latencies
    assert counting.reads == 1  # all of them in one query
    assert [round(v) for v in latencies["v1"]] == [50, 50, 50]
    assert panel.latencies is latencies and counting.reads == 1  # nothing new: no query
    panel.close_panel()
    store.close()


def test_the_plots_are_not_drawn_under_another_tab_and_are_drawn_when_in_front(
    tmp_path: Path, qtbot: Any
) -> None:
    """The panel shares its place with the log and the cue list: behind their tab its plots
    are not drawn each second (milliseconds of the GUI thread for nobody); brought to the
    front, what was gathered meanwhile is drawn at once."""
    store = TaskLogStore(tmp_path / "log.sqlite3")
    panel = MetricsPanel(_runtime(store, _Queue()))
    window = QMainWindow()
    qtbot.addWidget(window)
    window.setCentralWidget(QWidget())
    docks = []
    for name, widget in (("metrics", panel), ("log", QLabel("the log"))):
        dock = QDockWidget(name, window)
        dock.setWidget(widget)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        docks.append(dock)
    window.tabifyDockWidget(docks[0], docks[1])
    docks[1].raise_()
    window.resize(800, 600)
    window.show()
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: panel.visibleRegion().isEmpty() and panel.isVisible())
    panel.redraw()
    panel._tick()
    assert panel._dirty  # gathered, not drawn
    docks[0].raise_()
    qtbot.waitUntil(lambda: not panel._dirty)
    panel._tick()
    assert not panel._dirty  # in front: drawn each second
    panel.close_panel()
    store.close()


def test_a_catch_up_draws_one_plot_a_loop_turn_and_restarts_on_news(
    tmp_path: Path, qtbot: Any, monkeypatch: Any
) -> None:
    """Each plot relays its chart out when drawn: the four in one loop turn were 10-16 ms
    when the panel came back in front. They are drawn one a turn, and a round that news
    interrupts starts over, so every plot ends with the newest figures."""
    store = TaskLogStore(tmp_path / "log.sqlite3")
    panel = MetricsPanel(_runtime(store, _Queue()))
    qtbot.addWidget(panel)
    drawn: list[str] = []
    for name in ("latency", "voices", "connect", "depth"):
        monkeypatch.setattr(panel, f"_draw_{name}", lambda name=name: drawn.append(name))

    panel._draw_in_turns()
    assert drawn == [] and not panel._dirty  # nothing in this turn
    panel._next_turn()
    panel._next_turn()
    assert drawn == ["latency", "voices"]
    panel._draw_in_turns()  # news: the round starts over
    for _ in range(4):
        panel._next_turn()
    assert drawn == ["latency", "voices", "latency", "voices", "connect", "depth"]
    panel._next_turn()  # the round is over: nothing more
    assert len(drawn) == 6

    drawn.clear()
    panel._draw_in_turns()  # through the event loop, a turn each
    qtbot.waitUntil(lambda: len(drawn) == 4)
    assert drawn == ["latency", "voices", "connect", "depth"]
    panel.redraw()  # an explicit redraw still draws at once (nothing new: nothing)
    panel._dirty = True
    panel.redraw()
    assert drawn[4:] == ["latency", "voices", "connect", "depth"]
    panel.close_panel()
    store.close()
