"""The speech queue, visible: every item with its state; edit what is not sent yet.

Keys in the list: Delete removes, Alt+Up / Alt+Down move (items not yet sent only). An item
waiting after a 429 counts down to its next try; *Send now* skips the wait. Retry on a line
that may already have been spoken asks first. Errors of the queue's sender are shown above
the list.
"""

from __future__ import annotations

import math
import time
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
    QLabel,
    QListView,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core.queue import ChangeKind, ItemState, QueueChange, QueueItem

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
    """The queue's items as rows. A changed item is redrawn in place (O(1)); additions,
    removals and moves are gathered and applied in one reset at most every ``REFRESH_MS``, so a
    thousand queued lines cost one layout, not a thousand. (Items are kept here, not in Qt item
    data: PySide6 6.12's ``QListWidgetItem.setData`` leaks a reference to None per call.)"""

    REFRESH_MS: Final = 40

    def __init__(self, presenter: QueuePresenter, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._presenter = presenter
        self._items: list[QueueItem] = list(presenter.items)
        self._rows: dict[int, int] = {item.item_id: row for row, item in enumerate(self._items)}

    def rowCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        item = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return describe(item)
        if role == Qt.ItemDataRole.ToolTipRole:
            return item.text
        if role == Qt.ItemDataRole.ForegroundRole:
            colour = _COLOURS.get(item.state)
            return QBrush(colour) if colour is not None else None
        return None

    def item_at(self, row: int) -> QueueItem | None:
        return self._items[row] if 0 <= row < len(self._items) else None

    def row_of(self, item_id: int) -> int | None:
        return self._rows.get(item_id)

    def redraw_waits(self) -> bool:
        """Redraw the items counting down after a 429; False when none is."""
        rows = [row for row, item in enumerate(self._items) if item.retry_at is not None]
        for row in rows:
            index = self.index(row)
            self.dataChanged.emit(index, index)
        return bool(rows)

    def update_item(self, item: QueueItem) -> bool:
        """Redraw one known item in place; False when it is not shown (yet)."""
        row = self._rows.get(item.item_id)
        if row is None:
            return False
        self._items[row] = item
        index = self.index(row)
        self.dataChanged.emit(index, index)
        return True

    def reload(self) -> None:
        self.beginResetModel()
        self._items = list(self._presenter.items)
        self._rows = {item.item_id: row for row, item in enumerate(self._items)}
        self.endResetModel()


class QueueList(QListView):
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
        self._selected_id: int | None = None
        self.model = QueueModel(presenter, self)
        self.list = QueueList()
        self.list.setObjectName("queue.list")
        self.list.setModel(self.model)
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(QueueModel.REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        #: Ticks once a second while an item counts down after a 429.
        self._countdown = QTimer(self)
        self._countdown.setInterval(1000)
        self._countdown.timeout.connect(self._tick)
        self.error_label = QLabel()
        self.error_label.setObjectName("queue.error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        self.error_label.setVisible(False)
        self.summary = QLabel()
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
        self.model.modelReset.connect(self._restore_selection)
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
        item = change.item
        if change.kind is ChangeKind.ERROR:
            self.error_label.setText(change.message or "The speech queue hit an error.")
            self.error_label.setVisible(True)
        if item is not None and item.retry_at is not None and not self._countdown.isActive():
            self._countdown.start()
        if (
            item is not None
            and change.kind is ChangeKind.CHANGED
            and self.model.update_item(item)
            and item.item_id == self._current_id()
        ):
            self._update_buttons()
        # Structure and counts: gathered, then redrawn once.
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def refresh(self) -> None:
        """Redraw everything now (changes otherwise arrive gathered, within REFRESH_MS)."""
        self._refresh_timer.stop()
        self._selected_id = self._current_id()
        at_bottom = self._at_bottom()
        self.model.reload()
        if self._selected_id is None and at_bottom:
            self.list.scrollToBottom()
        paused = self._presenter.paused
        aside = sum(1 for item in self.model._items if item.set_aside)
        if paused:
            self.paused_label.setText("Stopped: nothing more is sent until you resume.")
        elif aside:
            self.paused_label.setText(
                f"Stopped: {aside} waiting {'line was' if aside == 1 else 'lines were'} set "
                "aside (Resume says them, Remove drops them)."
            )
        self.paused_label.setVisible(paused or bool(aside))
        self.resume_button.setVisible(paused or bool(aside))
        unfinished = self._presenter.unfinished()
        self.unfinished_label.setText(
            f"The session ended before {unfinished} "
            f"{'line was' if unfinished == 1 else 'lines were'} said to the end."
        )
        self.unfinished_label.setVisible(bool(unfinished))
        self.again_button.setVisible(bool(unfinished))
        self._update_summary()
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

    def _restore_selection(self) -> None:
        if self._selected_id is not None:
            row = self.model.row_of(self._selected_id)
            if row is not None:
                self.list.setCurrentIndex(self.model.index(row))

    def _update_summary(self) -> None:
        items = self.model._items
        waiting = sum(1 for i in items if i.state is ItemState.WAITING)
        on_service = sum(
            1 for i in items if i.state in (ItemState.SENDING, ItemState.SENT, ItemState.SPEAKING)
        )
        where = "" if self._presenter.live else " · no live session"
        self.summary.setText(f"{waiting} waiting · {on_service} with the avatar{where}")

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
            self._selected_id = None
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
