"""The show in the assembled app: a script opened, GO with Space, captions the page draws from
the speaking events, the audience output with the stage moved into it, a chroma background the
page paints, Show mode, and keys the presenter chooses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest
from speaking_fakes import until

from avaturn_desktop.core.look import CHROMA_GREEN
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.session_state import SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.cues import CueState
from avaturn_desktop.ui import main_window
from avaturn_desktop.ui.keys import KeysEditor, KeysHelp
from avaturn_desktop.ui.web.view import AvatarView
from tests.assembled import bridge_ready, open_app, reach

pytestmark = pytest.mark.web

SCRIPT = """\
# Welcome
// smile, then wait for the room
Good evening, everyone. It is good to see you here tonight.

// slower
Tonight we will show you three things.

# Close
Thank you for coming.
"""


async def js(view: AvatarView, code: str) -> Any:
    """Run ``code`` in the stage page's main world and return its result."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    view.page().runJavaScript(code, 0, lambda result: fut.done() or fut.set_result(result))
    return await asyncio.wait_for(fut, 10)


async def page_look(view: AvatarView) -> dict[str, Any]:
    raw = await js(
        view,
        "(() => { const box = document.getElementById('captions');"
        " return JSON.stringify({"
        "  background: document.documentElement.dataset.background || 'default',"
        "  audience: document.documentElement.classList.contains('audience'),"
        "  body: getComputedStyle(document.body).backgroundColor,"
        "  caption: box && !box.hidden ? box.textContent : null,"
        "  placeholder: getComputedStyle(document.getElementById('placeholder')).display}); })()",
    )
    return dict(json.loads(raw))


