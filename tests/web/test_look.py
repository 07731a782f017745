"""The stage's look on the page: backgrounds it really paints, the audience flag, and captions,
set by ``look`` / ``caption`` commands through the bridge, kept over a reload."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from avaturn_desktop.core.events import CaptionCommand, LookCommand
from avaturn_desktop.core.look import CHROMA_BLUE
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.outputs import Outputs
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.ui.web.look import ImageError, StageLook, image_data_url
from avaturn_desktop.ui.web.view import AvatarView

RunJs = Callable[..., Any]
# a 1x1 red PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def look(view: AvatarView, run_js: RunJs) -> dict[str, Any]:
    raw = run_js(
        view,
        "(() => { const root = document.documentElement, box = document.getElementById('captions');"
        " const line = box && box.firstElementChild;"
        " return JSON.stringify({background: root.dataset.background || 'default',"
        "  body: getComputedStyle(document.body).backgroundColor,"
        "  image: getComputedStyle(document.body).backgroundImage.slice(0, 22),"
        "  audience: root.classList.contains('audience'),"
        "  message: getComputedStyle(document.getElementById('message')).display,"
        "  caption: box && !box.hidden ? box.textContent : null,"
        "  top: box ? getComputedStyle(box).top : null,"
        "  colour: line ? getComputedStyle(line).color : null}); })()",
    )
    return dict(json.loads(raw))


def wait_look(qtbot: Any, view: AvatarView, run_js: RunJs, **wanted: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def matches() -> None:
        seen.update(look(view, run_js))
        assert all(seen.get(k) == v for k, v in wanted.items()), seen

    qtbot.waitUntil(matches, timeout=10_000)
    return seen


def test_commands_paint_the_stage(view: AvatarView, run_js: RunJs, qtbot: Any) -> None:
    send = view.bridge.send
    send(LookCommand(ref=1, background="colour", background_colour=CHROMA_BLUE, captions=True))
    wait_look(qtbot, view, run_js, background="colour", body="rgb(0, 71, 187)", caption=None)
    send(CaptionCommand(ref=2, text="Hello <b>there</b>."))
    seen = wait_look(qtbot, view, run_js, caption="Hello <b>there</b>.")  # text, never markup
    assert seen["colour"] == "rgb(255, 255, 255)"
    send(
        LookCommand(
            ref=3,
            background="transparent",
            captions=True,
            caption_position="top",
            caption_colour="#ffd27a",
            audience=True,
        )
    )
    seen = wait_look(qtbot, view, run_js, background="transparent", audience=True)
    assert seen["body"] == "rgba(0, 0, 0, 0)" and seen["message"] == "none"
    assert seen["top"] != "auto" and seen["colour"] == "rgb(255, 210, 122)"
    send(LookCommand(ref=4, captions=False))
    wait_look(qtbot, view, run_js, caption=None, background="default", audience=False)
    # what is not a base64 image URL is not painted (nothing can end the CSS url() early)
    send(LookCommand(ref=5, background="image", background_image='data:image/png,");x'))
    wait_look(qtbot, view, run_js, background="default")
    image = "data:image/png;base64," + base64.b64encode(PNG).decode()
    send(LookCommand(ref=6, background="image", background_image=image))
    wait_look(qtbot, view, run_js, background="image", image='url("data:image/png;ba')


def test_stage_look_follows_the_outputs_and_survives_a_reload(
    view: AvatarView, run_js: RunJs, qtbot: Any, tmp_path: Path
) -> None:
    from fakes import FakeClient, FakeController, FakeStage

    from avaturn_desktop.services.speech_queue import SpeechQueue
    from avaturn_desktop.services.tasklog import TaskLogStore

    store = TaskLogStore(tmp_path / "log.sqlite3")
    settings = SettingsStore(Settings())
    queue = SpeechQueue(FakeClient(), store, FakeController(), stage=FakeStage())
    outputs = Outputs(queue, settings)
    errors: list[str] = []
    stage_look = StageLook(view.bridge, view.page(), outputs, on_error=errors.append)
    try:
        outputs.set_captions(on=True)
        outputs.set_background(kind="transparent")
        wait_look(qtbot, view, run_js, background="transparent")
        assert view.page().backgroundColor().alpha() == 0
        stage_look.set_audience(True)
        wait_look(qtbot, view, run_js, audience=True)
        with qtbot.waitSignal(view.bridge.ready_changed, timeout=20_000):
            view.load_stage()
        qtbot.waitUntil(lambda: view.bridge.ready, timeout=20_000)
        wait_look(qtbot, view, run_js, background="transparent", audience=True)
        outputs.set_background(kind="image", image=str(tmp_path / "missing.png"))
        wait_look(qtbot, view, run_js, background="default")
        assert errors and "missing.png" in errors[-1]
        assert view.page().backgroundColor() != Qt.GlobalColor.transparent
    finally:
        stage_look.close()
        outputs.close()
        store.close()


def test_image_data_urls(tmp_path: Path) -> None:
    picture = tmp_path / "stage.PNG"
    picture.write_bytes(PNG)
    assert image_data_url(picture).startswith("data:image/png;base64,iVBOR")
    for name, reason in (("notes.txt", "not a picture"), ("gone.jpg", "Could not read")):
        path = tmp_path / name
        if name.endswith(".txt"):
            path.write_text("x")
        with pytest.raises(ImageError, match=reason):
            image_data_url(path)
