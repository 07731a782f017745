"""A/B: the same lines said by two or more voices, rated by ear, with a results table.

Set up the lines (one a row), tick the voices, choose one session (the voice changes between
the voices) or side by side (an avatar per voice), optionally blind; run it; rate each take 1
to 5 as it is said; read the table (rating, start latency, speaking time, per take and per
voice) and export it as CSV. The runner and the record are
:mod:`avaturn_desktop.services.ab`; this panel only shows them and forwards the clicks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.services.ab import (
    AbPlan,
    AbResult,
    AbRun,
    AbRunner,
    export_csv,
    results,
    summary,
)
from avaturn_desktop.services.runtime import Runtime
from avaturn_desktop.ui.messages import MessageBus

log = logging.getLogger("avaturn.ui")

TABLE_HEADERS: Final = (
    "Take",
    "Label",
    "Voice",
    "Rating",
    "Line",
    "Text",
    "State",
    "Start latency (ms)",
    "Speaking (s)",
)
#: The column of the rating (a spin box per take).
RATING: Final = 3
DEFAULT_LINES: Final = (
    "Good evening, and welcome to the launch.\n"
    "Tonight we will show you three things.\n"
    "Questions are welcome at the end."
)


class ExportDialog:
    """Where to save the results (tests replace ``ask``)."""

    @classmethod
    def ask(cls, parent: QWidget | None, suggested: str) -> Path | None:
        path, _ = QFileDialog.getSaveFileName(
            parent, "Export A/B results", suggested, "CSV (*.csv)"
        )
        return Path(path) if path else None


class AbPanel(QWidget):
    """The A/B view (see the module docs)."""

    def __init__(
        self, runtime: Runtime, messages: MessageBus, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ab_panel")
        self._runtime = runtime
        self._messages = messages
        self.runner: AbRunner | None = None
        self._unsubscribe_run: list[Callable[[], None]] = []

        self.lines = QPlainTextEdit(DEFAULT_LINES)
        self.lines.setObjectName("ab.lines")
        self.lines.setPlaceholderText("The lines each voice says, one a row")
        self.voices = QListWidget()
        self.voices.setObjectName("ab.voices")
        self.sequential = QRadioButton("One session (the voice changes between voices)")
        self.side_by_side = QRadioButton("Side by side (an avatar per voice)")
        self.sequential.setChecked(True)
        self.blind = QCheckBox("Blind (which voice is which stays hidden until all are rated)")
        self.blind.setObjectName("ab.blind")
        self.run_button = QPushButton("Run the comparison")
        self.run_button.setObjectName("ab.run")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.reveal_button = QPushButton("Reveal the voices")
        self.reveal_button.setEnabled(False)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setEnabled(False)
        self.status = QLabel("Pick two or more voices and the lines, then run.")
        self.status.setObjectName("ab.status")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(TABLE_HEADERS))
        self.table.setObjectName("ab.table")
        self.table.setHorizontalHeaderLabels(TABLE_HEADERS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(
            RATING + 2, QHeaderView.ResizeMode.Stretch
        )
        self.summary = QLabel()
        self.summary.setObjectName("ab.summary")
        self.summary.setTextFormat(Qt.TextFormat.RichText)

        setup = QWidget()
        left = QVBoxLayout(setup)
        left.setContentsMargins(0, 0, 0, 0)
        left.addWidget(QLabel("<b>Lines</b>"))
        left.addWidget(self.lines, 2)
        left.addWidget(QLabel("<b>Voices</b> (tick two or more)"))
        left.addWidget(self.voices, 3)
        left.addWidget(self.sequential)
        left.addWidget(self.side_by_side)
        left.addWidget(self.blind)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        left.addLayout(buttons)
        outcome = QWidget()
        right = QVBoxLayout(outcome)
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.status)
        right.addWidget(self.table, 1)
        right.addWidget(self.summary)
        after = QHBoxLayout()
        after.addWidget(self.reveal_button)
        after.addWidget(self.export_button)
        after.addStretch(1)
        right.addLayout(after)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(setup)
        splitter.addWidget(outcome)
        splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        self.fill_voices()
        self._unsubscribe_library = runtime.voices.subscribe(self.fill_voices)
        self.run_button.clicked.connect(self._on_run)
        self.stop_button.clicked.connect(self._on_stop)
        self.reveal_button.clicked.connect(self._reveal)
        self.export_button.clicked.connect(self._export)

    # -- setup -----------------------------------------------------------------------------

    def fill_voices(self) -> None:
        """The library's voices, favourites first; ticks kept."""
        ticked = set(self.ticked())
        self.voices.clear()
        entries = sorted(self._runtime.voices.entries(), key=lambda v: (not v.favourite, v.label))
        for entry in entries:
            mark = "★ " if entry.favourite else ""
            item = QListWidgetItem(f"{mark}{entry.label}")
            item.setData(Qt.ItemDataRole.UserRole, entry.voice_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if entry.voice_id in ticked else Qt.CheckState.Unchecked
            )
            self.voices.addItem(item)

    def ticked(self) -> list[str]:
        return [
            str(item.data(Qt.ItemDataRole.UserRole))
            for item in (self.voices.item(i) for i in range(self.voices.count()))
            if item is not None and item.checkState() == Qt.CheckState.Checked
        ]

    def tick(self, *voice_ids: str) -> None:
        for i in range(self.voices.count()):
            item = self.voices.item(i)
            if item is not None:
                wanted = item.data(Qt.ItemDataRole.UserRole) in voice_ids
                item.setCheckState(Qt.CheckState.Checked if wanted else Qt.CheckState.Unchecked)

    def plan(self) -> AbPlan:
        return AbPlan(
            lines=tuple(self.lines.toPlainText().splitlines()),
            voices=tuple(self.ticked()),
            mode="side_by_side" if self.side_by_side.isChecked() else "sequential",
            blind=self.blind.isChecked(),
        )

    # -- running ---------------------------------------------------------------------------

    @asyncSlot()
    async def _on_run(self) -> None:
        self.start()

    def start(self) -> AbRunner | None:
        if self.runner is not None and self.runner.run.state == "running":
            self.status.setText("A comparison is running; stop it first.")
            return None
        try:
            runner = AbRunner.prepare(self._runtime, self.plan())
            runner.start()
        except AppError as exc:
            self.status.setText(exc.user_message)
            return None
        self._set_runner(runner)
        return runner

    @asyncSlot()
    async def _on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()

    def _set_runner(self, runner: AbRunner) -> None:
        for unsubscribe in self._unsubscribe_run:
            unsubscribe()
        self.runner = runner
        self._unsubscribe_run = [runner.run.subscribe(self._show)]
        self._show(runner.run)

    def _show(self, run: AbRun) -> None:
        running = run.state == "running"
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.export_button.setEnabled(bool(run.takes))
        self.reveal_button.setEnabled(run.plan.blind and not run.revealed)
        states = {
            "ready": "Ready.",
            "running": "Running: rate each take as you hear it.",
            "done": "Done. Rate every take, then export.",
            "stopped": "Stopped.",
            "failed": f"Failed: {run.error}",
        }
        current = "" if run.current is None else f" Now: take {run.current + 1}."
        self.status.setText(states[run.state] + current)
        self.refresh_table()

    def refresh_table(self) -> None:
        runner = self.runner
        if runner is None:
            return
        run = runner.run
        table = results(run, self._runtime.store.get)
        self.table.setRowCount(len(table))
        for row, result in enumerate(table):
            take = result.take
            cells = (
                str(take.take + 1),
                take.label,
                result.voice_shown,
                None,
                str(take.line + 1),
                take.text,
                result.state,
                "" if result.start_latency_ms is None else f"{result.start_latency_ms:.0f}",
                "" if result.speaking_s is None else f"{result.speaking_s:.2f}",
            )
            for column, text in enumerate(cells):
                if text is None:
                    continue
                item = self.table.item(row, column)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(row, column, item)
                if item.text() != text:
                    item.setText(text)
            spin = self.table.cellWidget(row, RATING)
            if not isinstance(spin, QSpinBox):
                spin = QSpinBox()
                spin.setObjectName(f"ab.rating.{row}")
                spin.setRange(0, 5)
                spin.setSpecialValueText("–")
                spin.setToolTip("Your rating, 1 (poor) to 5 (great); – not rated")
                spin.valueChanged.connect(lambda value, t=take.take: self.rate(t, value))
                self.table.setCellWidget(row, RATING, spin)
            value = take.rating or 0
            if spin.value() != value:
                spin.blockSignals(True)
                spin.setValue(value)
                spin.blockSignals(False)
        self._show_summary(run, table)

    def _show_summary(self, run: AbRun, table: list[AbResult]) -> None:
        parts = []
        for entry in summary(run, table):
            rating = "–" if entry["rating"] is None else f"{entry['rating']:.1f}"
            latency = (
                "–" if entry["p50_latency_ms"] is None else f"{entry['p50_latency_ms']:.0f} ms"
            )
            speaking = (
                "–" if entry["mean_speaking_s"] is None else f"{entry['mean_speaking_s']:.2f} s"
            )
            parts.append(
                f"<b>{entry['label']}</b> {entry['voice']}: rating {rating} "
                f"({entry['rated']}/{entry['takes']}), start p50 {latency}, speaking {speaking}"
            )
        self.summary.setText("<br>".join(parts))

    def rate(self, take: int, value: int) -> None:
        if self.runner is None:
            return
        try:
            self.runner.rate(take, value or None)
        except (KeyError, ValueError) as exc:
            self.status.setText(f"The rating was not kept: {exc}")

    def _reveal(self) -> None:
        if self.runner is not None:
            self.runner.run.reveal()

    def _export(self) -> None:
        if self.runner is None:
            return
        run = self.runner.run
        path = ExportDialog.ask(self, f"ab-{run.run_id}.csv")
        if path is None:
            return
        try:
            count = self.export_to(path)
        except OSError as exc:
            self.status.setText(f"Could not write {path.name}: {exc.strerror}")
            return
        self.status.setText(f"Exported {count} take(s) to {path}.")

    def export_to(self, path: Path) -> int:
        assert self.runner is not None
        run = self.runner.run
        with path.open("w", encoding="utf-8", newline="") as out:
            return export_csv(run, results(run, self._runtime.store.get), out)

    def close_panel(self) -> None:
        self._unsubscribe_library()
        for unsubscribe in self._unsubscribe_run:
            unsubscribe()
