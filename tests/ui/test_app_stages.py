"""Start-up in stages: the main window's frame is on screen with Qt alone imported, and the
panels then take the docks' places without moving them (no pop-in of panels)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtCore import QRect

from avaturn_desktop.app import LaunchOptions, assemble
from avaturn_desktop.core.backend import Backend
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.ui.main_window import DOCKS, MainWindow, Placeholder

ROOT = Path(__file__).resolve().parents[2]


def _layout(window: MainWindow) -> dict[str, tuple[int, int, int, int]]:
    """Where the window, its stage and every dock on top of its place are, on screen."""

    def rect(r: QRect) -> tuple[int, int, int, int]:
        return (r.x(), r.y(), r.width(), r.height())

    central = window.centralWidget()
    assert central is not None
    places = {"window": rect(window.geometry()), "stage": rect(central.geometry())}
    for name, dock in window.docks.items():
        if dock.isVisible() and not dock.visibleRegion().isEmpty():
            places[name] = rect(dock.geometry())
    return places


def test_the_frame_is_shown_with_qt_alone() -> None:
    """What ``main`` imports and builds before the first paint pulls in none of the services'
    libraries (on the old code the window's module imported them all)."""
    heavy = ["pydantic", "httpx", "qasync", "keyring", "sqlite3", "fastapi", "uvicorn"]
    code = (
        "import sys\n"
        "from avaturn_desktop import app, cli\n"
        "cli.run_parser().parse_args(['--headless'])\n"
        "from avaturn_desktop.ui import main_window, qtlog\n"
        "from avaturn_desktop.ui.web import scheme\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.web
def test_the_panels_fill_the_frame_without_moving_it(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    frame = MainWindow()
    frame.show()
    qtbot.waitExposed(frame)
    first = _layout(frame)
    placeholders = [d.widget() for d in frame.docks.values()]
    assert all(isinstance(w, Placeholder) for w in placeholders)
    assert set(frame.docks) == {name for name, *_ in DOCKS}
    # the docks on top at the first paint: the session, the composer, the queue, the log
    assert {"session", "composer", "queue", "log"} <= set(first), first

    async def scenario() -> None:
        backend = Backend("simulator", simulator.base_url, simulator.sdk_url, "k")
        options = LaunchOptions(
            settings=Settings(), backend=backend, data_dir=tmp_path, window=frame
        )
        async with assemble(options) as app:
            window = app.shell.window
            assert window is frame  # the very window shown first, not a splash
            window.paint_now()
            filled = _layout(window)
            assert filled == first
            # the panels behind another's tab that keep nothing from the start are built
            # when first shown (ui/lazy.py); every other dock holds its panel
            lazy = {"voices", "ab"}
            for name, dock in window.docks.items():
                assert isinstance(dock.widget(), Placeholder) == (name in lazy), name
            assert app.shell.bench.lazy_library.built is None
            for name in lazy:
                window.docks[name].raise_()
                assert not isinstance(window.docks[name].widget(), Placeholder), name
            assert app.shell.bench.lazy_library.built is app.shell.bench.library
            assert app.shell.session_panel.isVisible()
            assert window.backend_status.text() == backend.label

    qloop.run_until_complete(scenario())


@pytest.mark.web
def test_a_window_closed_before_its_panels_came_ends_the_app(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    frame = MainWindow()
    frame.show()
    qtbot.waitExposed(frame)
    frame.close()

    async def scenario() -> None:
        backend = Backend("simulator", simulator.base_url, simulator.sdk_url, "k")
        options = LaunchOptions(backend=backend, data_dir=tmp_path, window=frame)
        async with assemble(options) as app:
            await app.shell.wait_closed()  # at once: nobody waits for a closed window

    qloop.run_until_complete(scenario())


@pytest.mark.web
def test_a_built_in_simulator_that_does_not_come_up_is_said_in_the_window(
    qloop: qasync.QEventLoop, tmp_path: Path, qtbot: Any
) -> None:
    """The window is built without waiting for the child simulator; if it then fails to
    start, the window says so (before, start-up itself waited for it and failed)."""
    from avaturn_desktop.simulator.child import start_child

    child = start_child(api_key="k" * 24, extra_args=["--chars-per-second", "-1"], prebind=True)
    frame = MainWindow()
    frame.show()
    qtbot.waitExposed(frame)

    async def scenario() -> None:
        options = LaunchOptions(
            settings=Settings(), data_dir=tmp_path, window=frame, child_simulator=(child, "k")
        )
        async with assemble(options) as app:
            said = asyncio.Event()
            errors: list[str] = []

            def heard(level: str, text: str) -> None:
                if level == "error":
                    errors.append(text)
                    if "did not start" in text:
                        said.set()

            app.runtime.notices.subscribe(heard)
            async with asyncio.timeout(30):
                await said.wait()
            assert "exit code 2" in " ".join(errors)
            assert "k" * 24 not in " ".join(errors)

    try:
        qloop.run_until_complete(scenario())
    finally:
        child.stop()
