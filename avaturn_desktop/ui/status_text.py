"""A line of text that changes often (counts, clocks) without laying the window out again.

A ``QLabel`` asks its layout for new geometry on every ``setText``; inside a dock that request
climbs to the main window, which lays out every dock again (their title bars, buttons and
icons) and repaints them. A count that changes with each line said made the window do that
dozens of times a second while a script streamed. :class:`StatusText` only repaints itself:
its size is one line of the font whatever the text, and text wider than the room it has is
elided (the whole text is its tooltip then).
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget


class StatusText(QWidget):
    """One line of plain text, as a label shows it, that repaints on change and never asks
    for a new layout (see the module docs)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = text
        self._elided = False
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.update()

    def sizeHint(self) -> QSize:
        metrics = self.fontMetrics()
        return QSize(metrics.horizontalAdvance("0") * 24, metrics.height())

    def minimumSizeHint(self) -> QSize:
        metrics = self.fontMetrics()
        return QSize(metrics.horizontalAdvance("0") * 4, metrics.height())

    def paintEvent(self, event: QPaintEvent) -> None:
        rect = self.contentsRect()
        metrics = self.fontMetrics()
        shown = metrics.elidedText(self._text, Qt.TextElideMode.ElideRight, rect.width())
        elided = shown != self._text
        if elided != self._elided:
            self._elided = elided
            self.setToolTip(self._text if elided else "")
        elif elided and self.toolTip() != self._text:
            self.setToolTip(self._text)
        painter = QPainter(self)
        self.style().drawItemText(
            painter,
            rect,
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            self.palette(),
            self.isEnabled(),
            shown,
            QPalette.ColorRole.WindowText,
        )
