"""The Stage facade driving the real page, with the test-double SDK (tests/web/fake_sdk.js)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import qasync

from avaturn_desktop.core.errors import InvalidRequestError
from avaturn_desktop.core.events import (
    AvatarEndedSpeakingPhrase,
    AvatarStartedSpeaking,
    AvatarStartedSpeakingPhrase,
    CommandResult,
    Disposed,
    InitCommand,
    PageEvent,
    SdkLoaded,
    SpeechPageEvent,
)
from avaturn_desktop.ui.web.stage import Stage, StageError
from avaturn_desktop.ui.web.view import AvatarView
from tests.web.helpers import use_backend

RunJs = Callable[..., Any]
API_HOST = "http://127.0.0.1:9"  # the test double never calls it
TOKEN = "tok-very-secret-123"


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
def stage(view: AvatarView, qtbot: Any, fake_sdk_url: str) -> Stage:
    # The stage runs under the policy for this backend from the start (a connect to another
    # backend reloads the page first).
    use_backend(view, qtbot, API_HOST, fake_sdk_url)
    return Stage(
        view.bridge,
        view,
        allow_media_origins=view.avatar_page.allow_media_origins,
        command_timeout_s=5.0,
    )


def test_full_flow(
    view: AvatarView,
    stage: Stage,
    qloop: qasync.QEventLoop,
    fake_sdk_url: str,
    run_js: RunJs,
    next_emission: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[PageEvent] = []
    stage.event.connect(events.append)
    caplog.set_level(logging.DEBUG)

    async def connect_and_speak() -> tuple[str, str]:
        session_id = await stage.connect(
            TOKEN, api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=5.0
        )
        ended = asyncio.ensure_future(
            next_emission(stage.event, lambda e: isinstance(e, AvatarEndedSpeakingPhrase))
        )
        await asyncio.sleep(0)  # let the waiter connect before speech can start
        task_id = await stage.task("Hello there.")
        await ended
        return session_id, task_id

    session_id, task_id = qloop.run_until_complete(connect_and_speak())
    assert session_id == "fake-session"
    assert task_id.startswith("fake-task-")
    assert any(isinstance(e, SdkLoaded) for e in events)
    speech = [e for e in events if isinstance(e, SpeechPageEvent)]
    assert isinstance(speech[0], AvatarStartedSpeaking)
    assert AvatarStartedSpeakingPhrase(phrase_id=task_id, at_ms=speech[1].at_ms) == speech[1]
    assert all(e.at_ms is not None and e.at_ms > 0 for e in speech)
    assert view.avatar_page.media_origins >= {"http://127.0.0.1:9"}
    dom = _dom(view, run_js)
    assert dom["placeholder"] is False
    assert dom["avatars"] >= 1
    options = "JSON.stringify(document.querySelector('.fake-avatar').dataset)"
    assert json.loads(run_js(view, options)) == {"keepAlive": "true", "immediatelyJoin": "true"}

    qloop.run_until_complete(stage.cancel_all())
    qloop.run_until_complete(stage.change_voice("voice-b"))
    with pytest.raises(InvalidRequestError) as info:
        qloop.run_until_complete(stage.change_voice("no-such-voice"))
    assert info.value.status == 400
    assert info.value.detail == "Unknown voice_id: no-such-voice"
    assert "Unknown voice_id: no-such-voice" in info.value.user_message

    qloop.run_until_complete(stage.dispose())
    assert any(isinstance(e, Disposed) and e.reason is None for e in events)
    dom = _dom(view, run_js)
    assert dom == {"placeholder": True, "message": "", "avatars": 0}

    # without a live avatar, commands fail readably instead of hanging
    with pytest.raises(StageError, match="No avatar is live"):
        qloop.run_until_complete(stage.task("Anyone?"))
    qloop.run_until_complete(stage.dispose())  # idempotent

    # the token never reaches a log line, Python's or the page's
    assert TOKEN not in caplog.text
    assert not [r for r in caplog.records if TOKEN in repr(r.args)]


def test_sdk_that_cannot_load_is_a_stage_error_and_a_visible_message(
    view: AvatarView, stage: Stage, qloop: qasync.QEventLoop, run_js: RunJs
) -> None:
    with pytest.raises(StageError, match="could not be loaded") as info:
        qloop.run_until_complete(
            stage.connect(
                TOKEN,
                api_host=API_HOST,
                sdk_url="http://127.0.0.1:9/web-sdk.js",  # discard port: nothing listens
                timeout_s=5.0,
            )
        )
    assert not info.value.timed_out
    dom = _dom(view, run_js)
    assert "could not be loaded" in dom["message"]
    assert dom["placeholder"] is True


def test_module_without_avaturn_head_is_refused(
    view: AvatarView, stage: Stage, qloop: qasync.QEventLoop, run_js: RunJs, fake_sdk_url: str
) -> None:
    not_sdk = fake_sdk_url.replace("fake_sdk.js", "not_an_sdk.js")
    with pytest.raises(StageError, match="does not export AvaturnHead"):
        qloop.run_until_complete(
            stage.connect(TOKEN, api_host=API_HOST, sdk_url=not_sdk, timeout_s=5.0)
        )
    assert "AvaturnHead" in _dom(view, run_js)["message"]


def test_init_timeout_is_reported(
    view: AvatarView, stage: Stage, qloop: qasync.QEventLoop, fake_sdk_url: str, run_js: RunJs
) -> None:
    with pytest.raises(StageError, match="did not connect within") as info:
        qloop.run_until_complete(
            stage.connect("hang", api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=0.3)
        )
    assert info.value.timed_out
    dom = _dom(view, run_js)
    assert "did not connect within" in dom["message"]
    assert dom["placeholder"] is True
    assert dom["avatars"] == 0


def test_init_rejection_carries_the_server_detail(
    view: AvatarView, stage: Stage, qloop: qasync.QEventLoop, fake_sdk_url: str, run_js: RunJs
) -> None:
    with pytest.raises(StageError, match="Session not found") as info:
        qloop.run_until_complete(
            stage.connect("gone", api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=5.0)
        )
    assert not info.value.timed_out
    assert "Session not found" in _dom(view, run_js)["message"]


def test_second_init_while_one_runs_is_refused(
    view: AvatarView,
    stage: Stage,
    qloop: qasync.QEventLoop,
    fake_sdk_url: str,
    next_emission: Any,
) -> None:
    async def scenario() -> tuple[CommandResult, StageError]:
        first = asyncio.ensure_future(
            stage.connect("hang", api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=1.0)
        )
        await next_emission(stage.event, lambda e: isinstance(e, SdkLoaded))
        # the Stage itself refuses...
        with pytest.raises(StageError, match="already connecting"):
            await stage.connect(TOKEN, api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=1.0)
        # ...and so does the page, if a second init reaches it anyway
        answer = asyncio.ensure_future(
            next_emission(stage.event, lambda e: isinstance(e, CommandResult) and e.ref == 999)
        )
        await asyncio.sleep(0)
        view.bridge.send(
            InitCommand(
                ref=999, token=TOKEN, api_host=API_HOST, sdk_url=fake_sdk_url, timeout_ms=1000
            )
        )
        refused = await answer
        try:
            await first
        except StageError as exc:
            return refused, exc
        raise AssertionError("the hanging init should have failed")

    refused, first_error = qloop.run_until_complete(scenario())
    assert refused.ok is False
    assert refused.error == "An avatar is already connecting."
    assert first_error.timed_out


def test_commands_sent_before_the_page_is_ready_are_queued(
    make_view: Callable[[], AvatarView],
    qloop: qasync.QEventLoop,
    fake_sdk_url: str,
) -> None:
    view = make_view()
    stage = Stage(
        view.bridge,
        view,
        allow_media_origins=view.avatar_page.allow_media_origins,
        command_timeout_s=5.0,
    )
    assert not view.bridge.ready

    async def scenario() -> str:
        connecting = asyncio.ensure_future(
            stage.connect(TOKEN, api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=5.0)
        )
        await asyncio.sleep(0)
        view.load_stage()
        return await connecting

    assert qloop.run_until_complete(scenario()) == "fake-session"
    qloop.run_until_complete(stage.dispose())


def test_reload_fails_commands_in_flight(
    view: AvatarView,
    stage: Stage,
    qloop: qasync.QEventLoop,
    fake_sdk_url: str,
) -> None:
    async def scenario() -> None:
        connecting = asyncio.ensure_future(
            stage.connect("hang", api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=5.0)
        )
        await asyncio.sleep(0)
        view.reload()
        await connecting

    with pytest.raises(StageError, match="reloaded"):
        qloop.run_until_complete(scenario())


def test_a_flooding_sdk_is_cut_to_the_rate(
    view: AvatarView,
    stage: Stage,
    qloop: qasync.QEventLoop,
    fake_sdk_url: str,
    qtbot: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 events at once from the SDK, through the real page and port: at most the bridge's
    rate is taken, the rest is dropped, counted, and logged once."""
    from avaturn_desktop.ui.web.bridge import MAX_MESSAGES_PER_S

    speech: list[PageEvent] = []
    stage.event.connect(lambda e: isinstance(e, SpeechPageEvent) and speech.append(e))
    caplog.set_level(logging.WARNING, logger="avaturn.web")
    qloop.run_until_complete(
        stage.connect("flood", api_host=API_HOST, sdk_url=fake_sdk_url, timeout_s=5.0)
    )
    qtbot.waitUntil(lambda: len(speech) + view.bridge.dropped >= 1000, timeout=10_000)
    assert len(speech) <= 2 * MAX_MESSAGES_PER_S  # at most two one-second windows
    assert view.bridge.dropped >= 1000 - 2 * MAX_MESSAGES_PER_S
    floods = [r for r in caplog.records if "messages a second; dropping" in r.getMessage()]
    assert len(floods) == 1
