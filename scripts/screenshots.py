"""Take the README's screenshots: the window in each main state, and the voice bench (two
avatars side by side, an A/B comparison with its ratings, the metrics plots), against the
simulator.

Run: ``python scripts/screenshots.py [OUT_DIR] [NAME ...]`` (headless is fine: it uses Qt's
offscreen platform unless a display is set; under ``xvfb-run -s "-screen 0 1920x1080x24"`` the
audience output is a real full-screen window). Writes ``docs/screenshots/<name>.png``; with
names, only those (``idle connecting live ended failed audience show avatars ab metrics``):
``audience.png`` is the audience output (chroma green, captions), ``show.png`` the console
with the cue list and the mirror of the audience output.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("AVATURN_DESKTOP_HOME", tempfile.mkdtemp(prefix="avaturn-shots-"))
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from avaturn_desktop import qtenv

qtenv.prepare_environment()

import qasync  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from avaturn_desktop.app import Backend, LaunchOptions, assemble  # noqa: E402
from avaturn_desktop.core import catalog  # noqa: E402
from avaturn_desktop.core.look import CHROMA_GREEN  # noqa: E402
from avaturn_desktop.core.session_state import SessionState  # noqa: E402
from avaturn_desktop.core.settings import Settings  # noqa: E402
from avaturn_desktop.simulator.faults import FaultConfig  # noqa: E402
from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer  # noqa: E402
from avaturn_desktop.ui.web.scheme import register_schemes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


async def settle(seconds: float) -> None:
    """Let the page paint (screenshots only; never in tests)."""
    await asyncio.sleep(seconds)


async def until(shell: object, state: SessionState) -> None:
    controller = shell.controller  # type: ignore[attr-defined]
    while controller.state not in (state, SessionState.FAILED):  # noqa: ASYNC110 (a script)
        await asyncio.sleep(0.05)


SHOW_SCRIPT = """\
# Opening
// smile, and wait for the room to settle
Good evening, everyone, and welcome to the launch of our new assistant.

// slower here
Tonight we will show you three things: how fast it is, how small it is, and how it helps.

# The product
It answers in under a second.
// click for the chart

