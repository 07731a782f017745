"""The speech queue, visible: every item with its state; edit what is not sent yet.

Keys in the list: Delete removes, Alt+Up / Alt+Down move (items not yet sent only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QKeyEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.services.speech_queue import ItemState, QueueChange, QueueItem

if TYPE_CHECKING:
    from avaturn_desktop.ui.speaking import QueuePresenter

_COLOURS: Final = {
    ItemState.SENDING: QColor("#1565c0"),
    ItemState.SPEAKING: QColor("#1565c0"),
    ItemState.SPOKEN: QColor("#2e7d32"),
    ItemState.CANCELLED: QColor("#8d6e00"),
    ItemState.FAILED: QColor("#c62828"),
}


def describe(item: QueueItem) -> str:
    """One line for the list: state (and why), then the text."""
    if item.held:
        state = "held (no live session)"
    elif item.reason:
        state = f"{item.state.value}: {item.reason}"
    else:
        state = item.state.value
    text = item.text if len(item.text) <= 120 else item.text[:119] + "…"
    return f"[{state}] {text}"


class QueueList(QListWidget):
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
        self.list = QueueList()
        self.list.setObjectName("queue.list")
        self.summary = QLabel()
        self.summary.setObjectName("queue.summary")
        self.paused_label = QLabel("Stopped: nothing more is sent until you resume.")
        self.paused_label.setStyleSheet("color: #c62828; font-weight: bold;")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Send the waiting items again")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected item (Delete)")
        self.up_button = QPushButton("Up")
        self.up_button.setToolTip("Move up (Alt+Up)")
        self.down_button = QPushButton("Down")
        self.down_button.setToolTip("Move down (Alt+Down)")
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Queue a failed or cancelled item again")
        self.clear_button = QPushButton("Clear finished")

        paused = QHBoxLayout()
        paused.addWidget(self.paused_label, 1)
        paused.addWidget(self.resume_button)
        edit = QHBoxLayout()
        for button in (
            self.remove_button,
            self.up_button,
            self.down_button,
            self.retry_button,
            self.clear_button,
        ):
            edit.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(paused)
        layout.addWidget(self.list, 1)
        layout.addLayout(edit)
        layout.addWidget(self.summary)

        self.list.remove_requested.connect(self.remove_selected)
        self.list.move_requested.connect(self.move_selected)
        self.list.currentItemChanged.connect(self._update_buttons)
        self.remove_button.clicked.connect(self.remove_selected)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(1))
        self.retry_button.clicked.connect(self.retry_selected)
        self.clear_button.clicked.connect(presenter.clear_finished)
        self.resume_button.clicked.connect(presenter.resume)
        presenter.changed.connect(self._on_change)
        self.refresh()

    # -- rendering ---------------------------------------------------------------------------

    def _on_change(self, change: QueueChange) -> None:
        item = change.item
        if item is not None and change.kind.value == "changed":
            row = self._row_of(item.item_id)
            if row is not None:
                self._render(self.list.item(row), item)
                self._update_summary()
                self._update_buttons()
                return
        self.refresh()

    def refresh(self) -> None:
        selected = self.selected()
        self.list.clear()
        for item in self._presenter.items:
            widget_item = QListWidgetItem()
            self._render(widget_item, item)
            self.list.addItem(widget_item)
            if selected is not None and item.item_id == selected.item_id:
                self.list.setCurrentItem(widget_item)
        if selected is None:
            self.list.scrollToBottom()
        paused = self._presenter.paused
        self.paused_label.setVisible(paused)
        self.resume_button.setVisible(paused)
        self._update_summary()
        self._update_buttons()

    def _render(self, widget_item: QListWidgetItem, item: QueueItem) -> None:
        widget_item.setText(describe(item))
        widget_item.setToolTip(item.text)
        widget_item.setData(Qt.ItemDataRole.UserRole, item)
        colour = _COLOURS.get(item.state)
        widget_item.setForeground(QBrush(colour) if colour is not None else QBrush())

    def _update_summary(self) -> None:
        items = self._presenter.items
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

    def _row_of(self, item_id: int) -> int | None:
        for row in range(self.list.count()):
            data = self.list.item(row).data(Qt.ItemDataRole.UserRole)
            if isinstance(data, QueueItem) and data.item_id == item_id:
                return row
        return None

    # -- editing -----------------------------------------------------------------------------

    def selected(self) -> QueueItem | None:
        current = self.list.currentItem()
        if current is None:
            return None
        data = current.data(Qt.ItemDataRole.UserRole)
        if not isinstance(data, QueueItem):
            return None
        latest = next((i for i in self._presenter.items if i.item_id == data.item_id), None)
        return latest

    def remove_selected(self) -> None:
        item = self.selected()
        if item is not None and item.editable:
            row = self.list.currentRow()
            self._presenter.remove(item.item_id)
            if self.list.count():
                self.list.setCurrentRow(min(row, self.list.count() - 1))

    def move_selected(self, delta: int) -> None:
        item = self.selected()
        if item is not None and item.editable:
            self._presenter.move(item.item_id, delta)
            row = self._row_of(item.item_id)
            if row is not None:
                self.list.setCurrentRow(row)

    def retry_selected(self) -> None:
        item = self.selected()
        if item is not None:
            self._presenter.retry(item.item_id)
