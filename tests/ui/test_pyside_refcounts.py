"""The Qt binding must not drop references it does not own.

PySide6 6.12.0 did: every bool passed through a signal, and item views painting a model,
took a reference from True / None, and the app aborted ("deallocating None") after a while.
pyproject.toml keeps that release out; this test says so if it ever comes back.
"""

from __future__ import annotations

import sys
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtCore import Signal as QtSignal
from PySide6.QtWidgets import QListView


class _Emitter(QObject):
    value = QtSignal(object)
    pair = QtSignal(int, bool)


class _Rows(QAbstractListModel):
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 50

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        return f"row {index.row()}" if role == Qt.ItemDataRole.DisplayRole else None


def test_bools_through_signals_keep_their_references(qapp: Any) -> None:
    emitter = _Emitter()
    seen: list[object] = []
    emitter.value.connect(seen.append)
    emitter.pair.connect(lambda row, new: seen.append(new))
    before = sys.getrefcount(True)
    for row in range(200):
        emitter.value.emit(True)
        emitter.pair.emit(row, True)
    seen.clear()
    assert abs(sys.getrefcount(True) - before) < 20  # 6.12.0 lost one an emission (-400)


def test_item_views_keep_none_s_references(qtbot: Any) -> None:
    model = _Rows()
    view = QListView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.show()
    qtbot.waitExposed(view)
    before = sys.getrefcount(None)
    for _ in range(50):
        model.beginResetModel()
        model.endResetModel()
        view.repaint()
    assert abs(sys.getrefcount(None) - before) < 50  # 6.12.0 lost about 3 a reset
