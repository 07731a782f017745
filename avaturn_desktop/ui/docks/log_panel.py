"""The task log dock: every line said, filtered by session and state, searchable, exportable.

Ctrl+C copies the selected rows (tab-separated, with a header). Past sessions are in the
session filter after a restart: the panel reads the same database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from PySide6.QtCore import QItemSelectionModel, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core.paths import data_dir
from avaturn_desktop.core.tasks import TaskState
from avaturn_desktop.ui.frames import unshaped_text
from avaturn_desktop.ui.log_model import Column, LogModel
from avaturn_desktop.ui.status_text import StatusText

log = logging.getLogger("avaturn.ui")

SEARCH_DELAY_MS: Final = 250
SESSIONS_CHECK_MS: Final = 1000
FORMATS: Final = (("csv", "CSV"), ("jsonl", "JSONL"), ("srt", "SRT subtitles"))
#: ``(path, format, session_id or None) -> rows written``
Exporter = Callable[[Path, str, str | None], int]


class ExportDialog:
    """Asks where to save an export (tests replace ``ask``)."""

    @classmethod
    def ask(cls, parent: QWidget | None, fmt: str, suggested: Path) -> Path | None:
        name, _ = QFileDialog.getSaveFileName(
            parent, f"Export the task log as {fmt.upper()}", str(suggested), f"*.{fmt}"
        )
        return Path(name) if name else None


_COLUMN_WIDTHS = {
    Column.TEXT: 320,
    Column.SESSION: 90,
    Column.SENT: 170,
    Column.TASK_ID: 90,
    Column.ROUTE: 45,
    Column.VOICE: 90,
    Column.STATE: 110,
    Column.LATENCY: 85,
    Column.DURATION: 85,
}


class RowNumbers(QHeaderView):
    """The row numbers beside the log, as wide as the largest number. Qt sizes a header by
    asking the model for the header data of up to two hundred sections, each a call into
    Python, after every insertion: the width comes from the row count instead."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Vertical, parent)

    def sizeHint(self) -> QSize:
        digits = len(str(max(1, self.count())))
        width = self.fontMetrics().horizontalAdvance("0" * digits) + 12
        return QSize(width, self.defaultSectionSize())


