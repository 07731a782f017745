"""The task log as a Qt table model: lazy, filtered, and updated one row at a time.

The model holds only the matching row ids (one cheap query) and a small LRU cache of records,
fetched a page at a time when the view asks for a row it has not seen, so 100,000 rows cost a
list of ints and the few pages on screen. A change to one row (from the speech queue) updates
that row alone; a new row is appended when it matches the filter.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Collection, Sequence
from datetime import datetime
from enum import IntEnum
from typing import Any, Final

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtGui import QBrush, QColor

from avaturn_desktop.core.tasks import TaskRecord, TaskState
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.frames import FRAME_MS, frame_timer

PAGE: Final = 200
#: Records (and their cells' texts) kept: five pages, several screens of rows either side of
#: the one in view; a page further away is read again in one query (about a millisecond).
CACHE_ROWS: Final = 1_000
#: The most rows one flush shows (read, inserted, laid out, drawn): a pasted script's
#: hundreds of rows are shown over a few frames rather than in one long turn of the loop.
FLUSH_MOST: Final = 40
#: How long after a write, the table being up to date, the row is shown (ms): half a frame.
#: The request that sends the line has left by then (its send is 2-3 ms, p99 under 8), and
#: the table's redraw (a full relayout and repaint when a row is added: 3-9 ms) falls while
#: the avatar says the line, not a frame later, when the line has often ended and the next
#: one (a script's, a Stream Deck's) is being read: that collision was the control API's
#: slowest says (p99 12-18 -> 5-6 ms over 200 says).
FIRST_FLUSH_MS: Final = 8

# Item roles and columns as plain ints: data() runs per cell and role at every repaint.
_DISPLAY: Final = int(Qt.ItemDataRole.DisplayRole)
_TOOLTIP: Final = int(Qt.ItemDataRole.ToolTipRole)
_FOREGROUND: Final = int(Qt.ItemDataRole.ForegroundRole)
_ALIGNMENT: Final = int(Qt.ItemDataRole.TextAlignmentRole)
_USER: Final = int(Qt.ItemDataRole.UserRole)
_RIGHT: Final = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

_Index = QModelIndex | QPersistentModelIndex


class Column(IntEnum):
    SESSION = 0
    SENT = 1
    TEXT = 2
    TASK_ID = 3
    ROUTE = 4
    VOICE = 5
    STATE = 6
    LATENCY = 7
    DURATION = 8
    AVATAR = 9


HEADERS: Final = (
    "Session",
    "Time sent",
    "Text",
    "Task id",
    "Route",
    "Voice",
    "State",
    "Latency (ms)",
    "Duration (s)",
    "Avatar",
)

_TEXT_COLUMN: Final = int(Column.TEXT)
_STATE_COLUMN: Final = int(Column.STATE)
_RIGHT_COLUMNS: Final = frozenset((int(Column.LATENCY), int(Column.DURATION)))

_STATE_COLOURS: Final = {
    TaskState.SPOKEN: QColor("#2e7d32"),
    TaskState.SPEAKING: QColor("#1565c0"),
    TaskState.CANCELLED: QColor("#8d6e00"),
    TaskState.FAILED: QColor("#c62828"),
}


def format_time(t: float | None) -> str:
    if t is None:
        return ""
    stamp = datetime.fromtimestamp(t)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def state_text(record: TaskRecord) -> str:
    return f"{record.state.value} ({record.reason})" if record.reason else record.state.value


class SlotNames:
    """Which avatar said a session's lines ("Avatar 2 · jane_20240829"), from the session
    registry, read again when a session it does not know shows up."""

    def __init__(self, store: TaskLogStore) -> None:
        self._store = store
        self._known: dict[str, tuple[int | None, str]] = {}

    def __call__(self, session_id: str) -> str:
        found = self._known.get(session_id)
        if found is None:
            self._known = self._store.slots_by_session()
            found = self._known.get(session_id)
            if found is None:
                self._known[session_id] = (None, "")
                return ""
        slot, avatar = found
        return avatar if slot is None else f"Avatar {slot + 1} · {avatar}"


def cell(record: TaskRecord, column: Column, who: SlotNames | None = None) -> str:
    """The text of one cell (also what Copy puts on the clipboard)."""
    if column is Column.AVATAR:
        return "" if who is None else who(record.session_id)
    if column is Column.SESSION:
        return record.session_id
    if column is Column.SENT:
        return format_time(record.sent_at)
    if column is Column.TEXT:
        return record.text
    if column is Column.TASK_ID:
        return record.task_id or ""
    if column is Column.ROUTE:
        return record.route.value
    if column is Column.VOICE:
        return record.voice_id or ""
    if column is Column.STATE:
        return state_text(record)
    if column is Column.LATENCY:
        latency = record.latency_ms
        return "" if latency is None else f"{latency:.0f}"
    duration = record.duration_s
    return "" if duration is None else f"{duration:.2f}"


class LogModel(QAbstractTableModel):
    """Rows of a :class:`TaskLogStore`, filtered by session, state and text."""

    def __init__(self, store: TaskLogStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._session_id: str | None = None
        self._states: frozenset[TaskState] | None = None
        self._search = ""
        self._ids: list[int] = []
        self._cache: OrderedDict[int, TaskRecord] = OrderedDict()
        #: row id -> (the record, its cells' texts), for repaints
        self._texts: dict[int, tuple[TaskRecord, tuple[str, ...]]] = {}
        #: The Avatar column: which slot and avatar ran each row's session.
        self.who = SlotNames(store)
        #: How many pages were read from the store (for tests and the curious).
        self.pages_read = 0
        #: Rows written and not shown yet (see :meth:`row_written`), in a dict for order.
        self._pending: dict[int, None] = {}
        # Half a frame after the first write, not the next loop turn: the request that sends
        # a line leaves before its row is drawn, and a burst of writes is one redraw (then one
        # a frame, see flush).
        self._flush_timer = frame_timer(self, self.flush, FIRST_FLUSH_MS)
        self._closed = False
        self.reload()

    # -- filter ----------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def states(self) -> frozenset[TaskState] | None:
        return self._states

    @property
    def search(self) -> str:
        return self._search

    def set_filter(
        self,
        *,
        session_id: str | None = None,
        states: Collection[TaskState] | None = None,
        search: str = "",
    ) -> None:
        self._session_id = session_id
        self._states = None if states is None else frozenset(states)
        self._search = search
        self.reload()

    def reload(self) -> None:
        """Read the matching ids again (after a filter change, or to see others' writes)."""
        if self._closed:  # the store may be closed already: a closed log stays empty
            return
        self._pending.clear()
        self.beginResetModel()
        self._ids = self._store.row_ids(
            session_id=self._session_id, states=self._states, search=self._search or None
        )
        self._cache.clear()
        self._texts.clear()
        self.endResetModel()

    def _matches(self, record: TaskRecord) -> bool:
        if self._session_id is not None and record.session_id != self._session_id:
            return False
        if self._states is not None and record.state not in self._states:
            return False
        return not self._search or self._search.casefold() in record.text.casefold()

    # -- live updates ----------------------------------------------------------------------

    def row_written(self, row_id: int, new: bool = False) -> None:
        """A row was added or changed in the store: shown within a frame.

        Writes come in bursts (a pasted script logs hundreds of rows at once, each line's
        state changes a few times): they are gathered and shown together by :meth:`flush`,
        reading the rows in one query and inserting new rows at the end as one block.
        """
        if self._closed:
            return
        self._cache.pop(row_id, None)
        self._pending[row_id] = None
        if not self._flush_timer.isActive():
            self._flush_timer.start(FIRST_FLUSH_MS)

    def close(self) -> None:
        """The app is closing: nothing more is read. The store closes before the window is
        deleted (later, by Qt), and a flush still due, or a repaint of rows no longer in the
        cache, would read from it: the model is emptied, so a repaint reads nothing."""
        self._closed = True
        self._flush_timer.stop()
        self._pending.clear()
        self.beginResetModel()
        self._ids.clear()
        self._cache.clear()
        self._texts.clear()
        self.endResetModel()

    def flush(self) -> None:
        """Show the rows written since the last flush (one row at a time, never a reset)."""
        if not self._pending or self._closed:
            return
        ids = sorted(self._pending)
        if len(ids) > FLUSH_MOST:
            ids = ids[:FLUSH_MOST]  # the oldest first: new rows still join at the end in order
            for row_id in ids:
                del self._pending[row_id]
            self._flush_timer.start(FRAME_MS)  # the rest in the next frame
        else:
            self._pending.clear()
        records = self._read(ids)
        tail: list[TaskRecord] = []  # new rows past the last shown one: one insert
        last = self._ids[-1] if self._ids else -1
        for record in records:
            if record.row_id > last and self._matches(record):
                tail.append(record)
            else:
                self._apply(record)
        if tail:
            start = len(self._ids)
            self.beginInsertRows(QModelIndex(), start, start + len(tail) - 1)
            for record in tail:
                self._ids.append(record.row_id)
                self._remember(record)
            self.endInsertRows()

    def _read(self, ids: list[int]) -> list[TaskRecord]:
        try:
            return self._store.get_many(ids)
        except KeyError:  # a row went away meanwhile: read the rest one by one
            found = []
            for row_id in ids:
                try:
                    found.append(self._store.get(row_id))
                except KeyError:
                    continue
            return found

    def _apply(self, record: TaskRecord) -> None:
        row_id = record.row_id
        pos = bisect.bisect_left(self._ids, row_id)
        present = pos < len(self._ids) and self._ids[pos] == row_id
        wanted = self._matches(record)
        if present and wanted:
            self._remember(record)
            self.dataChanged.emit(self.index(pos, 0), self.index(pos, len(Column) - 1))
        elif present:
            self.beginRemoveRows(QModelIndex(), pos, pos)
            del self._ids[pos]
            self.endRemoveRows()
        elif wanted:
            self.beginInsertRows(QModelIndex(), pos, pos)
            self._ids.insert(pos, row_id)
            self._remember(record)
            self.endInsertRows()

    # -- reading ---------------------------------------------------------------------------

    def row_id(self, row: int) -> int:
        return self._ids[row]

    def row_of(self, row_id: int) -> int | None:
        pos = bisect.bisect_left(self._ids, row_id)
        return pos if pos < len(self._ids) and self._ids[pos] == row_id else None

    def record(self, row: int) -> TaskRecord:
        row_id = self._ids[row]
        record = self._cache.get(row_id)
        if record is not None:
            self._cache.move_to_end(row_id)
            return record
        start = row - row % PAGE
        page = self._ids[start : start + PAGE]
        self.pages_read += 1
        found: TaskRecord | None = None
        for rec in self._store.get_many(page):
            self._remember(rec)
            if rec.row_id == row_id:
                found = rec
        assert found is not None
        return found

    def records(self, rows: Sequence[int]) -> list[TaskRecord]:
        return [self.record(r) for r in rows]

    def _remember(self, record: TaskRecord) -> None:
        self._cache[record.row_id] = record
        self._cache.move_to_end(record.row_id)
        while len(self._cache) > CACHE_ROWS:
            self._cache.popitem(last=False)

    def as_text(self, rows: Sequence[int]) -> str:
        """Tab-separated rows with a header line, for the clipboard."""
        lines = ["\t".join(HEADERS)]
        for record in self.records(sorted(set(rows))):
            cells = (
                cell(record, c, self.who).replace("\t", " ").replace("\n", " ") for c in Column
            )
            lines.append("\t".join(cells))
        return "\n".join(lines)

    # -- QAbstractTableModel ---------------------------------------------------------------

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._ids)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Column)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return HEADERS[section] if 0 <= section < len(HEADERS) else None
        return str(section + 1)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._ids):
            return None
        return self._value(index.row(), index.column(), int(role))

    def multiData(self, index: _Index, roleDataSpan: Any) -> None:
        """Every role a cell is painted with, in one call (Qt would otherwise call
        :meth:`data` once per role: seven calls into Python per cell, per repaint)."""
        if not index.isValid() or not 0 <= index.row() < len(self._ids):
            return
        row, column = index.row(), index.column()
        for role_data in roleDataSpan:
            value = self._value(row, column, role_data.role())
            if value is not None:
                role_data.setData(value)

    def _value(self, row: int, column: int, role: int) -> Any:
        if role in (_DISPLAY, _TOOLTIP):
            text = self._cells(row)[column]
            if role == _DISPLAY and column == _TEXT_COLUMN and len(text) > 200:
                return text[:199] + "…"
            return text
        if role == _FOREGROUND and column == _STATE_COLUMN:
            colour = _STATE_COLOURS.get(self.record(row).state)
            return None if colour is None else QBrush(colour)
        if role == _ALIGNMENT and column in _RIGHT_COLUMNS:
            return _RIGHT
        if role == _USER:
            return self._ids[row]
        return None

    def _cells(self, row: int) -> tuple[str, ...]:
        """The texts of a row's cells, made once per version of its record."""
        record = self.record(row)
        made = self._texts.get(record.row_id)
        if made is not None and made[0] is record:
            return made[1]
        texts = tuple(cell(record, column, self.who) for column in Column)
        self._texts[record.row_id] = (record, texts)
        if len(self._texts) > CACHE_ROWS:
            self._texts.pop(next(iter(self._texts)))
        return texts
