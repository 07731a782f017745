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


@pytest.mark.parametrize("how", ["deleted elsewhere", "killed by the service"])
def test_a_session_the_service_ends_says_why(
    view: AvatarView, stage: Stage, qloop: qasync.QEventLoop, simulator: Any, how: str
) -> None:
    """Ended from elsewhere (another client's DELETE) or killed: the page hears it from the
    service's event channel, the service confirms it, and the session says why, in the
    service's words (not "connection to the avatar lost")."""
    from avaturn_desktop.core.models import SessionCreate
    from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState
    from avaturn_desktop.services.client import AvaturnClient
    from avaturn_desktop.services.session import SessionController

    async def scenario() -> SessionSnapshot:
        async with httpx.AsyncClient(timeout=5.0) as http:
            client = AvaturnClient(http, api_key="test", base_url=simulator.base_url)
            controller = SessionController(
                client,
                stage,
                api_host=simulator.base_url,
                sdk_url=simulator.sdk_url,
                init_timeout_s=10,
            )
            stage.event.connect(controller.handle_page_event)
            ended = asyncio.Event()
            controller.subscribe(lambda snap: snap.state is SessionState.ENDED and ended.set())
            try:
                assert await controller.start(SessionCreate())
                session_id = controller.session_id
                if how == "deleted elsewhere":
                    answer = await http.delete(
                        f"{simulator.base_url}/api/v1/sessions/{session_id}",
                        headers={"Authorization": "Bearer another-client"},
                    )
                else:
                    answer = await http.post(
                        f"{simulator.base_url}/_sim/sessions/{session_id}/kill",
                        json={"reason": "The operator pulled the plug"},
                    )
                answer.raise_for_status()
                await asyncio.wait_for(ended.wait(), 15)
                return controller.snapshot
            finally:
                stage.event.disconnect(controller.handle_page_event)
                await controller.shutdown()

    snap = qloop.run_until_complete(scenario())
    assert snap.reason == EndReason.SERVER.value
    expected = {
        "deleted elsewhere": "The session was terminated",
        "killed by the service": "The operator pulled the plug",
    }[how]
    assert snap.detail == expected