class LogPanel(QWidget):
    #: The text of a row to queue again.
    resend_requested = Signal(str)
    #: ``(path, rows)`` after an export was written.
    exported = Signal(object, int)

    def __init__(
        self,
        model: LogModel,
        *,
        sessions: Callable[[], list[str]],
        exporter: Exporter,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("log_panel")
        self.model = model
        self._sessions = sessions
        self._exporter = exporter

        self.session_combo = QComboBox()
        self.session_combo.setObjectName("log.session")
        self.session_combo.setMinimumContentsLength(16)
        self.state_combo = QComboBox()
        self.state_combo.setObjectName("log.state")
        self.state_combo.addItem("All states", None)
        for state in TaskState:
            self.state_combo.addItem(state.value, state.value)
        self.search = QLineEdit()
        self.search.setObjectName("log.search")
        self.search.setPlaceholderText("Search the text…")
        self.search.setClearButtonEnabled(True)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)

        self.table = QTableView()
        unshaped_text(self.table)
        self.table.setObjectName("log.table")
        self.table.setModel(model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setVerticalHeader(RowNumbers(self.table))
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(40)
        # Narrow ids and figures so the text, the column people read, gets the room.
        for column, width in _COLUMN_WIDTHS.items():
            self.table.setColumnWidth(column, width)
        self.copy_shortcut = QShortcut(QKeySequence.StandardKey.Copy, self.table)
        self.copy_shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)

        self.count_label = StatusText()  # changes with each row: never relays the window out
        self.count_label.setObjectName("log.count")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the selected rows (Ctrl+C)")
        self.resend_button = QPushButton("Re-send")
        self.resend_button.setToolTip("Queue the selected rows' text again")
        self.export_buttons: dict[str, QPushButton] = {}
        for fmt, label in FORMATS:
            button = QPushButton(f"Export {label}…")
            button.setToolTip(f"Export the log (the chosen session, or all) as {label}")
            button.clicked.connect(lambda _=False, f=fmt: self.export(f))
            self.export_buttons[fmt] = button

        filters = QHBoxLayout()
        filters.addWidget(QLabel("Session:"))
        filters.addWidget(self.session_combo)
        filters.addWidget(QLabel("State:"))
        filters.addWidget(self.state_combo)
        filters.addWidget(self.search, 1)
        actions = QHBoxLayout()
        actions.addWidget(self.count_label, 1)
        actions.addWidget(self.copy_button)
        actions.addWidget(self.resend_button)
        for button in self.export_buttons.values():
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addLayout(actions)

        self.refresh_sessions()
        self.session_combo.currentIndexChanged.connect(self.apply_filter)
        self.state_combo.currentIndexChanged.connect(self.apply_filter)
        self.search.textChanged.connect(self._search_timer.start)
        self._search_timer.timeout.connect(self.apply_filter)
        self.copy_shortcut.activated.connect(self.copy_selection)
        self.copy_button.clicked.connect(self.copy_selection)
        self.resend_button.clicked.connect(self.resend_selection)
        model.modelReset.connect(self._update_count)
        self._follow_end = True
        self._sessions_timer = QTimer(self)
        self._sessions_timer.setSingleShot(True)
        self._sessions_timer.setInterval(SESSIONS_CHECK_MS)
        self._sessions_timer.timeout.connect(self._check_sessions)
        model.rowsAboutToBeInserted.connect(self._before_rows_inserted)
        model.rowsInserted.connect(self._on_rows_inserted)
        model.rowsRemoved.connect(self._update_count)
        self._update_count()

    # -- filter ------------------------------------------------------------------------------

    def refresh_sessions(self) -> None:
        """Fill the session filter from the log (past sessions included), keeping the choice."""
        current = self.session_combo.currentData()
        self.session_combo.blockSignals(True)
        try:
            self.session_combo.clear()
            self.session_combo.addItem("All sessions", None)
            for session_id in self._sessions():
                self.session_combo.addItem(session_id, session_id)
            index = self.session_combo.findData(current)
            self.session_combo.setCurrentIndex(max(0, index))
        finally:
            self.session_combo.blockSignals(False)

    def row_written(self, row_id: int, new: bool) -> None:
        """A row was added: a session not in the filter yet gets its entry (checked at most
        once a second while rows are added: the check reads the sessions from SQLite, and a
        script fired cue by cue adds rows dozens of times a second)."""
        if new and not self._sessions_timer.isActive():
            self._sessions_timer.start()

    def close_panel(self) -> None:
        """The app is closing: no more looks at the store (it closes after the window)."""
        self._sessions_timer.stop()
        self._search_timer.stop()

    def _check_sessions(self) -> None:
        shown = {self.session_combo.itemData(i) for i in range(self.session_combo.count())}
        if any(session_id not in shown for session_id in self._sessions()):
            self.refresh_sessions()

    def apply_filter(self) -> None:
        self._search_timer.stop()
        session_id = self.session_combo.currentData()
        state = self.state_combo.currentData()
        self.model.set_filter(
            session_id=session_id if isinstance(session_id, str) else None,
            states=None if state is None else [TaskState(state)],
            search=self.search.text().strip(),
        )

    def _before_rows_inserted(self) -> None:
        bar = self.table.verticalScrollBar()
        self._follow_end = bar.value() >= bar.maximum() - 2

    def _on_rows_inserted(self) -> None:
        # The model shows written rows a frame at a time, so this runs at most a few times a
        # frame: following the end right away makes the insertion and the scroll one repaint
        # of the table, where a later scroll repainted it whole a second time.
        self._update_count()
        if self._follow_end:
            self.table.scrollToBottom()

    def _update_count(self) -> None:
        n = self.model.rowCount()
        self.count_label.setText(f"{n:,} row{'' if n == 1 else 's'}")

    # -- actions -----------------------------------------------------------------------------

    def selected_rows(self) -> list[int]:
        selection = self.table.selectionModel()
        return sorted({index.row() for index in selection.selectedRows()})

    def select_rows(self, rows: list[int]) -> None:
        selection = self.table.selectionModel()
        selection.clearSelection()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for row in rows:
            selection.select(self.model.index(row, 0), flags)

    def copy_selection(self) -> str:
        rows = self.selected_rows()
        if not rows:
            return ""
        text = self.model.as_text(rows)
        QGuiApplication.clipboard().setText(text)
        return text

    def resend_selection(self) -> None:
        for record in self.model.records(self.selected_rows()):
            self.resend_requested.emit(record.text)

    def export(self, fmt: str) -> Path | None:
        session_id = self.model.session_id
        suffix = f"-{session_id}" if session_id else ""
        suggested = data_dir() / "exports" / f"tasklog{suffix}.{fmt}"
        path = ExportDialog.ask(self, fmt, suggested)
        if path is None:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = self._exporter(path, fmt, session_id)
        except OSError as exc:
            self.count_label.setText(f"Export failed: {exc.strerror or exc}")
            log.warning("Export to %s failed: %s", path, exc)
            return None
        self.count_label.setText(f"Exported {rows} row(s) to {path.name}")
        self.exported.emit(path, rows)
        return path
