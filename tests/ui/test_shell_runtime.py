"""The window over the runtime: settings that apply at once, Terminate that asks, errors that go
away, and a key entered in Settings that switches to the cloud without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import qasync
from speaking_fakes import until

from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.session_state import EndReason, SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services import secrets
from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer
from avaturn_desktop.ui import main_window
from avaturn_desktop.ui import shell as shell_mod
from tests.assembled import bridge_ready, open_app, reach

pytestmark = pytest.mark.web

LONG = "This line goes on for a good while so that the avatar is still speaking it. " * 3


def test_settings_apply_at_once(qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            slot, shell = app.runtime.slot(0), app.shell
            assert slot.controller.keep_alive and slot.queue.policy == "hold"
            app.runtime.settings.update(
                keep_alive=False, offline_policy="refuse", warn_before_end_s=30, init_timeout_s=9
            )
            assert slot.controller.keep_alive is False
            assert slot.controller.init_timeout_s == 9
            assert slot.queue.policy == "refuse"
            assert shell.session_panel._warn_before_end_s == 30
            # and what the composer counts follows the chunking settings
            app.runtime.settings.update(split_sentences=False)
            assert slot.speaker.chunks("One. Two. Three.") == ["One. Two. Three."]

    qloop.run_until_complete(scenario())
    saved = (tmp_path / "settings.json").exists()
    assert not saved  # no config dir given: kept in memory, nothing written beside the data


def test_terminate_asks_while_the_avatar_speaks(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[bool] = []
    asked: list[str] = []

    def ask(_cls: Any, _parent: Any, busy: str) -> bool:
        asked.append(busy)
        return answers.pop(0)

    monkeypatch.setattr(main_window.TerminateDialog, "ask", classmethod(ask))

    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell, slot = app.shell, app.runtime.slot(0)
            await bridge_ready(app)
            assert await slot.controller.start(Settings().session.to_request())
            slot.speaker.say(LONG)
            await until(lambda: slot.speaking_item() is not None)

            answers.append(False)
            shell.window.terminate_action.trigger()  # Ctrl+Shift+W
            await asyncio.sleep(0)
            assert asked and "speaking" in asked[-1]
            assert slot.controller.state is SessionState.LIVE

            answers.append(True)
            shell.session_panel.terminate_button.click()
            await reach(slot.controller, SessionState.ENDED)
            assert slot.controller.snapshot.reason == EndReason.BY_USER.value

            # with the setting off it does not ask
            app.runtime.settings.update(confirm_terminate=False)
            assert await slot.controller.start(Settings().session.to_request())
            slot.speaker.say(LONG)
            await until(lambda: slot.speaking_item() is not None)
            before = len(asked)
            shell.window.terminate_action.trigger()
            await reach(slot.controller, SessionState.ENDED)
            assert len(asked) == before

    qloop.run_until_complete(scenario())


def test_an_error_goes_from_the_status_bar_when_a_later_session_goes_live(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell, slot = app.shell, app.runtime.slot(0)
            await bridge_ready(app)
            bad = Settings().session.model_copy(update={"voice_id": "no-such-voice"})
            assert not await slot.start_session(bad)
            assert slot.controller.state is SessionState.FAILED
            await until(lambda: "failed" in shell.window.statusBar().currentMessage().lower())
            assert await slot.start_session()
            assert shell.window.statusBar().currentMessage() == ""

    qloop.run_until_complete(scenario())


def test_a_key_entered_in_settings_switches_to_the_cloud_now(
    qloop: qasync.QEventLoop,
    simulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cloud = SimulatorServer(SimulatorConfig(port=0, chars_per_second=400.0, api_key="cloud-key"))
    cloud.start()
    monkeypatch.setattr(secrets, "load_api_key", lambda: ("cloud-key", "keyring"))
    monkeypatch.setattr(shell_mod.SwitchBackendDialog, "ask", classmethod(lambda _c, _p: True))
    settings = Settings(api_base=cloud.base_url, sdk_url=cloud.sdk_url)

    async def scenario() -> None:
        async with open_app(simulator, tmp_path, settings=settings) as app:
            shell, slot = app.shell, app.runtime.slot(0)
            await bridge_ready(app)
            assert app.runtime.backend.kind == "simulator"
            shell._key_stored()
            assert app.runtime.backend.kind == "cloud"
            assert "cloud" in shell.window.backend_status.text()
            assert await slot.controller.start(settings.session.to_request())
            session_id = slot.controller.session_id
            assert any(s["session_id"] == session_id for s in cloud.snapshot()["sessions"])
            assert not any(s["session_id"] == session_id for s in simulator.snapshot()["sessions"])
            slot.speaker.say("Hello from the cloud.")
            await until(
                lambda: any(
                    i.state is ItemState.SPOKEN for i in slot.queue.items if i.text.startswith("H")
                )
            )

    try:
        qloop.run_until_complete(scenario())
    finally:
        cloud.stop()
