"""The speech queue, visible: every item with its state; edit what is not sent yet.

Keys in the list: Delete removes, Alt+Up / Alt+Down move (items not yet sent only). An item
waiting after a 429 counts down to its next try; *Send now* skips the wait. Retry on a line
that may already have been spoken asks first. Errors of the queue's sender are shown above
the list.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core.queue import ChangeKind, ItemState, QueueChange, QueueItem
from avaturn_desktop.ui.frames import frame_timer, row_runs, unshaped_text
from avaturn_desktop.ui.status_text import StatusText

if TYPE_CHECKING:
    from avaturn_desktop.ui.speaking import QueuePresenter

_Index = QModelIndex | QPersistentModelIndex
_ROOT: Final = QModelIndex()

_COLOURS: Final = {
    ItemState.SENDING: QColor("#1565c0"),
    ItemState.SPEAKING: QColor("#1565c0"),
    ItemState.SPOKEN: QColor("#2e7d32"),
    ItemState.CANCELLED: QColor("#8d6e00"),
    ItemState.FAILED: QColor("#c62828"),
}


def describe(item: QueueItem, now: float | None = None) -> str:
    """One line for the list: state (and why), then the text. ``now`` (the queue's clock,
    unix seconds) turns a wait after a 429 into a countdown."""
    if item.held:
        state = "held (no live session)"
    elif item.retry_at is not None:
        left = max(0, math.ceil(item.retry_at - (time.time() if now is None else now)))
        state = f"waiting: the service is busy; sending again in {left} s"
    elif item.reason:
        state = f"{item.state.value}: {item.reason}"
    else:
        state = item.state.value
    text = item.text if len(item.text) <= 120 else item.text[:119] + "…"
    return f"[{state}] {text}"


class RetryUnclearDialog:
    """Asks before sending again a line that may already have been spoken (tests replace
    ``ask``)."""

    @classmethod
    def ask(cls, parent: QWidget | None, text: str) -> bool:
        shown = text if len(text) <= 200 else text[:199] + "…"
        answer = QMessageBox.question(
            parent,
            "Send again?",
            f"This line may already have been spoken (its send got no clear answer):\n\n"
            f"{shown}\n\nSend it again only if the avatar did not say it. Send it again?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes


class QueueModel(QAbstractListModel):
    """The queue's items as rows, kept in step with the queue's changes a frame at a time.

    Changes are only noted as they come (:meth:`note`, O(1)); :meth:`flush` shows them, at
    most once a frame: a changed item redraws its own row, and items added, removed or moved
    become row insertions, removals or one layout change. Nothing resets the model, so a
    thousand queued lines are one insertion and a line changing state repaints one row, never
    the whole list. (Items are kept here, not in Qt item data: PySide6 6.12's
    ``QListWidgetItem.setData`` leaks a reference to None per call.)"""

    def __init__(self, presenter: QueuePresenter, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._presenter = presenter
        self._items: list[QueueItem] = list(presenter.items)
        self._rows: dict[int, int] = {}
        self._reindex()
        #: item id -> its latest snapshot, changed since the last flush
        self._changed: dict[int, QueueItem] = {}
        #: items were added, removed or moved since the last flush
        self._structure = False
        self._waits = {item.item_id for item in self._items if item.retry_at is not None}
        #: how many items are in each state (kept change by change, for the summary)
        self.counts: Counter[ItemState] = Counter(item.state for item in self._items)
        #: how many items wait set aside by a Stop
        self.aside = sum(1 for item in self._items if item.set_aside)

    def rowCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        item = self.item_at(index.row())
        return None if item is None else _value(item, int(role))

    def multiData(self, index: _Index, roleDataSpan: Any) -> None:
        """Every role a row is painted with, in one call into Python instead of one a role."""
        item = self.item_at(index.row())
        if item is None:
            return
        for role_data in roleDataSpan:
            value = _value(item, role_data.role())
            if value is not None:
                role_data.setData(value)

    def item_at(self, row: int) -> QueueItem | None:
        return self._items[row] if 0 <= row < len(self._items) else None

    def row_of(self, item_id: int) -> int | None:
        return self._rows.get(item_id)

    @property
    def items(self) -> list[QueueItem]:
        """The items as shown (read-only)."""
        return self._items

    @property
    def pending(self) -> bool:
        """Changes noted and not shown yet."""
        return self._structure or bool(self._changed)

    def note(self, change: QueueChange) -> None:
        """Remember a change of the queue, to show at the next :meth:`flush`."""
        item = change.item
        if change.kind in (ChangeKind.ADDED, ChangeKind.REMOVED, ChangeKind.MOVED):
            self._structure = True
        if item is None or change.kind is ChangeKind.REMOVED:
            return
        if item.item_id not in self._rows:
            self._structure = True  # not shown yet (added since the last flush)
        self._changed[item.item_id] = item

    def flush(self) -> set[int]:
        """Show the changes noted since the last flush; the ids of the items redrawn."""
        if self._structure:
            self._structure = False
            changed, self._changed = self._changed, {}
            return self._sync(self._presenter.item_ids, changed)
        changed, self._changed = self._changed, {}
        redrawn: set[int] = set()
        for item_id, item in changed.items():
            row = self._rows.get(item_id)
            if row is None:
                continue
            old = self._items[row]
            self.counts[old.state] -= 1
            self.counts[item.state] += 1
            self.aside += int(item.set_aside) - int(old.set_aside)
            self._items[row] = item
            self._track_wait(item)
            redrawn.add(item_id)
            index = self.index(row)
            self.dataChanged.emit(index, index)
        return redrawn

    def _sync(self, ids: tuple[int, ...], changed: dict[int, QueueItem]) -> set[int]:
        """Become the queue's items, in the order of ``ids``, by removing, inserting and
        (rarely) reordering rows; the rows of the items in ``changed`` (their latest noted
        snapshots) are redrawn.

        Only the queue's ids are read, not a snapshot of every item: a row keeps its item
        until a change of it is noted, as between structural changes. Making a snapshot of
        each of a thousand items cost ~4 ms a frame while a long text was queued a slice a
        turn, the better part of a frame with the rows' own drawing."""
        shown = {item.item_id: item for item in self._items}
        latest = (changed.get(i) or shown.get(i) or self._presenter.queue.item(i) for i in ids)
        items = tuple(item for item in latest if item is not None)
        wanted = {item.item_id for item in items}
        gone = [row for row, item in enumerate(self._items) if item.item_id not in wanted]
        for first, last in reversed(row_runs(gone)):
            self.beginRemoveRows(_ROOT, first, last)
            del self._items[first : last + 1]
            self.endRemoveRows()
        kept = [item.item_id for item in self._items]
        known = set(kept)
        if [item.item_id for item in items if item.item_id in known] != kept:
            self._reorder(items, known)
        else:
            row = 0
            pos = 0
            while pos < len(items):
                if items[pos].item_id in known:
                    row += 1
                    pos += 1
                    continue
                end = pos
                while end < len(items) and items[end].item_id not in known:
                    end += 1
                self.beginInsertRows(_ROOT, row, row + end - pos - 1)
                self._items[row:row] = items[pos:end]
                self.endInsertRows()
                row += end - pos
                pos = end
        self._items = list(items)
        self._reindex()
        redrawn: set[int] = set()
        for item_id in changed:
            at = self._rows.get(item_id)
            if at is not None:
                redrawn.add(item_id)
                index = self.index(at)
                self.dataChanged.emit(index, index)
        self._waits = {item.item_id for item in items if item.retry_at is not None}
        self.counts = Counter(item.state for item in items)
        self.aside = sum(1 for item in items if item.set_aside)
        return redrawn

    def _reorder(self, items: tuple[QueueItem, ...], known: set[int]) -> None:
        """Items moved (a person reordered them): one layout change, the selection kept."""
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        ids = [self._items[index.row()].item_id for index in persistent]
        # new items first go where they belong, then every row is where the queue has it
        self._items = [item for item in items if item.item_id in known]
        self._reindex()
        self.changePersistentIndexList(
            persistent, [self.index(self._rows[item_id]) for item_id in ids]
        )
        self.layoutChanged.emit()
        for pos, item in enumerate(items):
            if item.item_id not in known:
                self.beginInsertRows(_ROOT, pos, pos)
                self._items.insert(pos, item)
                self.endInsertRows()

    def _reindex(self) -> None:
        self._rows = {item.item_id: row for row, item in enumerate(self._items)}

    def _track_wait(self, item: QueueItem) -> None:
        if item.retry_at is None:
            self._waits.discard(item.item_id)
        else:
            self._waits.add(item.item_id)

    def redraw_waits(self) -> bool:
        """Redraw the items counting down after a 429; False when none is."""
        for item_id in self._waits:
            row = self._rows.get(item_id)
            if row is not None:
                index = self.index(row)
                self.dataChanged.emit(index, index)
        return bool(self._waits)