Thank you all for coming tonight.
"""


async def main(out: Path, only: set[str]) -> None:
    sim = SimulatorServer(SimulatorConfig(chars_per_second=12))
    sim.start()
    backend = Backend("simulator", sim.base_url, sim.sdk_url, "local-simulator")
    options = LaunchOptions(
        # no question before Terminate: nobody is there to answer it
        settings=Settings(confirm_terminate=False),
        backend=backend,
        data_dir=Path(os.environ["AVATURN_DESKTOP_HOME"]),
    )
    async with assemble(options) as app:
        shell = app.shell
        shell.window.resize(1440, 900)
        shell.show()
        await settle(1.5)

        def shot(name: str) -> None:
            if only and name not in only:
                return
            path = out / f"{name}.png"
            shell.window.grab().save(str(path))
            print(f"wrote {path}")  # noqa: T201

        if not only or only & STATE_SHOTS:
            await state_shots(shell, sim, shot)
        if not only or only & SHOW_SHOTS:
            await show_shots(app, shell, out, shot)
        if not only or only & BENCH_SHOTS:
            await bench_shots(shell, sim, shot)
        # the sessions end while the simulator is still there
        await asyncio.gather(*(slot.controller.shutdown() for slot in app.runtime.slots))
    sim.stop()


async def state_shots(shell: Any, sim: SimulatorServer, shot: Callable[[str], None]) -> None:
    """The window in each main state."""
    shot("idle")
    sim.set_faults(FaultConfig(latency_ms=1500))
    shell.session_panel.create_button.click()
    await until(shell, SessionState.CONNECTING)
    await settle(0.3)
    shot("connecting")
    sim.set_faults(FaultConfig())
    await until(shell, SessionState.LIVE)
    composer = shell.speaking.composer
    composer.editor.setPlainText(
        "Good evening, everyone. Welcome to the launch. Let me show you what is new."
    )
    composer.queue_button.click()
    await settle(2.5)
    shot("live")
    shell.session_panel.terminate_button.click()
    await until(shell, SessionState.ENDED)
    await settle(0.8)
    shot("ended")
    shell.session_panel.voice.set_value("no-such-voice")
    shell.session_panel.create_button.click()
    await until(shell, SessionState.FAILED)
    await settle(0.8)
    shot("failed")


STATE_SHOTS = {"idle", "connecting", "live", "ended", "failed"}
SHOW_SHOTS = {"audience", "show"}


async def show_shots(app: Any, shell: Any, out: Path, shot: Callable[[str], None]) -> None:
    """The show: a script, a chroma-green stage with captions on the audience output."""
    if shell.controller.state.busy:
        shell.session_panel.terminate_button.click()
        await until(shell, SessionState.ENDED)
    slot = app.runtime.slot(0)
    slot.outputs.set_background(kind="colour", colour=CHROMA_GREEN)
    slot.outputs.set_captions(on=True, size_pct=5.0)
    slot.cues.load_text(SHOW_SCRIPT, markdown=True)
    shell.session_panel.voice.set_value(catalog.DEFAULT_VOICE_ID)
    shell.session_panel.create_button.click()
    await until(shell, SessionState.LIVE)
    slot.outputs.set_audience(open=True, screen=0, fullscreen=True)
    await settle(1.5)
    shell.show_ui.go_action.trigger()
    while slot.outputs.caption is None:  # noqa: ASYNC110 (a script)
        await asyncio.sleep(0.05)
    await settle(0.8)
    audience = shell.show_ui.audience.window
    assert audience is not None
    path = out / "audience.png"
    audience.grab().save(str(path))
    size = f"{audience.width()}x{audience.height()}, full screen: {audience.isFullScreen()}"
    print(f"wrote {path} ({size})")  # noqa: T201
    shell.show_ui.audience.update_mirror()
    await settle(0.2)
    shot("show")
    slot.outputs.set_audience(open=False)
    slot.outputs.set_background(kind="default")
    slot.outputs.set_captions(on=False)


BENCH_SHOTS = {"avatars", "ab", "metrics"}


async def live(slot: Any) -> None:
    controller = slot.controller
    while controller.state not in (SessionState.LIVE, SessionState.FAILED):  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def bench_shots(shell: Any, sim: SimulatorServer, shot: Callable[[str], None]) -> None:
    """Two avatars side by side, an A/B comparison rated, and the metrics plots."""
    from avaturn_desktop.core.catalog import VOICES
    from avaturn_desktop.ui.targets import ALL

    bench = shell.bench
    window = shell.window
    runtime = bench.runtime
    first = runtime.slot(0)
    if first.controller.state.busy:
        await live(first)
    if first.controller.state is not SessionState.LIVE:
        first.start_session(first.session_request({"voice_id": VOICES[0].id}))
        await live(first)
    second = bench.add_avatar()
    second.start_session(second.session_request({"voice_id": VOICES[3].id}))
    await live(second)
    view = bench.stages.views[1]
    view.session_panel.voice.set_value(VOICES[3].id)
    await settle(0.3)
    window.resizeDocks(
        [window.docks["session"], bench.stages.docks[1], window.docks["queue"]],
        [330, 405, 300],
        Qt.Orientation.Horizontal,
    )
    window.resizeDocks([window.docks["log"]], [330], Qt.Orientation.Vertical)
    bench.selector.setCurrentIndex(bench.selector.findData(ALL))
    composer = shell.speaking.composer
    composer.editor.setPlainText(
        "Welcome to the voice bench. Two avatars, two voices, the same lines."
    )
    composer.queue_button.click()
    await settle(2.5)
    shot("avatars")

    # an A/B comparison in the first avatar's session, blind, rated
    ab = bench.ab
    window.docks["ab"].raise_()
    window.resizeDocks([window.docks["ab"]], [430], Qt.Orientation.Vertical)
    ab.lines.setPlainText("Good evening, and welcome.\nTonight we show you three things.")
    ab.tick(VOICES[0].id, VOICES[2].id)
    ab.blind.setChecked(True)
    runner = ab.start()
    while runner.run.state in ("ready", "running"):  # noqa: ASYNC110 (a script)
        await asyncio.sleep(0.1)
    for row, rating in enumerate((4, 3, 5, 2)):
        ab.table.cellWidget(row, 3).setValue(rating)
    ab.table.resizeColumnsToContents()
    await settle(0.5)
    shot("ab")

    # lines on both avatars, then the plots
    for n in range(6):
        for slot in runtime.slots:
            slot.speaker.say(f"Line {n + 1} of the latency run, said by {slot.label}.")
    await settle(6)
    window.docks["metrics"].raise_()
    window.resizeDocks([window.docks["metrics"]], [520], Qt.Orientation.Vertical)
    bench.metrics.redraw()
    await settle(1.5)
    bench.metrics.redraw()
    shot("metrics")


if __name__ == "__main__":
    register_schemes()
    app = QApplication(sys.argv[:1])
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        runner.run(main(target, set(sys.argv[2:])))