async def look_is(view: AvatarView, **wanted: Any) -> dict[str, Any]:
    """Until the page's look has every ``wanted`` value (polled: the page answers async)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        look = await page_look(view)
        if all(look.get(k) == v for k, v in wanted.items()):
            return look
        if loop.time() > deadline:
            raise AssertionError(f"the page looks {look}, not {wanted}")
        await asyncio.sleep(0.02)


def test_a_script_goes_out_cue_by_cue_with_captions_on_an_audience_output(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    script = tmp_path / "keynote.md"
    script.write_text(SCRIPT, encoding="utf-8")

    async def scenario() -> None:
        async with open_app(simulator, tmp_path / "home") as app:
            shell, slot = app.shell, app.runtime.slot(0)
            show = shell.show_ui
            shell.show()
            await bridge_ready(app)
            # a chroma-green stage: the page paints it, and the avatar comes without its own
            slot.outputs.set_background(kind="colour", colour=CHROMA_GREEN)
            await look_is(shell.view, background="colour", body="rgb(0, 177, 64)")
            slot.outputs.set_captions(on=True, size_pct=6)
            assert show.captions_action.isChecked()

            assert show.presenter.open_path(script)
            panel = show.panel
            panel.refresh()
            assert panel.model.rowCount() == 3
            assert panel.model.index(0, 1).data() == "Welcome"
            assert "smile" in panel.model.index(0, 3).data()
            slot.start_session()
            await reach(slot.controller, SessionState.LIVE)
            (session,) = [
                s
                for s in simulator.snapshot()["sessions"]
                if s["session_id"] == slot.controller.session_id
            ]
            assert session["background"] == "transparent"

            # Space in the cue list is GO
            panel.table.setFocus()
            QTest.keyClick(panel.table, Qt.Key.Key_Space)
            assert slot.cues.standby == 1
            first = "Good evening, everyone."
            await until(lambda: (slot.speaking_item() or _none).text == first, 20)
            look = await look_is(shell.view, caption=first)
            assert look["background"] == "colour"
            # the simulated SDK's own caption is gone: only the page's caption box shows text
            assert await js(shell.view, "document.querySelectorAll('.caption-line').length") == 1

            # the audience output: the stage moves into a frameless, cursorless window
            slot.outputs.set_audience(open=True, screen=0, fullscreen=True)
            window = show.audience.window
            assert window is not None and shell.view.window() is window
            assert window.windowFlags() & Qt.WindowType.FramelessWindowHint
            assert window.cursor().shape() == Qt.CursorShape.BlankCursor
            assert window.isFullScreen()
            assert show.host.away and show.audience_action.isChecked()
            await look_is(shell.view, audience=True, placeholder="none")
            show.audience.update_mirror()
            mirror = show.host.mirror.pixmap
            assert mirror is not None and not mirror.isNull()
            await until(lambda: slot.queue.items[-1].state is ItemState.SPOKEN, 20)
            await look_is(shell.view, caption=None)

            # GO from the Show menu's action (its key works anywhere), then close the output
            show.go_action.trigger()
            await until(lambda: slot.cues.cue_state(1) is CueState.PLAYING, 20)
            slot.outputs.set_audience(open=False)
            assert show.audience.window is None and not show.host.away
            assert shell.view.window() is shell.window
            await look_is(shell.view, audience=False)
            sent = [t["text"] for t in session_tasks(simulator, slot.controller.session_id)]
            assert sent == [
                "Good evening, everyone.",
                "It is good to see you here tonight.",
                "Tonight we will show you three things.",
            ]
            assert not any("smile" in t or "Welcome" in t or "slower" in t for t in sent)

    qloop.run_until_complete(scenario())


class _None:
    text = None


_none = _None()


def session_tasks(simulator: Any, session_id: str | None) -> list[dict[str, Any]]:
    (session,) = [s for s in simulator.snapshot()["sessions"] if s["session_id"] == session_id]
    return list(session["tasks"])


def test_show_mode_locks_the_script_and_asks_before_ending(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(
        main_window.TerminateDialog, "ask", classmethod(lambda _c, _p, busy: asked.append(busy))
    )  # answers None: no

    async def scenario() -> None:
        settings = Settings(confirm_terminate=False)
        async with open_app(simulator, tmp_path / "home", settings=settings) as app:
            shell, slot = app.shell, app.runtime.slot(0)
            show = shell.show_ui
            await bridge_ready(app)
            slot.cues.load_text(SCRIPT)
            show.panel.refresh()
            text = show.panel.model.index(0, 2)
            assert show.panel.model.flags(text) & Qt.ItemFlag.ItemIsEditable
            assert show.panel.model.setData(text, "Good evening.")
            assert slot.cues.dirty and slot.cues.cues()[0].text == "Good evening."

            show.show_mode_action.trigger()
            assert show.show_mode and shell.window.show_badge.isVisibleTo(shell.window)
            assert not show.panel.model.flags(text) & Qt.ItemFlag.ItemIsEditable
            assert not show.open_action.isEnabled() and not shell.window.settings_action.isEnabled()
            assert not shell.session_panel.voice.isEnabled()
            # double-click still puts a cue on standby: that is running the show
            show.panel.table.standby_requested.emit(2)
            assert slot.cues.standby == 2

            assert await slot.controller.start(Settings().session.to_request())
            shell.window.terminate_action.trigger()  # nothing speaks, and yet it asks
            await asyncio.sleep(0)
            assert asked and "show" in asked[-1]
            assert slot.controller.state is SessionState.LIVE

            show.show_mode_action.trigger()
            assert not show.show_mode and show.open_action.isEnabled()

    qloop.run_until_complete(scenario())


def test_keys_follow_the_settings_conflicts_are_flagged_and_the_list_prints(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path / "home") as app:
            shell = app.shell
            show = shell.show_ui
            assert show.go_action.shortcut() == QKeySequence("Ctrl+G")
            assert shell.speaking.composer.stop_shortcut.key() == QKeySequence("Ctrl+.")
            app.runtime.settings.update(keys={"go": "F8", "stop": "F12"})
            assert show.go_action.shortcut() == QKeySequence("F8")
            assert shell.speaking.composer.stop_shortcut.key() == QKeySequence("F12")
            assert shell.window.create_action.shortcut() == QKeySequence("Ctrl+Shift+N")

            help_dialog = KeysHelp(show.keymap, shell.window)  # type: ignore[arg-type]
            text = help_dialog.browser.toPlainText()
            assert "F8" in text and "GO: speak the standby cue" in text and "Space" in text
            help_dialog.deleteLater()

            editor = KeysEditor({"go": "F8"})
            qtbot.addWidget(editor)
            assert not editor.conflicts
            editor.edits["back"].setKeySequence(QKeySequence("F8"))
            assert set(editor.conflicts) == {"go", "back"}
            assert "Give one of them another key" in editor.message.text()
            editor.edits["back"].setKeySequence(QKeySequence("Ctrl+Shift+B"))
            assert not editor.conflicts and editor.keys()["go"] == "F8"

    qloop.run_until_complete(scenario())
