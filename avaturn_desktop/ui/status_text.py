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
from PySide6.QtGui import (
    QAbstractTextDocumentLayout,
    QPainter,
    QPaintEvent,
    QPalette,
    QTextDocument,
)
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
        rich: bool = False,
    ) -> None:
        super().__init__(parent)
        #: Rich text (the HTML a QLabel takes), laid out in ``lines`` lines and clipped there.
        self._document: QTextDocument | None = QTextDocument(self) if rich else None
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
            if self._document is not None:
                self._document.setHtml(text)
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
        if self._document is not None:
            self._paint_rich()
            return
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

    def _paint_rich(self) -> None:
        assert self._document is not None
        rect = self.contentsRect()
        document = self._document
        document.setDefaultFont(self.font())
        document.setDocumentMargin(0)
        document.setTextWidth(rect.width())
        cut = document.size().height() > rect.height() + 1
        if cut or self._cut:
            self._cut = cut
            self.setToolTip(document.toPlainText() if cut else "")
        painter = QPainter(self)
        painter.translate(rect.topLeft())
        painter.setClipRect(0, 0, rect.width(), rect.height())
        context = QAbstractTextDocumentLayout.PaintContext()
        context.palette.setColor(
            QPalette.ColorRole.Text, self.palette().color(QPalette.ColorRole.WindowText)
        )
        document.documentLayout().draw(painter, context)
