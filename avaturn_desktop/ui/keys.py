"""Keys the presenter chooses: every action of ``core/keys.py`` bound to a QAction (or the
composer's Stop shortcut), rebound at once when the settings change; the Settings page that
edits them (conflicts flagged); and Help → Keyboard shortcuts, a list that can be printed.

Every binding works anywhere in the app (an application-wide shortcut). Keys that belong to
one widget (Space = GO in the cue list, the composer's Ctrl+Enter) are listed too, fixed.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core import keys as keys_mod

log = logging.getLogger("avaturn.ui")

#: Keys that belong to one widget: shown in the list, not rebindable.
FIXED_KEYS: tuple[tuple[str, str], ...] = (
    ("Space (in the cue list)", "GO"),
    ("Double-click a cue", "Put it on standby"),
    ("F2 (in the cue list)", "Edit the cue in place (Edit mode)"),
    ("Ctrl+Enter (in the composer)", "Queue the text"),
    ("Ctrl+Shift+Enter (in the composer)", "Say it now"),
    ("Esc (in the composer)", "Stop the avatar"),
    ("Ctrl+Up / Ctrl+Down (in the composer)", "Earlier texts"),
    ("Delete, Alt+Up / Alt+Down (in the queue)", "Remove, move a waiting line (Edit mode)"),
    ("Esc (in the audience output)", "Close it (Edit mode)"),
)


def portable(key: str) -> str:
    """``key`` as Qt writes it (``"ctrl+g"`` → ``"Ctrl+G"``); ``""`` for none."""
    if not key.strip():
        return ""
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.PortableText)


def native(key: str) -> str:
    """``key`` as this platform shows it (Cmd on macOS)."""
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText) if key else ""


class KeyMap:
    """Each action's QAction (or QShortcut), its key from the settings."""

    def __init__(self, window: QWidget) -> None:
        self._window = window
        self.targets: dict[str, QAction | QShortcut] = {}
        self.keys: dict[str, str] = keys_mod.bindings()

    def add(self, name: str, target: QAction | QShortcut) -> None:
        if name not in keys_mod.BY_NAME:
            raise KeyError(name)
        self.targets[name] = target
        if isinstance(target, QAction):
            target.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
            if target not in self._window.actions():
                self._window.addAction(target)  # works with the menu bar hidden too
        else:
            target.setContext(Qt.ShortcutContext.ApplicationShortcut)
        self._bind(name)

    def apply(self, overrides: Mapping[str, str]) -> None:
        self.keys = {n: portable(k) for n, k in keys_mod.bindings(overrides).items()}
        for name in self.targets:
            self._bind(name)

    def _bind(self, name: str) -> None:
        target = self.targets[name]
        sequence = QKeySequence(self.keys.get(name, ""))
        if isinstance(target, QAction):
            target.setShortcut(sequence)
        else:
            target.setKey(sequence)

    def html(self) -> str:
        """The printable list: every action and its key, then the fixed keys."""
        rows = []
        group = None
        for action in keys_mod.ACTIONS:
            if action.group != group:
                group = action.group
                rows.append(f"<tr><th colspan='2' align='left'><br>{html.escape(group)}</th></tr>")
            key = native(self.keys.get(action.name, "")) or "—"
            rows.append(
                f"<tr><td><b>{html.escape(key)}</b></td><td>{html.escape(action.label)}</td></tr>"
            )
        rows.append("<tr><th colspan='2' align='left'><br>Where the focus is</th></tr>")
        for key, label in FIXED_KEYS:
            rows.append(f"<tr><td><b>{html.escape(key)}</b></td><td>{html.escape(label)}</td></tr>")
        return (
            "<h2>Avaturn Desktop: keys</h2>"
            "<p>Change them in File → Settings → Keys. A Stream Deck or Bitfocus Companion "
            "reaches the same actions through the control API (see the README).</p>"
            f"<table cellspacing='4'>{''.join(rows)}</table>"
        )


class KeysHelp(QDialog):
    """Help → Keyboard shortcuts: the list, printable."""

    def __init__(self, keymap: KeyMap, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("keys_help")
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(560, 640)
        self.browser = QTextBrowser()
        self.browser.setHtml(keymap.html())
        self.print_button = QPushButton("Print…")
        self.print_button.clicked.connect(self.print_list)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.print_button, QDialogButtonBox.ButtonRole.ActionRole)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 1)
        layout.addWidget(buttons)

    def print_list(self) -> None:
        from PySide6.QtPrintSupport import QPrintDialog, QPrinter

        printer = QPrinter(QPrinter.PrinterMode.HighResolution)
        dialog = QPrintDialog(printer, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.browser.document().print_(printer)


class KeysEditor(QWidget):
    """Settings → Keys: one row an action, its key captured by pressing it; conflicts are
    shown in red and :attr:`conflicts` says which (the dialog does not save with any)."""

    changed = Signal()

    def __init__(self, overrides: Mapping[str, str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("keys_editor")
        current = {n: portable(k) for n, k in keys_mod.bindings(overrides).items()}
        self.table = QTableWidget(len(keys_mod.ACTIONS), 3)
        self.table.setHorizontalHeaderLabels(["Action", "Key", ""])
        self.table.verticalHeader().setVisible(False)
        self.edits: dict[str, QKeySequenceEdit] = {}
        for row, action in enumerate(keys_mod.ACTIONS):
            label = QTableWidgetItem(action.label)
            label.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.table.setItem(row, 0, label)
            edit = QKeySequenceEdit(QKeySequence(current[action.name]))
            edit.setObjectName(f"key.{action.name}")
            edit.setMaximumSequenceLength(1)
            edit.setClearButtonEnabled(True)
            edit.keySequenceChanged.connect(self._check)
            self.edits[action.name] = edit
            self.table.setCellWidget(row, 1, edit)
            default = QPushButton("Default")
            default.clicked.connect(
                lambda _c=False, e=edit, d=action.default: e.setKeySequence(QKeySequence(d))
            )
            self.table.setCellWidget(row, 2, default)
        self.table.resizeColumnsToContents()
        self.message = QLabel()
        self.message.setObjectName("keys.conflicts")
        self.message.setStyleSheet("color: #b91c1c;")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.message, 1)
        layout.addLayout(bottom)
        self.conflicts: dict[str, list[str]] = {}
        self._check()

    def keys(self) -> dict[str, str]:
        return {
            name: edit.keySequence().toString(QKeySequence.SequenceFormat.PortableText)
            for name, edit in self.edits.items()
        }

    def _check(self, *_args: object) -> None:
        self.conflicts = keys_mod.conflicts(self.keys())
        for row, action in enumerate(keys_mod.ACTIONS):
            clash = action.name in self.conflicts
            item = self.table.item(row, 0)
            if item is None:
                continue
            item.setForeground(Qt.GlobalColor.red if clash else Qt.GlobalColor.black)
            item.setToolTip(
                "Same key as: " + ", ".join(keys_mod.label(o) for o in self.conflicts[action.name])
                if clash
                else ""
            )
        if self.conflicts:
            pairs = sorted({tuple(sorted([n, *o])) for n, o in self.conflicts.items()})
            self.message.setText(
                "Two actions on one key: "
                + "; ".join(" and ".join(keys_mod.label(n) for n in pair) for pair in pairs)
                + ". Give one of them another key."
            )
        else:
            self.message.setText("")
        self.changed.emit()


def overrides_from(editor: KeysEditor) -> dict[str, str]:
    return keys_mod.overrides_of(editor.keys())


Trigger = Callable[[], None]
