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
    """Plain text, as a label shows it, that repaints on change and never asks for a new
    layout (see the module docs). It takes ``lines`` lines of the font (wrapped at words
    when more than one) and asks for ``chars`` characters of width."""

    def __init__(
        self,
        text: str = "",
        parent: QWidget | None = None,
        *,
        lines: int = 1,
        chars: int = 24,
        align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft,
    ) -> None:
        super().__init__(parent)
        self._text = text
        self._lines = max(1, lines)
        self._chars = chars
        self._align = align
        self._cut = False
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.update()

    def sizeHint(self) -> QSize:
        metrics = self.fontMetrics()
        return QSize(metrics.horizontalAdvance("0") * self._chars, self._height())

    def minimumSizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance("0") * 4, self._height())

    def _height(self) -> int:
        metrics = self.fontMetrics()
        return metrics.height() + metrics.lineSpacing() * (self._lines - 1)

    def paintEvent(self, event: QPaintEvent) -> None:
        rect = self.contentsRect()
        metrics = self.fontMetrics()
        flags = int(self._align | Qt.AlignmentFlag.AlignVCenter)
        if self._lines == 1:
            shown = metrics.elidedText(self._text, Qt.TextElideMode.ElideRight, rect.width())
            cut = shown != self._text
        else:
            flags |= int(Qt.TextFlag.TextWordWrap)
            shown = self._text
            cut = metrics.boundingRect(rect, flags, shown).height() > rect.height()
        if cut or self._cut:  # the whole text in the tooltip while it does not fit
            self._cut = cut
            self.setToolTip(self._text if cut else "")
        painter = QPainter(self)
        self.style().drawItemText(
            painter, rect, flags, self.palette(), self.isEnabled(), shown,
            QPalette.ColorRole.WindowText,
        )  # fmt: skip
