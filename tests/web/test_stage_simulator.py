"""The stage page with the simulator's Web SDK module and its service, end to end."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import qasync

from avaturn_desktop.core.errors import InvalidRequestError
from avaturn_desktop.core.events import (
    AvatarEndedSpeaking,
    AvatarStartedSpeaking,
    Disposed,
    PageEvent,
    SpeechPageEvent,
)
from avaturn_desktop.core.models import SessionCreated
from avaturn_desktop.ui.web.stage import Stage, StageError
from avaturn_desktop.ui.web.view import AvatarView

RunJs = Callable[..., Any]


def _create_session(base_url: str) -> SessionCreated:
    answer = httpx.post(
        f"{base_url}/api/v1/sessions", headers={"Authorization": "Bearer test"}, timeout=5.0
    )
    answer.raise_for_status()
    return SessionCreated.model_validate(answer.json())


def _dom(view: AvatarView, run_js: RunJs) -> dict[str, Any]:
    state = run_js(
        view,
        "JSON.stringify({placeholder: !document.getElementById('placeholder').hidden,"
        " message: document.getElementById('message').hidden ? ''"
        "   : document.getElementById('message').textContent,"
        " avatars: document.querySelectorAll('#avatar-root *').length})",
    )
    return dict(json.loads(state))


@pytest.fixture
def stage(view: AvatarView) -> Stage:
    return Stage(view.bridge, view, allow_media_origins=view.avatar_page.allow_media_origins)


def test_session_on_the_simulator(
    view: AvatarView,
    stage: Stage,
    qloop: qasync.QEventLoop,
    simulator: Any,
    run_js: RunJs,
    next_emission: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="avaturn.js")
    created = _create_session(simulator.base_url)
    events: list[PageEvent] = []
    stage.event.connect(events.append)

    async def connect_and_speak() -> tuple[str, str]:
        session_id = await stage.connect(
            created.token, api_host=simulator.base_url, sdk_url=simulator.sdk_url, timeout_s=10.0
        )
        ended = asyncio.ensure_future(
            next_emission(stage.event, lambda e: isinstance(e, AvatarEndedSpeaking))
        )
        await asyncio.sleep(0)
        task_id = await stage.task("Hello there.")
        await ended
        return session_id, task_id

    session_id, task_id = qloop.run_until_complete(connect_and_speak())
    assert session_id == created.session_id
    assert task_id
    speech = [e for e in events if isinstance(e, SpeechPageEvent)]
    assert isinstance(speech[0], AvatarStartedSpeaking)
    assert isinstance(speech[-1], AvatarEndedSpeaking)
    assert _dom(view, run_js)["placeholder"] is False

    qloop.run_until_complete(stage.cancel_all())
    with pytest.raises(InvalidRequestError) as info:
        qloop.run_until_complete(stage.change_voice("no-such-voice"))
    assert info.value.status == 400
    assert info.value.detail
    assert info.value.detail in info.value.user_message

    qloop.run_until_complete(stage.dispose())
    assert any(isinstance(e, Disposed) for e in events)
    assert _dom(view, run_js) == {"placeholder": True, "message": "", "avatars": 0}
    # all of it under the stage's policy for the simulator, which refused nothing it needs
    assert f"script-src 'self' {simulator.base_url};" in view.avatar_page.policy
    assert not [r for r in caplog.records if "Content Security Policy" in r.getMessage()]


def test_unknown_token_fails_to_connect(
    view: AvatarView, stage: Stage, qloop: qasync.QEventLoop, simulator: Any, run_js: RunJs
) -> None:
    with pytest.raises(StageError) as info:
        qloop.run_until_complete(
            stage.connect(
                "not-a-token",
                api_host=simulator.base_url,
                sdk_url=simulator.sdk_url,
                timeout_s=5.0,
            )
        )
    assert "could not connect" in info.value.user_message
    assert _dom(view, run_js)["message"]
