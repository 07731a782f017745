"""Docks whose panels are built when first shown (``ui/lazy.py``): the voice library and A/B.

They hold the frame's placeholder until their tab is raised, a saved layout that shows them
is restored as saved (built at once, in its place), and what happened before they were built
(a voice added through the control API) is in them when they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent, Qt
from speaking_fakes import until

from avaturn_desktop.app import LaunchOptions, assemble
from avaturn_desktop.core.backend import Backend
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.ui import window_state
from avaturn_desktop.ui.docks.voice_library_panel import VCol
from avaturn_desktop.ui.lazy import LazyPanel
from avaturn_desktop.ui.main_window import MainWindow, Placeholder

pytestmark = [pytest.mark.web, pytest.mark.timeout(120)]


def _voice_ids(app: Any) -> set[str]:
    model = app.shell.bench.library.model
    return {model.index(r, VCol.VOICE_ID).data() for r in range(model.rowCount())}


def _on_top(window: MainWindow) -> set[str]:
    """The docks on screen (on top of their place)."""
    return {n for n, d in window.docks.items() if not d.visibleRegion().isEmpty()}


@pytest.fixture(autouse=True)
def _windows_gone() -> Any:
    """The app's window is deleted later (``Shell.close``): gone before the next test, whose
    event loop would otherwise paint its tables over a closed task log."""
    yield
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def _options(simulator: Any, home: Path, window: MainWindow) -> LaunchOptions:
    backend = Backend("simulator", simulator.base_url, simulator.sdk_url, "k")
    return LaunchOptions(
        settings=Settings(), backend=backend, data_dir=home, control_port=0, window=window
    )


def test_a_hidden_dock_is_built_when_shown_and_has_what_came_before(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    frame = MainWindow()
    frame.show()
    qtbot.waitExposed(frame)

    async def scenario() -> None:
        async with assemble(_options(simulator, tmp_path, frame)) as app:
            bench, window = app.shell.bench, app.shell.window
            assert app.control is not None
            assert bench.lazy_library.built is None and bench.lazy_ab.built is None
            assert isinstance(window.docks["voices"].widget(), Placeholder)
            # a voice added through the control API while the panel does not exist yet
            async with httpx.AsyncClient(
                base_url=app.control.url,
                headers={"Authorization": f"Bearer {app.control.token()}"},
            ) as api:
                added = await api.post("/api/v1/voices", json={"voice_id": "aaaaBBBBccccDDDDeeee"})
                assert added.status_code == 200, added.text
                window.docks["voices"].raise_()  # its tab clicked
                library = bench.lazy_library.built
                assert library is not None and window.docks["voices"].widget() is library
                assert library.isVisible()
                assert "aaaaBBBBccccDDDDeeee" in _voice_ids(app)
                # and once built it follows the library like any panel
                more = await api.post("/api/v1/voices", json={"voice_id": "ffffGGGGhhhhIIIIjjjj"})
                assert more.status_code == 200, more.text
                await until(lambda: "ffffGGGGhhhhIIIIjjjj" in _voice_ids(app))
            # "Use in the session form" is wired to the session panel although built late
            library.select("aaaaBBBBccccDDDDeeee")
            library.use_button.click()
            assert app.shell.session_panel.voice.value() == "aaaaBBBBccccDDDDeeee"
            assert bench.lazy_ab.built is None  # never shown, never asked for: never built

    qloop.run_until_complete(scenario())


def test_a_saved_layout_showing_a_lazy_dock_is_restored_with_its_panel(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    first = MainWindow()
    first.show()
    qtbot.waitExposed(first)
    first.docks["ab"].raise_()  # the user left the A/B tab on top...
    # ...and moved the voice library to the right, out of the log's tabs
    first.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, first.docks["voices"])
    first.docks["voices"].show()
    window_state.save(first)
    first.close()
    first.deleteLater()

    frame = MainWindow()  # restores the saved layout, as the app's frame does
    frame.show()
    qtbot.waitExposed(frame)
    shown_first = _on_top(frame)
    assert {"ab", "voices"} <= shown_first and "log" not in shown_first

    async def scenario() -> None:
        async with assemble(_options(simulator, tmp_path, frame)) as app:
            bench, window = app.shell.bench, app.shell.window
            window.paint_now()
            # both shown by the saved layout: built at start, each in its saved place
            assert bench.lazy_ab.built is not None and bench.lazy_library.built is not None
            assert window.docks["ab"].widget() is bench.lazy_ab.built
            assert bench.lazy_ab.built.isVisible()
            assert not window.docks["ab"].visibleRegion().isEmpty()
            assert (
                window.dockWidgetArea(window.docks["voices"])
                == Qt.DockWidgetArea.RightDockWidgetArea
            )
            assert not window.docks["voices"].visibleRegion().isEmpty()
            assert _on_top(window) == shown_first  # A/B, not the log, on top, and the rest

    qloop.run_until_complete(scenario())


def test_a_lazy_panel_is_built_once_and_tells_its_listeners(qtbot: Any) -> None:
    from PySide6.QtWidgets import QLabel

    made: list[QLabel] = []
    heard: list[QLabel] = []

    def build() -> QLabel:
        made.append(QLabel("panel"))
        return made[-1]

    lazy = LazyPanel(build)
    lazy.on_built(heard.append)
    assert lazy.built is None and not made
    panel = lazy.get()
    qtbot.addWidget(panel)
    assert lazy.get() is panel and made == [panel] and heard == [panel]
    late: list[QLabel] = []
    lazy.on_built(late.append)  # a listener after the build hears of it at once
    assert late == [panel]
