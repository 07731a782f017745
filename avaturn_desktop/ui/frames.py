"""One redraw a frame: what the panels use to gather changes before they draw them.

The services report every change as it happens (a line changing state, a log row written, a
cue played), often dozens in one frame while a script streams. A panel that redrew on each
would repaint its view dozens of times a frame, and those repaints, not the changes, are what
stall the GUI loop. So a panel notes what changed, starts its frame timer, and draws once when
it fires: every change still shows within a frame, and a burst costs one repaint. The
changed rows are drawn a run at a time (:func:`row_runs`), and an item view's text is drawn
without shaping where the script needs none (:func:`unshaped_text`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QWidget

#: One frame at 60 Hz.
FRAME_MS: Final = 16


def frame_timer(parent: QObject, draw: Callable[[], None], interval_ms: int = FRAME_MS) -> QTimer:
    """A single-shot timer that calls ``draw`` ``interval_ms`` after it is started; start it
    only when it is not active (``if not t.isActive(): t.start()``), so a burst of changes
    is drawn once, a frame after the first of them."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setTimerType(Qt.TimerType.CoarseTimer)
    timer.setInterval(interval_ms)
    timer.timeout.connect(draw)
    return timer


def opaque(widget: QWidget) -> QWidget:
    """``widget``, set to fill its own background: a dock's content that does, spares the dock
    a repaint of its title bar (Fusion looks its buttons' icons up each time) under every
    change of a line, a count or a clock inside it."""
    widget.setAutoFillBackground(True)
    return widget


def row_runs(rows: list[int]) -> list[tuple[int, int]]:
    """Ascending row numbers as (first, last) runs of consecutive rows, so that a frame's
    changes are drawn, inserted or removed a block at a time: ``[1, 2, 3, 7]`` ->
    ``[(1, 3), (7, 7)]``."""
    runs: list[tuple[int, int]] = []
    for row in rows:
        if runs and runs[-1][1] == row - 1:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    return runs


def unshaped_text(view: QWidget) -> None:
    """An item view's cells drawn without text shaping where the script needs none.

    Qt lays out and shapes every visible cell's text at each repaint of a table (and again to
    elide it); a row added to a log that follows its end repaints them all. Latin text needs
    no shaping (it only adds kerning and ligatures); scripts that do need it are still
    shaped. A full repaint of the task log's table: 3.1 -> 2.5 ms.
    """
    font = view.font()
    font.setStyleStrategy(QFont.StyleStrategy.PreferNoShaping)
    view.setFont(font)
