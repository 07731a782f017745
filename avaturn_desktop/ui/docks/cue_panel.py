"""The cue list: the script as cues with their states, the clock, and GO.

Keys in the list: Space is GO, double-click puts a cue on standby, F2 (or a click on the
selected cue's text) edits it in place (Edit mode only). Scripts (``.txt``, ``.md``) can be
dropped on the list. In Show mode nothing in the list can be changed.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QDragEnterEvent, QDropEvent, QFont, QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core.script import SCRIPT_SUFFIXES
from avaturn_desktop.services.cues import CueState, CueView
from avaturn_desktop.ui.frames import row_runs, unshaped_text
from avaturn_desktop.ui.status_text import StatusText

if TYPE_CHECKING:
    from avaturn_desktop.ui.show import CuePresenter

_Index = QModelIndex | QPersistentModelIndex
_ROOT: Final = QModelIndex()

COLUMNS: Final = ("#", "Section", "Cue", "Notes", "Time", "State")
COL_NUMBER, COL_SECTION, COL_TEXT, COL_NOTES, COL_TIME, COL_STATE = range(6)

_FOREGROUND: Final = {
    CueState.PLAYING: QColor("#1565c0"),
    CueState.WAITING: QColor("#1565c0"),
    CueState.DONE: QColor("#2e7d32"),
    CueState.STOPPED: QColor("#8d6e00"),
    CueState.SKIPPED: QColor("#757575"),
}
_STANDBY_BACKGROUND: Final = QColor("#fff3c4")
_PLAYING_BACKGROUND: Final = QColor("#dbeafe")
_GO_STYLE: Final = (
    "QPushButton { background: #2e7d32; color: white; font-weight: bold; font-size: 18px;"
    " padding: 8px 22px; } QPushButton:disabled { background: #9e9e9e; }"
)


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "–:––"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class CueModel(QAbstractTableModel):
    """The cues as rows. A new script (or an edit) resets the model; state changes only
    redraw the state and time columns."""

    def __init__(self, presenter: CuePresenter, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._presenter = presenter
        self._cues: list[CueView] = []
        self.editable = True

    def rowCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._cues)

    def columnCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def cue_at(self, row: int) -> CueView | None:
        return self._cues[row] if 0 <= row < len(self._cues) else None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        cue = self.cue_at(index.row()) if index.isValid() else None
        if cue is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(cue, column)
        if role == Qt.ItemDataRole.EditRole and column == COL_TEXT:
            return cue.source
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == COL_NOTES and cue.notes:
                return "\n".join(cue.notes)
            if column == COL_TEXT:
                return cue.text
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == COL_NOTES:
                return QBrush(QColor("#6d4c41"))
            colour = _FOREGROUND.get(cue.state)
            return QBrush(colour) if colour is not None else None
        if role == Qt.ItemDataRole.BackgroundRole:
            if cue.state is CueState.STANDBY:
                return QBrush(_STANDBY_BACKGROUND)
            if cue.state is CueState.PLAYING:
                return QBrush(_PLAYING_BACKGROUND)
        if role == Qt.ItemDataRole.FontRole and cue.state is CueState.STANDBY:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (COL_NUMBER, COL_TIME):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        return None

    def multiData(self, index: _Index, roleDataSpan: Any) -> None:
        """Every role a cell is painted with, in one call into Python instead of one a role."""
        for role_data in roleDataSpan:
            value = self.data(index, role_data.role())
            if value is not None:
                role_data.setData(value)

    @staticmethod
    def _display(cue: CueView, column: int) -> str:
        if column == COL_NUMBER:
            return str(cue.index + 1)
        if column == COL_SECTION:
            return cue.section or ""
        if column == COL_TEXT:
            return cue.text
        if column == COL_NOTES:
            return "\n".join(f"// {note}" for note in cue.notes)
        if column == COL_TIME:
            return clock_text(cue.estimate_s)
        state = cue.state
        if state is CueState.STANDBY:
            return "▶ standby"
        return "" if state is CueState.LATER else state.value

    def flags(self, index: _Index) -> Qt.ItemFlag:
        flags = super().flags(index)
        if self.editable and index.isValid() and index.column() == COL_TEXT:
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    def setData(self, index: _Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        cue = self.cue_at(index.row()) if index.isValid() else None
        if cue is None or role != Qt.ItemDataRole.EditRole or index.column() != COL_TEXT:
            return False
        text = str(value)
        if text == cue.source:
            return False
        return self._presenter.edit(cue.index, text)

    def refresh(self) -> bool:
        """Take the presenter's cues; True when the rows themselves changed (a reset).

        Only rows that look different are redrawn, as runs of rows: the player hands back
        the very view of a cue that did not change, and a view made again (the voice's
        measured pace moves every estimate a little with each line spoken) is redrawn only
        when its state or its time as shown changed. A GO changes a few rows of 200; a
        repaint of the whole list is milliseconds of the GUI thread."""
        cues = self._presenter.cues()
        old = self._cues
        same = len(cues) == len(old) and all(
            a is b
            or (a.text, a.source, a.section, a.notes) == (b.text, b.source, b.section, b.notes)
            for a, b in zip(cues, old, strict=True)
        )
        if not same:
            self.beginResetModel()
            self._cues = cues
            self.endResetModel()
            return True
        changed = [
            n
            for n, (a, b) in enumerate(zip(cues, old, strict=True))
            if a is not b and _shown(a) != _shown(b)
        ]
        self._cues = cues
        last = len(COLUMNS) - 1
        for first, end in row_runs(changed):
            self.dataChanged.emit(self.index(first, 0), self.index(end, last))
        return False


def _shown(cue: CueView) -> tuple[CueState, str]:
    """What a row shows that can change without a reset."""
    return cue.state, clock_text(cue.estimate_s)


class CueTextDelegate(QStyledItemDelegate):
    """Edits a cue's text as written, over several lines (Enter adds a line; the edit is
    taken when the editor loses focus, Esc drops it)."""

    def createEditor(
        self, parent: QWidget, _option: QStyleOptionViewItem, _index: _Index
    ) -> QWidget:
        editor = QPlainTextEdit(parent)
        editor.setObjectName("cues.editor")
        editor.setTabChangesFocus(True)
        return editor

    def setEditorData(self, editor: QWidget, index: _Index) -> None:
        if isinstance(editor, QPlainTextEdit):
            editor.setPlainText(str(index.data(Qt.ItemDataRole.EditRole) or ""))

    def setModelData(self, editor: QWidget, model: Any, index: _Index) -> None:
        if isinstance(editor, QPlainTextEdit):
            model.setData(index, editor.toPlainText(), Qt.ItemDataRole.EditRole)


def dropped_script(urls: list[Any]) -> Path | None:
    """The first local ``.txt`` / ``.md`` file among dropped URLs."""
    for url in urls:
        if url.isLocalFile():
            path = Path(url.toLocalFile())
            if path.suffix.lower() in SCRIPT_SUFFIXES:
                return path
    return None


class CueTable(QTableView):
    go_requested = Signal()
    standby_requested = Signal(int)
    script_dropped = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.doubleClicked.connect(lambda index: self.standby_requested.emit(index.row()))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.modifiers():
            self.go_requested.emit()
            event.accept()
            return
        super().keyPressEvent(event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if mime.hasUrls() and dropped_script(mime.urls()) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: Any) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = dropped_script(event.mimeData().urls()) if event.mimeData().hasUrls() else None
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.script_dropped.emit(str(path))


class CuePanel(QWidget):
    """The dock's widget: the GO bar, the clock and the cue list."""

    open_requested = Signal()

    #: Changes are gathered and drawn at most this often (states need no more than 10 a second).
    REFRESH_MS: Final = 100

    def __init__(self, presenter: CuePresenter, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("cue_panel")
        self._presenter = presenter
        self._shown_standby: int | None = None
        self._clocked_standby: int | None = -1
        self.model = CueModel(presenter, self)
        self.table = CueTable()
        unshaped_text(self.table)
        self.table.setObjectName("cues.table")
        self.table.setModel(self.model)
        self.table.setItemDelegateForColumn(COL_TEXT, CueTextDelegate(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        # Rows of two lines, columns of set widths: nothing is measured row by row, so a
        # 200-cue script costs no more to redraw than a short one (the full text is in the
        # tooltip, and the standby cue's above the list).
        self.table.setWordWrap(True)
        rows = self.table.verticalHeader()
        rows.setVisible(False)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.table.fontMetrics().lineSpacing() * 2 + 8)
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(36)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COL_TEXT, QHeaderView.ResizeMode.Stretch)
        em = self.table.fontMetrics().horizontalAdvance("0")
        for column, chars in ((COL_NUMBER, 5), (COL_SECTION, 14), (COL_NOTES, 24)):
            header.resizeSection(column, em * chars)
        header.resizeSection(COL_TIME, em * 7)
        header.resizeSection(COL_STATE, em * 12)

        self.go_button = QPushButton("GO")
        self.go_button.setObjectName("cues.go")
        self.go_button.setStyleSheet(_GO_STYLE)
        self.go_button.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Expanding)
        self.go_now_button = QPushButton("GO now")
        self.back_button = QPushButton("Back")
        self.skip_button = QPushButton("Skip")
        self.open_button = QPushButton("Open…")
        self.save_button = QPushButton("Save")
        self.reload_button = QPushButton("Reload")
        # changes with every GO: text that never lays the window out again
        self.standby_label = StatusText(lines=2, chars=40, rich=True)
        self.standby_label.setObjectName("cues.standby")
        self.clock_label = StatusText(chars=44)  # ticks every second: no relayout
        self.clock_label.setObjectName("cues.clock")
        self.file_label = QLabel()
        self.file_label.setObjectName("cues.file")

        steer = QVBoxLayout()
        for button in (self.go_now_button, self.back_button, self.skip_button):
            steer.addWidget(button)
        top = QHBoxLayout()
        top.addWidget(self.go_button)
        top.addLayout(steer)
        info = QVBoxLayout()
        info.addWidget(self.standby_label, 1)
        info.addWidget(self.clock_label)
        top.addLayout(info, 1)
        files = QHBoxLayout()
        files.addWidget(self.file_label, 1)
        for button in (self.open_button, self.save_button, self.reload_button):
            files.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addLayout(files)

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(self.REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._update_clock)
        self._clock.start()

        self.go_button.clicked.connect(presenter.go)
        self.go_now_button.clicked.connect(presenter.request_go_now)
        self.back_button.clicked.connect(presenter.back)
        self.skip_button.clicked.connect(presenter.skip)
        self.open_button.clicked.connect(self.open_requested)
        self.save_button.clicked.connect(presenter.save)
        self.reload_button.clicked.connect(presenter.reload)
        self.table.go_requested.connect(presenter.go)
        self.table.standby_requested.connect(presenter.set_standby)
        self.table.script_dropped.connect(presenter.open_path)
        presenter.changed.connect(self._schedule)
        self.set_editable(True)
        self.refresh()

    def _schedule(self) -> None:
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def refresh(self) -> None:
        """Redraw now (changes otherwise arrive gathered, within REFRESH_MS)."""
        self._refresh_timer.stop()
        reset = self.model.refresh()
        standby = self._presenter.standby
        cue = self.model.cue_at(standby) if standby is not None else None
        has_script = self.model.rowCount() > 0
        if cue is not None:
            where = f" · {cue.section}" if cue.section else ""
            self.standby_label.setText(
                f"<b>Standby {cue.index + 1}{html.escape(where)}:</b> {html.escape(cue.text)}"
            )
            if cue.index != self._shown_standby:
                self.table.scrollTo(self.model.index(cue.index, 0))
        elif has_script:
            self.standby_label.setText("<b>End of the script.</b> Back or double-click a cue.")
        else:
            self.standby_label.setText("No script: File → Open script, or drop a .txt or .md here.")
        self._shown_standby = standby
        for button in (self.go_button, self.go_now_button, self.skip_button):
            button.setEnabled(cue is not None)
        self.back_button.setEnabled(has_script)
        path = self._presenter.path
        dirty = " (edited, not saved)" if self._presenter.dirty else ""
        self.file_label.setText((path.name if path is not None else "") + dirty)
        self.file_label.setToolTip(str(path) if path is not None else "")
        self.save_button.setEnabled(self._editable and has_script)
        self.reload_button.setEnabled(self._editable and path is not None)
        if reset or standby != self._clocked_standby:
            self._clocked_standby = standby
            self._update_clock()  # else the clock's own timer, once a second

    def _update_clock(self) -> None:
        now = time.time()
        elapsed = self._presenter.elapsed_s(now)
        left = self._presenter.time_left_s(now)
        pace = "measured pace" if self._presenter.measured else "estimated pace"
        self.clock_label.setText(
            f"Clock {clock_text(elapsed)} · about {clock_text(left)} left ({pace})"
        )

    def set_editable(self, editable: bool) -> None:
        """Edit mode (True) or Show mode (False): in Show mode nothing here can be changed."""
        self._editable = editable
        self.model.editable = editable
        triggers = (
            QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
            if editable
            else QAbstractItemView.EditTrigger.NoEditTriggers
        )
        if not editable and self.table.state() == QAbstractItemView.State.EditingState:
            self.table.closePersistentEditor(self.table.currentIndex())
        self.table.setEditTriggers(triggers)
        self.table.setAcceptDrops(editable)
        self.open_button.setEnabled(editable)
        self.refresh()
