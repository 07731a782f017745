"""Text that changes often (counts, clocks) repaints itself and never lays the window out again,
where a QLabel in a dock made the main window lay out every dock on each new text."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QVBoxLayout, QWidget

from avaturn_desktop.ui.status_text import StatusText


class _Layouts(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:
            self.requests += 1
        return False


def _window_with(widget: QWidget, qtbot: Any) -> tuple[QMainWindow, _Layouts]:
    window = QMainWindow()
    qtbot.addWidget(window)
    window.setCentralWidget(QWidget())
    panel = QWidget()
    layout = QVBoxLayout(panel)
    layout.addWidget(widget)
    layout.addWidget(QLabel("Something else"))
    dock = QDockWidget("Panel")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    window.resize(600, 400)
    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(20)
    spy = _Layouts()
    window.installEventFilter(spy)
    return window, spy


@pytest.mark.parametrize("kind", ["status", "label"])
def test_new_text_does_not_lay_the_window_out(qtbot: Any, kind: str) -> None:
    text: StatusText | QLabel = StatusText(lines=2) if kind == "status" else QLabel()
    _window, spy = _window_with(text, qtbot)
    for n in range(5):
        text.setText(f"{n * 1000} waiting · {n} with the avatar")
        qtbot.wait(5)
    assert text.text() == "4000 waiting · 4 with the avatar"
    if kind == "status":
        assert spy.requests == 0
    else:  # what it replaces: each new text climbed to the window
        assert spy.requests > 0


def test_text_that_does_not_fit_is_elided_with_the_whole_in_the_tooltip(qtbot: Any) -> None:
    text = StatusText()
    qtbot.addWidget(text)
    text.resize(60, text.sizeHint().height())
    text.show()
    qtbot.waitExposed(text)
    whole = "A text much longer than sixty pixels, cut at the end"
    text.setText(whole)
    qtbot.waitUntil(lambda: text.toolTip() == whole)
    text.setText("Short")
    qtbot.waitUntil(lambda: text.toolTip() == "")


def test_rich_text_is_drawn_and_cut_to_its_lines(qtbot: Any) -> None:
    text = StatusText(lines=2, rich=True)
    qtbot.addWidget(text)
    text.resize(160, text.sizeHint().height())
    text.show()
    qtbot.waitExposed(text)
    text.setText("<b>Standby 3 · Part 1:</b> " + "good evening, everyone. " * 6)
    assert text.text().startswith("<b>Standby 3")
    qtbot.waitUntil(lambda: text.toolTip().startswith("Standby 3 · Part 1: good evening"))
