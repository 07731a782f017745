"""The voice library: names, language, tags, favourites and notes, each voice's measured start
latency and speaking rate from the task log, adding a voice by id and asking the service
whether it takes it, and importing an ElevenLabs account's voices (or the simulator's).

The panel renders :class:`~avaturn_desktop.services.voices.VoiceLibrary` and the figures of
:mod:`~avaturn_desktop.services.latency`; edits in the table go straight to the library, which
saves itself.
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Any, Final

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.services import secrets
from avaturn_desktop.services.latency import VoiceFigures, figures
from avaturn_desktop.services.runtime import Runtime
from avaturn_desktop.services.voices import (
    VoiceEntry,
    check_voice,
    fetch_elevenlabs_voices,
    fetch_simulator_voices,
    looks_like_voice_id,
)
from avaturn_desktop.ui.messages import MessageBus

log = logging.getLogger("avaturn.ui")

_Index = QModelIndex | QPersistentModelIndex
_ROOT: Final = QModelIndex()


class VCol(IntEnum):
    FAVOURITE = 0
    NAME = 1
    VOICE_ID = 2
    LANGUAGE = 3
    TAGS = 4
    CHECK = 5
    LINES = 6
    P50 = 7
    P95 = 8
    RATE = 9
    NOTES = 10


HEADERS: Final = (
    "★",
    "Name",
    "Voice id",
    "Language",
    "Tags",
    "Service",
    "Lines",
    "p50 (ms)",
    "p95 (ms)",
    "Chars/s",
    "Notes",
)
_EDITABLE: Final = {VCol.NAME, VCol.LANGUAGE, VCol.TAGS, VCol.NOTES}
_CHECK_COLOURS: Final = {True: QColor("#15803d"), False: QColor("#b91c1c")}


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


class VoiceModel(QAbstractTableModel):
    """The library's voices with their figures, one row each."""

    def __init__(self, runtime: Runtime, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runtime = runtime
        self._voices: list[VoiceEntry] = []
        self._figures: dict[str, VoiceFigures] = {}
        self.reload()
        self._unsubscribe = runtime.voices.subscribe(self.reload)

    def reload(self) -> None:
        self.beginResetModel()
        self._voices = self._runtime.voices.entries()
        self.endResetModel()

    def refresh_figures(self) -> None:
        """Read the figures from the task log again (one query over the sent lines)."""
        self._figures = figures(self._runtime.store.timings())
        if self._voices:
            self.dataChanged.emit(
                self.index(0, VCol.LINES), self.index(len(self._voices) - 1, VCol.RATE)
            )

    def voice_at(self, row: int) -> VoiceEntry | None:
        return self._voices[row] if 0 <= row < len(self._voices) else None

    def row_of(self, voice_id: str) -> int | None:
        return next((n for n, v in enumerate(self._voices) if v.voice_id == voice_id), None)

    def rowCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._voices)

    def columnCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(VCol)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        base = super().flags(index)
        column = VCol(index.column())
        if column in _EDITABLE:
            return base | Qt.ItemFlag.ItemIsEditable
        if column is VCol.FAVOURITE:
            return base | Qt.ItemFlag.ItemIsUserCheckable
        return base

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        voice = self.voice_at(index.row())
        if voice is None:
            return None
        column = VCol(index.column())
        found = self._figures.get(voice.voice_id)
        if role == Qt.ItemDataRole.CheckStateRole and column is VCol.FAVOURITE:
            return Qt.CheckState.Checked if voice.favourite else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.ForegroundRole and column is VCol.CHECK and voice.check:
            return _CHECK_COLOURS.get(voice.check.accepted)  # type: ignore[arg-type]
        if role == Qt.ItemDataRole.ToolTipRole and column is VCol.CHECK and voice.check:
            return voice.check.reason
        if role == Qt.ItemDataRole.UserRole:  # sorting: numbers as numbers
            if column is VCol.P50:
                return found.p50_ms if found else None
            if column is VCol.P95:
                return found.p95_ms if found else None
            if column is VCol.RATE:
                return found.speaking_rate_cps if found else None
            if column is VCol.LINES:
                return found.count if found else 0
            if column is VCol.FAVOURITE:
                return int(voice.favourite)
            return self.data(index, Qt.ItemDataRole.DisplayRole)
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return None
        if column is VCol.FAVOURITE:
            return None
        if column is VCol.NAME:
            return voice.name
        if column is VCol.VOICE_ID:
            return voice.voice_id
        if column is VCol.LANGUAGE:
            return voice.language
        if column is VCol.TAGS:
            return ", ".join(voice.tags)
        if column is VCol.CHECK:
            return voice.check.label if voice.check else "not checked"
        if column is VCol.NOTES:
            return voice.notes
        if found is None:
            return ""
        if column is VCol.LINES:
            return str(found.count)
        if column is VCol.P50:
            return _ms(found.p50_ms)
        if column is VCol.P95:
            return _ms(found.p95_ms)
        rate = found.speaking_rate_cps
        return "" if rate is None else f"{rate:.1f}"

    def setData(self, index: _Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        voice = self.voice_at(index.row())
        if voice is None:
            return False
        column = VCol(index.column())
        changes: dict[str, Any]
        if column is VCol.FAVOURITE and role == Qt.ItemDataRole.CheckStateRole:
            changes = {"favourite": Qt.CheckState(value) == Qt.CheckState.Checked}
        elif column in _EDITABLE and role == Qt.ItemDataRole.EditRole:
            field = {
                VCol.NAME: "name",
                VCol.LANGUAGE: "language",
                VCol.TAGS: "tags",
                VCol.NOTES: "notes",
            }[column]
            changes = {field: str(value)}
        else:
            return False
        try:
            self._runtime.voices.update(voice.voice_id, **changes)
        except AppError as exc:
            log.warning("Voice %s not changed: %s", voice.voice_id, exc.user_message)
            return False
        return True

    def close(self) -> None:
        self._unsubscribe()


class _Sort(QSortFilterProxyModel):
    def lessThan(self, left: _Index, right: _Index) -> bool:
        a = left.data(Qt.ItemDataRole.UserRole)
        b = right.data(Qt.ItemDataRole.UserRole)
        if a is None or b is None:
            return a is None and b is not None
        try:
            return bool(a < b)
        except TypeError:
            return str(a) < str(b)


class VoiceLibraryPanel(QWidget):
    """The library as a table, with its actions (see the module docs)."""

    #: "Use this voice": the voice id (the window puts it in the current session form).
    use_requested = Signal(str)

    def __init__(
        self, runtime: Runtime, messages: MessageBus, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("voice_library_panel")
        self._runtime = runtime
        self._messages = messages
        self.model = VoiceModel(runtime, self)
        self.proxy = _Sort(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.table = QTableView()
        self.table.setObjectName("voices.table")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(
            VCol.NOTES, QHeaderView.ResizeMode.Stretch
        )
        self.table.verticalHeader().hide()
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by name, language, tag, note…")
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)

        self.new_id = QLineEdit()
        self.new_id.setObjectName("voices.new_id")
        self.new_id.setPlaceholderText("Voice id to add (ElevenLabs)")
        self.add_button = QPushButton("Add")
        self.check_button = QPushButton("Check with the service")
        self.check_button.setObjectName("voices.check")
        self.check_button.setToolTip(
            "Creates a session with the voice and ends it at once: the service's own check "
            "(two requests; it takes one of your concurrent sessions for a moment)."
        )
        self.import_button = QPushButton("Import from ElevenLabs")
        self.import_button.setToolTip(
            "Lists your ElevenLabs account's voices with their names (needs the ElevenLabs "
            "key in Settings)."
        )
        self.sim_button = QPushButton("Import the simulator's voices")
        self.sim_button.setVisible(runtime.backend.kind in ("simulator", "external"))
        self.use_button = QPushButton("Use in the session form")
        self.refresh_button = QPushButton("Refresh figures")
        self.remove_button = QPushButton("Remove")
        self.status = QLabel()
        self.status.setObjectName("voices.status")
        self.status.setWordWrap(True)

        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.refresh_button)
        add_row = QHBoxLayout()
        add_row.addWidget(self.new_id, 1)
        add_row.addWidget(self.add_button)
        add_row.addWidget(self.check_button)
        actions = QHBoxLayout()
        for button in (
            self.use_button,
            self.import_button,
            self.sim_button,
            self.remove_button,
        ):
            actions.addWidget(button)
        actions.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addLayout(add_row)
        layout.addLayout(actions)
        layout.addWidget(self.status)

        self.add_button.clicked.connect(self.add_typed)
        self.new_id.returnPressed.connect(self.add_typed)
        self.check_button.clicked.connect(self._on_check)
        self.import_button.clicked.connect(self._on_import)
        self.sim_button.clicked.connect(self._on_import_simulator)
        self.refresh_button.clicked.connect(self.model.refresh_figures)
        self.use_button.clicked.connect(self._use)
        self.remove_button.clicked.connect(self._remove)
        self.model.refresh_figures()
        self.table.resizeColumnsToContents()

    # -- selection -------------------------------------------------------------------------

    def selected(self) -> VoiceEntry | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.voice_at(self.proxy.mapToSource(rows[0]).row())

    def select(self, voice_id: str) -> None:
        row = self.model.row_of(voice_id)
        if row is not None:
            self.table.selectRow(self.proxy.mapFromSource(self.model.index(row, 0)).row())

    def _target_id(self) -> str:
        """The id typed in the box, else the selected voice's."""
        typed = self.new_id.text().strip()
        if typed:
            return typed
        voice = self.selected()
        return voice.voice_id if voice else ""

    # -- actions ---------------------------------------------------------------------------

    def add_typed(self) -> VoiceEntry | None:
        voice_id = self.new_id.text().strip()
        try:
            entry = self._runtime.voices.add(voice_id, source="manual")
        except AppError as exc:
            self.status.setText(exc.user_message)
            return None
        hint = (
            ""
            if looks_like_voice_id(voice_id)
            else " It does not look like an ElevenLabs id (20 letters and digits); check it."
        )
        self.status.setText(f"Added {voice_id}.{hint}")
        self.new_id.clear()
        self.select(voice_id)
        return entry

    @asyncSlot()
    async def _on_check(self) -> None:
        await self.check()

    async def check(self, voice_id: str | None = None) -> None:
        """Ask the service whether it takes the voice (see ``services/voices.py``)."""
        voice_id = voice_id or self._target_id()
        if not voice_id:
            self.status.setText("Type a voice id or select a voice to check.")
            return
        self.check_button.setEnabled(False)
        self.status.setText(f"Asking the service about {voice_id}…")
        runtime = self._runtime
        try:
            verdict = await check_voice(
                runtime.current_client,
                voice_id,
                avatar_id=runtime.settings.value.session.avatar_id,
                backend=runtime.backend.api_base,
                registry=runtime.store,
            )
            runtime.voices.record_check(voice_id, verdict)
        except AppError as exc:
            self.status.setText(exc.user_message)
            return
        finally:
            self.check_button.setEnabled(True)
        self.new_id.clear()
        self.select(voice_id)
        self.status.setText(f"{voice_id}: {verdict.label}. {verdict.reason}")

    @asyncSlot()
    async def _on_import(self) -> None:
        await self.import_elevenlabs()

    async def import_elevenlabs(self) -> None:
        key, _source = secrets.load_elevenlabs_key()
        if not key:
            self.status.setText(
                "Enter an ElevenLabs key in File → Settings (or set "
                f"{secrets.ELEVENLABS_ENV_VAR}) to import your voices."
            )
            return
        self.import_button.setEnabled(False)
        self.status.setText("Asking ElevenLabs for your voices…")
        try:
            voices = await fetch_elevenlabs_voices(self._runtime.http, key)
        except AppError as exc:
            self.status.setText(exc.user_message)
            return
        finally:
            self.import_button.setEnabled(True)
        added, updated = self._runtime.voices.merge(voices)
        self.status.setText(
            f"ElevenLabs: {len(voices)} voice(s); {added} added, {updated} updated. Check a "
            "voice with the service before a show: Avaturn may not take every one."
        )

    @asyncSlot()
    async def _on_import_simulator(self) -> None:
        backend = self._runtime.backend
        voices = await fetch_simulator_voices(self._runtime.http, backend.api_base, backend.api_key)
        added, updated = self._runtime.voices.merge(voices)
        self.status.setText(
            f"The simulator knows {len(voices)} voice(s); {added} added, {updated} updated."
            if voices
            else "The simulator did not list its voices (its test routes may need its key)."
        )

    def _use(self) -> None:
        voice = self.selected()
        if voice is None:
            self.status.setText("Select a voice first.")
            return
        self.use_requested.emit(voice.voice_id)

    def _remove(self) -> None:
        voice = self.selected()
        if voice is not None:
            self._runtime.voices.remove(voice.voice_id)
            self.status.setText(
                f"Removed {voice.label} from the library (the log keeps its lines)."
            )

    def close_panel(self) -> None:
        self.model.close()
