"""The task log model over 100,000 rows: lazy reads, filters, search, one-row live updates."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import (
    QCoreApplication,
    QEvent,
    QModelIndex,
    QModelRoleData,
    QModelRoleDataSpan,
    Qt,
)

from avaturn_desktop.core.tasks import TaskRoute, TaskState
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.docks import log_panel
from avaturn_desktop.ui.docks.log_panel import LogPanel
from avaturn_desktop.ui.log_model import CACHE_ROWS, PAGE, Column, LogModel

ROWS = 100_000
SESSIONS = ("s-a", "s-b", "s-c", "s-d")


def _fill(path: Path) -> None:
    """100k spoken rows in one transaction (the store's add() commits each row on its own)."""
    TaskLogStore(path).close()  # creates the schema
    db = sqlite3.connect(path)
    rows = []
    for i in range(ROWS):
        text = f"Line number {i} about {'apples' if i % 1000 == 7 else 'pears'}."
        t = 1_700_000_000.0 + i
        fixed = (SESSIONS[i % 4], text, text.casefold(), "v1", "rest", "spoken", f"task-{i}")
        rows.append((*fixed, t, t, t + 0.01, t + 0.2, t + 0.9))
    with db:
        db.executemany(
            "INSERT INTO tasks (session_id, text, text_fold, voice_id, route, state, task_id,"
            " created_at, sent_at, acked_at, started_at, ended_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("biglog") / "log.sqlite3"
    _fill(path)
    return path


@pytest.fixture
def store(big_log: Path, tmp_path: Path) -> Iterator[TaskLogStore]:
    copy = tmp_path / "log.sqlite3"
    copy.write_bytes(big_log.read_bytes())
    with TaskLogStore(copy) as store:
        yield store
        # The test's panels were closed by qtbot and are deleted later: deleted now, before
        # the store closes under them (a timer or repaint of theirs would read it later).
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_a_big_log_is_fast_and_lazy(store: TaskLogStore, qtmodeltester: Any) -> None:
    started = time.perf_counter()
    model = LogModel(store)
    assert model.rowCount() == ROWS
    far = model.index(ROWS - 1, Column.TEXT)
    assert model.data(far) == f"Line number {ROWS - 1} about pears."
    assert model.data(model.index(ROWS - 1, Column.LATENCY)) == "200"
    assert model.data(model.index(ROWS - 1, Column.DURATION)) == "0.70"
    assert model.data(model.index(ROWS - 1, Column.STATE)) == "spoken"
    assert model.pages_read == 1
    model.data(model.index(ROWS - 2, Column.SESSION))  # same page: no read
    assert model.pages_read == 1
    assert time.perf_counter() - started < 3.0
    assert model.headerData(Column.LATENCY, Qt.Orientation.Horizontal) == "Latency (ms)"
    assert model.rowCount(model.index(0, 0)) == 0


def test_scrolling_the_whole_log_keeps_a_bounded_cache(store: TaskLogStore) -> None:
    """The view asks for every row once (a scroll to the end): the records and texts kept
    stay bounded, and a row that left them is read again, right."""
    model = LogModel(store)
    rows = 20 * PAGE
    for row in range(rows):
        model.data(model.index(row, Column.TEXT))
    assert model.pages_read == 20
    assert len(model._cache) <= CACHE_ROWS
    assert len(model._texts) <= CACHE_ROWS
    assert model.data(model.index(0, Column.TEXT)) == "Line number 0 about pears."
    assert model.pages_read == 21  # the first page had left the cache: read again
    assert model.data(model.index(rows - 1, Column.TEXT)) == f"Line number {rows - 1} about pears."
    assert model.pages_read == 21  # the last page is still kept


def test_filter_by_session_and_state_and_search(store: TaskLogStore) -> None:
    model = LogModel(store)
    model.set_filter(session_id="s-b")
    assert model.rowCount() == ROWS // 4
    assert model.data(model.index(0, Column.SESSION)) == "s-b"
    model.set_filter(search="APPLES")
    assert model.rowCount() == ROWS // 1000
    assert model.data(model.index(3, Column.TEXT)) == "Line number 3007 about apples."
    model.set_filter(session_id="s-d", search="apples")
    assert model.rowCount() == ROWS // 1000  # 7 mod 4 == 3: every apples row is in s-d
    model.set_filter(states=[TaskState.FAILED])
    assert model.rowCount() == 0


def test_live_updates_touch_one_row(store: TaskLogStore, qtbot: Any) -> None:
    model = LogModel(store)
    resets: list[bool] = []
    model.modelReset.connect(lambda: resets.append(True))
    record = store.add(session_id="s-new", text="Fresh.", voice_id="v2", route=TaskRoute.REST)
    with qtbot.waitSignal(model.rowsInserted) as inserted:
        model.row_written(record.row_id, True)
        model.flush()
    assert inserted.args[1:] == [ROWS, ROWS]
    store.mark_sent(record.row_id, at=10.0)
    with qtbot.waitSignal(model.dataChanged) as changed:
        model.row_written(record.row_id, False)
        model.flush()
    top_left: QModelIndex = changed.args[0]
    assert top_left.row() == ROWS
    assert model.data(model.index(ROWS, Column.STATE)) == "sent"
    assert resets == []

    # a row that leaves the state filter goes away, alone
    model.set_filter(states=[TaskState.SENT])
    assert model.rowCount() == 1
    store.mark_cancelled(record.row_id, "stopped")
    with qtbot.waitSignal(model.rowsRemoved):
        model.row_written(record.row_id, False)
        model.flush()
    assert model.rowCount() == 0


def test_panel_copies_searches_resends_and_exports(
    store: TaskLogStore, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = LogModel(store)
    exported: list[tuple[Path, str, str | None]] = []

    def exporter(path: Path, fmt: str, session_id: str | None) -> int:
        exported.append((path, fmt, session_id))
        path.write_text("x", encoding="utf-8")
        return 1

    panel = LogPanel(model, sessions=lambda: list(SESSIONS), exporter=exporter)
    qtbot.addWidget(panel)
    assert [panel.session_combo.itemText(i) for i in range(5)] == ["All sessions", *SESSIONS]

    panel.session_combo.setCurrentIndex(2)  # s-b
    assert model.session_id == "s-b" and model.rowCount() == ROWS // 4
    with qtbot.waitSignal(model.modelReset, timeout=2000):
        panel.search.setText("number 1 about")  # debounced
    assert model.rowCount() == 1
    assert model.data(model.index(0, Column.TEXT)) == "Line number 1 about pears."

    panel.select_rows([0])
    text = panel.copy_selection()
    assert text.splitlines()[0].startswith("Session\tTime sent\tText")
    assert "\tLine number 1 about pears.\ttask-1\trest\tv1\tspoken\t200\t0.70" in text
    with qtbot.waitSignal(panel.resend_requested) as resent:
        panel.resend_button.click()
    assert resent.args == ["Line number 1 about pears."]

    target = tmp_path / "out.srt"
    monkeypatch.setattr(
        log_panel.ExportDialog, "ask", classmethod(lambda _cls, _parent, _fmt, _s: target)
    )
    assert panel.export("srt") == target
    assert exported == [(target, "srt", "s-b")]


def test_a_repaint_asks_python_once_per_cell_with_the_same_values(
    store: TaskLogStore, qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qt asks a model for seven roles per cell at every repaint; the log answers them in one
    call into Python (multiData), with what data() says role by role."""
    calls: list[int] = []
    real_data = LogModel.data

    def counting(self: LogModel, index: Any, role: int = 0) -> Any:
        calls.append(role)
        return real_data(self, index, role)

    cells: list[int] = []
    real_multi = LogModel.multiData

    def counting_cells(self: LogModel, index: Any, span: Any) -> None:
        cells.append(index.row())
        real_multi(self, index, span)

    # (in place before the model exists: the binding looks an override up once)
    monkeypatch.setattr(LogModel, "data", counting)
    monkeypatch.setattr(LogModel, "multiData", counting_cells)
    model = LogModel(store)
    panel = LogPanel(model, sessions=lambda: list(SESSIONS), exporter=lambda *_: 0)
    qtbot.addWidget(panel)
    panel.resize(1400, 500)
    panel.show()
    qtbot.waitUntil(lambda: bool(cells))  # the rows are laid out and were drawn once
    calls.clear()
    cells.clear()
    panel.table.viewport().repaint()  # drawn again now
    assert cells and calls == []
    roles = (
        Qt.ItemDataRole.DisplayRole,
        Qt.ItemDataRole.ToolTipRole,
        Qt.ItemDataRole.ForegroundRole,
        Qt.ItemDataRole.TextAlignmentRole,
        Qt.ItemDataRole.UserRole,
        Qt.ItemDataRole.FontRole,
    )
    for row in (0, 5):
        for column in Column:
            index = model.index(row, column)
            for role in roles:
                got = QModelRoleData(int(role))
                model.multiData(index, QModelRoleDataSpan(got))
                assert got.data() == model.data(index, role), (row, column, role)


def test_a_row_added_does_not_ask_the_header_of_every_row(
    tmp_path: Path, qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qt sized the row numbers by asking the header data of up to two hundred rows (each a
    call into Python) after every row added; the width comes from the row count now."""
    asked: list[int] = []
    real = LogModel.headerData

    def counting(self: LogModel, section: int, *args: Any) -> Any:
        asked.append(section)
        return real(self, section, *args)

    monkeypatch.setattr(LogModel, "headerData", counting)  # before the model exists
    with TaskLogStore(tmp_path / "small.sqlite3") as small:
        for i in range(400):
            small.add(session_id="s-a", text=f"Line {i}.", voice_id="v1", route=TaskRoute.REST)
        model = LogModel(small)
        panel = LogPanel(model, sessions=lambda: ["s-a"], exporter=lambda *_: 0)
        qtbot.addWidget(panel)
        panel.resize(1200, 400)
        panel.show()
        qtbot.waitExposed(panel)
        panel.table.scrollToBottom()  # following the end
        qtbot.wait(20)
        asked.clear()
        for i in range(5):
            record = small.add(
                session_id="s-a", text=f"New {i}.", voice_id="v1", route=TaskRoute.REST
            )
            model.row_written(record.row_id, True)
            qtbot.waitUntil(lambda i=i: model.rowCount() == 401 + i)
            qtbot.wait(60)  # shown, followed and painted
        assert panel.table.verticalScrollBar().value() == panel.table.verticalScrollBar().maximum()
        assert len(asked) < 5 * 200, len(asked)  # only the numbers shown (900 a row before)
        width = panel.table.verticalHeader().sizeHint().width()
        assert width >= panel.fontMetrics().horizontalAdvance("405")
        panel.hide()  # nothing paints from the store once it is closed


def test_a_closed_log_reads_nothing_more(tmp_path: Path, qtbot: Any) -> None:
    """Rows written just before the app closes are shown a frame later; the store closes after
    the window, so a closed model must not read them then."""
    small = TaskLogStore(tmp_path / "closing.sqlite3")
    model = LogModel(small)
    panel = LogPanel(model, sessions=lambda: [], exporter=lambda *_: 0)
    qtbot.addWidget(panel)
    record = small.add(session_id="s-a", text="Last words.", voice_id="v1", route=TaskRoute.REST)
    model.row_written(record.row_id, True)
    panel.row_written(record.row_id, True)
    model.close()
    panel.close_panel()
    small.close()
    # nothing is left to fire, and a late write or flush reads nothing from the closed store
    assert not model._flush_timer.isActive() and not panel._sessions_timer.isActive()
    model.row_written(record.row_id, False)
    model.flush()
    assert model.rowCount() == 0 and not model._flush_timer.isActive()


def test_a_closed_log_repaints_without_reading_the_closed_store(tmp_path: Path, qtbot: Any) -> None:
    """The window is deleted after the store has closed (later, by Qt): a repaint meanwhile
    of rows that are no longer in the model's cache must not read from the closed store."""
    small = TaskLogStore(tmp_path / "closing.sqlite3")
    model = LogModel(small)
    panel = LogPanel(model, sessions=lambda: [], exporter=lambda *_: 0)
    qtbot.addWidget(panel)
    rows = small.add_many(
        [f"Line {i}." for i in range(1_200)], session_id="s-a", voice_id="v1",
        route=TaskRoute.REST,
    )  # fmt: skip
    for record in rows:
        model.row_written(record.row_id, True)
    qtbot.waitUntil(lambda: model.rowCount() == 1_200)  # shown over a few frames
    model.close()
    panel.close_panel()
    small.close()
    panel.show()
    qtbot.waitExposed(panel)
    panel.table.scrollToTop()  # the first rows: read the longest ago, out of the cache
    panel.table.viewport().repaint()
    assert model.rowCount() == 0


def test_a_burst_of_rows_is_shown_over_frames_in_order(tmp_path: Path, qtbot: Any) -> None:
    """A pasted script logs hundreds of rows at once: each frame shows at most FLUSH_MOST of
    them (one long turn of the loop otherwise), oldest first, so the table ends in order."""
    from avaturn_desktop.ui.log_model import FLUSH_MOST

    small = TaskLogStore(tmp_path / "burst.sqlite3")
    model = LogModel(small)
    rows = small.add_many(
        [f"Line {i}." for i in range(5 * FLUSH_MOST + 3)], session_id="s-a", voice_id="v1",
        route=TaskRoute.REST,
    )  # fmt: skip
    for record in rows:
        model.row_written(record.row_id, True)
    sizes: list[int] = []
    model.rowsInserted.connect(lambda *_: sizes.append(model.rowCount()))
    model.flush()
    assert model.rowCount() == FLUSH_MOST
    qtbot.waitUntil(lambda: model.rowCount() == len(rows))
    assert all(b - a <= FLUSH_MOST for a, b in itertools.pairwise([0, *sizes]))
    assert [model.row_id(r) for r in range(model.rowCount())] == [r.row_id for r in rows]
    model.close()
    small.close()


def test_a_written_row_is_shown_half_a_frame_later_and_a_burst_a_frame_at_a_time(
    tmp_path: Path, qtbot: Any
) -> None:
    """A single row is drawn FIRST_FLUSH_MS after its write (while the avatar says the line,
    not when the next one comes); the rest of a burst follows a frame at a time."""
    from avaturn_desktop.ui.frames import FRAME_MS
    from avaturn_desktop.ui.log_model import FIRST_FLUSH_MS, FLUSH_MOST

    small = TaskLogStore(tmp_path / "soon.sqlite3")
    model = LogModel(small)
    record = small.add(session_id="s-a", text="One line.", voice_id="v1", route=TaskRoute.REST)
    model.row_written(record.row_id, True)
    timer = model._flush_timer
    assert timer.isActive() and timer.interval() == FIRST_FLUSH_MS < FRAME_MS
    qtbot.waitUntil(lambda: model.rowCount() == 1)
    rows = small.add_many(
        [f"Line {i}." for i in range(FLUSH_MOST + 1)], session_id="s-a", voice_id="v1",
        route=TaskRoute.REST,
    )  # fmt: skip
    for row in rows:
        model.row_written(row.row_id, True)
    model.flush()
    assert timer.isActive() and timer.interval() == FRAME_MS  # the rest: the next frame
    qtbot.waitUntil(lambda: model.rowCount() == len(rows) + 1)
    model.close()
    small.close()