_DISPLAY: Final = int(Qt.ItemDataRole.DisplayRole)
_FOREGROUND: Final = int(Qt.ItemDataRole.ForegroundRole)
_TOOLTIP: Final = int(Qt.ItemDataRole.ToolTipRole)


def _value(item: QueueItem, role: int) -> Any:
    if role == _DISPLAY:
        return describe(item)
    if role == _FOREGROUND:
        colour = _COLOURS.get(item.state)
        return QBrush(colour) if colour is not None else None
    if role == _TOOLTIP:
        return item.text
    return None


def _set_text(label: QLabel, text: str) -> None:
    """A label's text, set only when it changes (a new text lays the window out again)."""
    if label.text() != text:
        label.setText(text)


class QueueList(QTableView):
    """The items, one a row, as a one-column table: a ``QListView`` lays out every row again
    and repaints itself whole on any ``dataChanged`` (its list mode does), so each line
    changing state redrew the whole list; a table repaints the changed row only."""

    remove_requested = Signal()
    move_requested = Signal(int)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
        if key == Qt.Key.Key_Delete:
            self.remove_requested.emit()
        elif alt and key == Qt.Key.Key_Up:
            self.move_requested.emit(-1)
        elif alt and key == Qt.Key.Key_Down:
            self.move_requested.emit(1)
        else:
            super().keyPressEvent(event)
            return
        event.accept()


