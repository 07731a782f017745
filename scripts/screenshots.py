"""Take the README's screenshots: the window in each main state, against the simulator.

Run: ``python scripts/screenshots.py [OUT_DIR]`` (headless is fine: it uses Qt's offscreen
platform unless a display is set). Writes ``docs/screenshots/<state>.png``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("AVATURN_DESKTOP_HOME", tempfile.mkdtemp(prefix="avaturn-shots-"))
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from avaturn_desktop import qtenv

qtenv.prepare_environment()

import qasync  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from avaturn_desktop.app import Backend, LaunchOptions, assemble  # noqa: E402
from avaturn_desktop.core.session_state import SessionState  # noqa: E402
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


async def main(out: Path) -> None:
    sim = SimulatorServer(SimulatorConfig(chars_per_second=12))
    sim.start()
    backend = Backend("simulator", sim.base_url, sim.sdk_url, "local-simulator")
    options = LaunchOptions(backend=backend, data_dir=Path(os.environ["AVATURN_DESKTOP_HOME"]))
    async with assemble(options) as app:
        shell = app.shell
        shell.window.resize(1440, 900)
        shell.show()
        await settle(1.5)

        def shot(name: str) -> None:
            path = out / f"{name}.png"
            shell.window.grab().save(str(path))
            print(f"wrote {path}")  # noqa: T201

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
    sim.stop()


if __name__ == "__main__":
    register_schemes()
    app = QApplication(sys.argv[:1])
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        runner.run(main(target))