class QueuePanel(QWidget):
    def __init__(self, presenter: QueuePresenter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("queue_panel")
        self._presenter = presenter
        self.model = QueueModel(presenter, self)
        self.list = QueueList()
        unshaped_text(self.list)
        self.list.setObjectName("queue.list")
        self.list.setModel(self.model)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.list.setShowGrid(False)
        self.list.setWordWrap(False)
        self.list.horizontalHeader().hide()
        self.list.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        rows = self.list.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.list.fontMetrics().height() + 4)
        #: Changes are shown at most once a frame (see :meth:`refresh`).
        self._refresh_timer = frame_timer(self, self.refresh)
        #: Ticks once a second while an item counts down after a 429.
        self._countdown = QTimer(self)
        self._countdown.setInterval(1000)
        self._countdown.timeout.connect(self._tick)
        self.error_label = QLabel()
        self.error_label.setObjectName("queue.error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        self.error_label.setVisible(False)
        self.summary = StatusText()  # changes with every line: no relayout of the window
        self.summary.setObjectName("queue.summary")
        self.paused_label = QLabel("Stopped: nothing more is sent until you resume.")
        self.paused_label.setStyleSheet("color: #c62828; font-weight: bold;")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Send the waiting items again")
        self.unfinished_label = QLabel()
        self.unfinished_label.setObjectName("queue.unfinished")
        self.unfinished_label.setWordWrap(True)
        self.again_button = QPushButton("Say them again")
        self.again_button.setObjectName("queue.again")
        self.again_button.setToolTip(
            "Queue the lines the ended session cut off or never started, ahead of what waits "
            "(each is said once more, from its start)"
        )
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected item (Delete)")
        self.up_button = QPushButton("Up")
        self.up_button.setToolTip("Move up (Alt+Up)")
        self.down_button = QPushButton("Down")
        self.down_button.setToolTip("Move down (Alt+Down)")
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Queue a failed or cancelled item again")
        self.skip_button = QPushButton("Send now")
        self.skip_button.setToolTip("Stop waiting for the busy service and send this item now")
        self.clear_button = QPushButton("Clear finished")

        paused = QHBoxLayout()
        paused.addWidget(self.paused_label, 1)
        paused.addWidget(self.resume_button)
        unfinished = QHBoxLayout()
        unfinished.addWidget(self.unfinished_label, 1)
        unfinished.addWidget(self.again_button)
        edit = QHBoxLayout()
        for button in (
            self.remove_button,
            self.up_button,
            self.down_button,
            self.skip_button,
            self.retry_button,
            self.clear_button,
        ):
            edit.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(paused)
        layout.addLayout(unfinished)
        layout.addWidget(self.error_label)
        layout.addWidget(self.list, 1)
        layout.addLayout(edit)
        layout.addWidget(self.summary)

        self.list.remove_requested.connect(self.remove_selected)
        self.list.move_requested.connect(self.move_selected)
        self.list.selectionModel().currentChanged.connect(self._update_buttons)
        self.remove_button.clicked.connect(self.remove_selected)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(1))
        self.retry_button.clicked.connect(self.retry_selected)
        self.skip_button.clicked.connect(self.skip_selected)
        self.clear_button.clicked.connect(presenter.clear_finished)
        self.resume_button.clicked.connect(presenter.resume)
        self.again_button.clicked.connect(presenter.say_unfinished_again)
        presenter.changed.connect(self._on_change)
        self.refresh()

    # -- rendering ---------------------------------------------------------------------------

    def _on_change(self, change: QueueChange) -> None:
        if change.kind is ChangeKind.ERROR:
            self.error_label.setText(change.message or "The speech queue hit an error.")
            self.error_label.setVisible(True)
        self.model.note(change)
        # Shown together within a frame: a burst of changes is one repaint, not one each.
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def refresh(self) -> None:
        """Show the changes now (they are otherwise gathered and shown once a frame)."""
        self._refresh_timer.stop()
        follow = self._current_id() is None and self._at_bottom()
        rows = self.model.rowCount()
        redrawn = self.model.flush()
        if follow and self.model.rowCount() > rows:
            self.list.scrollToBottom()
        paused = self._presenter.paused
        aside = self.model.aside
        if paused:
            _set_text(self.paused_label, "Stopped: nothing more is sent until you resume.")
        elif aside:
            _set_text(
                self.paused_label,
                f"Stopped: {aside} waiting {'line was' if aside == 1 else 'lines were'} set "
                "aside (Resume says them, Remove drops them).",
            )
        stopped = paused or bool(aside)
        if self.paused_label.isVisibleTo(self) != stopped:
            self.paused_label.setVisible(stopped)
            self.resume_button.setVisible(stopped)
        unfinished = self._presenter.unfinished()
        if unfinished:
            _set_text(
                self.unfinished_label,
                f"The session ended before {unfinished} "
                f"{'line was' if unfinished == 1 else 'lines were'} said to the end.",
            )
        if self.unfinished_label.isVisibleTo(self) != bool(unfinished):
            self.unfinished_label.setVisible(bool(unfinished))
            self.again_button.setVisible(bool(unfinished))
        self._update_summary()
        if self.model.rowCount() != rows or self._current_id() in redrawn:
            self._update_buttons()
        self._tick()

    def _tick(self) -> None:
        """Redraw the countdowns; the timer runs only while something counts down."""
        if not self.model.redraw_waits():
            self._countdown.stop()
        elif not self._countdown.isActive():
            self._countdown.start()

    def _at_bottom(self) -> bool:
        bar = self.list.verticalScrollBar()
        return bar.value() >= bar.maximum() - 2

    def _update_summary(self) -> None:
        counts = self.model.counts
        waiting = counts[ItemState.WAITING]
        on_service = counts[ItemState.SENDING] + counts[ItemState.SENT] + counts[ItemState.SPEAKING]
        where = "" if self._presenter.live else " · no live session"
        text = f"{waiting} waiting · {on_service} with the avatar{where}"
        self.summary.setText(text)

    def _update_buttons(self) -> None:
        item = self.selected()
        editable = item is not None and item.editable
        self.remove_button.setEnabled(editable)
        self.up_button.setEnabled(editable)
        self.down_button.setEnabled(editable)
        self.retry_button.setEnabled(
            item is not None and item.state in (ItemState.FAILED, ItemState.CANCELLED)
        )
        self.skip_button.setEnabled(item is not None and item.retry_at is not None)

    def _current_id(self) -> int | None:
        item = self.model.item_at(self.list.currentIndex().row())
        return None if item is None else item.item_id

    def _select_row(self, row: int) -> None:
        if 0 <= row < self.model.rowCount():
            self.list.setCurrentIndex(self.model.index(row))

    # -- editing -----------------------------------------------------------------------------

    def selected(self) -> QueueItem | None:
        item_id = self._current_id()
        return None if item_id is None else self._presenter.queue.item(item_id)

    def remove_selected(self) -> None:
        item = self.selected()
        if item is not None and item.editable:
            row = self.list.currentIndex().row()
            self._presenter.remove(item.item_id)
            self.refresh()
            self._select_row(min(row, self.model.rowCount() - 1))

    def move_selected(self, delta: int) -> None:
        item = self.selected()
        if item is not None and item.editable:
            self._presenter.move(item.item_id, delta)
            self.refresh()
            row = self.model.row_of(item.item_id)
            if row is not None:
                self._select_row(row)

    def retry_selected(self) -> None:
        item = self.selected()
        if item is None:
            return
        if not item.unclear:
            self._presenter.retry(item.item_id)
        elif RetryUnclearDialog.ask(self, item.text):
            self._presenter.queue.retry(item.item_id, confirm=True)

    def skip_selected(self) -> None:
        """Send the selected item now instead of waiting out the busy service."""
        item = self.selected()
        if item is not None and self._presenter.queue.skip_wait(item.item_id):
            self.refresh()
