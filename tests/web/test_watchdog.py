"""The stage's watchdog in the real page: heartbeats once the app turns it on, and a black,
frozen or silent avatar found by sampling its picture and listening to its sound, with the
simulator's media faults (the SDK's ``mediaStream``) and with a test-double SDK that only
plays a ``<video>`` under its root."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import qasync

from avaturn_desktop.core.events import (
    AvatarEndedSpeaking,
    Heartbeat,
    PageEvent,
    StageProblem,
    WatchdogCommand,
)
from avaturn_desktop.simulator.server import FaultConfig
from avaturn_desktop.ui.web.stage import Stage
from avaturn_desktop.ui.web.view import AvatarView
from tests.web.helpers import use_backend

RunJs = Callable[..., Any]

#: Short times, so that a problem shows within a second.
FAST = WatchdogCommand(
    ref=0, heartbeat_ms=300, sample_ms=100, black_ms=700, frozen_ms=700, silent_ms=700
)


def _session(base_url: str) -> tuple[str, str]:
    answer = httpx.post(
        f"{base_url}/api/v1/sessions", headers={"Authorization": "Bearer test"}, timeout=5.0
    )
    answer.raise_for_status()
    return answer.json()["session_id"], answer.json()["token"]


def _say(base_url: str, session_id: str, text: str) -> None:
    answer = httpx.post(
        f"{base_url}/api/v1/sessions/{session_id}/tasks",
        headers={"Authorization": "Bearer test"},
        json={"text": text},
        timeout=5.0,
    )
    answer.raise_for_status()


@pytest.fixture
def stage(view: AvatarView) -> Stage:
    view.show()  # as the stage is: a hidden page's timers run once a second
    return Stage(
        view.bridge,
        view,
        allow_media_origins=view.avatar_page.allow_media_origins,
        reload_page=view.reload_stage,
    )


def problems(events: list[PageEvent]) -> list[tuple[str, bool]]:
    return [(e.problem, e.cleared) for e in events if isinstance(e, StageProblem)]


def test_the_watchdog_finds_a_frozen_black_or_silent_avatar_on_the_simulator(
    view: AvatarView,
    stage: Stage,
    qtbot: Any,
    qloop: qasync.QEventLoop,
    simulator: Any,
    next_emission: Any,
) -> None:
    use_backend(view, qtbot, simulator.base_url, simulator.sdk_url)
    events: list[PageEvent] = []
    stage.event.connect(events.append)
    session_id, token = _session(simulator.base_url)

    async def scenario() -> dict[str, float]:
        await stage.connect(
            token, api_host=simulator.base_url, sdk_url=simulator.sdk_url, timeout_s=10.0
        )
        # not turned on yet: a whole line spoken without a heartbeat
        ended = asyncio.ensure_future(
            next_emission(stage.event, lambda e: isinstance(e, AvatarEndedSpeaking))
        )
        await asyncio.to_thread(_say, simulator.base_url, session_id, "Hello. " * 60)
        await ended
        assert not [e for e in events if isinstance(e, Heartbeat)]

        stage.set_watchdog(FAST)
        await next_emission(stage.event, lambda e: isinstance(e, Heartbeat) and e.watching)
        # a healthy avatar for a second and a half, speaking: nothing is found
        ended = asyncio.ensure_future(
            next_emission(stage.event, lambda e: isinstance(e, AvatarEndedSpeaking))
        )
        await asyncio.to_thread(_say, simulator.base_url, session_id, "All is well. " * 50)
        await ended
        assert problems(events) == []

        found: dict[str, float] = {}
        for faults, problem in (
            (FaultConfig(video_fault="freeze"), "frozen"),
            (FaultConfig(video_fault="black"), "black"),
            (FaultConfig(audio_fault="mute"), "silent"),
        ):
            if problem == "silent":  # silence is only a problem while the avatar speaks
                await asyncio.to_thread(_say, simulator.base_url, session_id, "x" * 4000)
            started = time.monotonic()
            await asyncio.to_thread(simulator.set_faults, faults)
            raised = await next_emission(
                stage.event,
                lambda e, p=problem: isinstance(e, StageProblem) and e.problem == p,
            )
            found[problem] = time.monotonic() - started
            assert not raised.cleared and raised.detail
            beat = await next_emission(stage.event, lambda e: isinstance(e, Heartbeat))
            assert problem in beat.problems
            await asyncio.to_thread(simulator.set_faults, FaultConfig())
            await next_emission(
                stage.event,
                lambda e, p=problem: isinstance(e, StageProblem) and e.problem == p and e.cleared,
            )
        await stage.cancel_all()
        return found

    found = qloop.run_until_complete(scenario())
    # each found once, and cleared once (black is not also frozen, nor silent mute also black)
    assert problems(events) == [
        ("frozen", False),
        ("frozen", True),
        ("black", False),
        ("black", True),
        ("silent", False),
        ("silent", True),
    ]
    assert all(0.7 <= seconds < 5 for seconds in found.values()), found
    beats = [e.seq for e in events if isinstance(e, Heartbeat)]
    assert beats == list(range(beats[0], beats[0] + len(beats)))


def test_the_watchdog_finds_the_media_elements_of_an_sdk_without_a_media_stream(
    view: AvatarView,
    stage: Stage,
    qtbot: Any,
    qloop: qasync.QEventLoop,
    fake_sdk_url: str,
    run_js: RunJs,
    next_emission: Any,
) -> None:
    use_backend(view, qtbot, "https://api.test", fake_sdk_url)
    events: list[PageEvent] = []
    stage.event.connect(events.append)
    stage.set_watchdog(FAST)

    async def scenario() -> None:
        await stage.connect("media", api_host="https://api.test", sdk_url=fake_sdk_url, timeout_s=5)
        await next_emission(stage.event, lambda e: isinstance(e, Heartbeat) and e.watching)
        view.page().runJavaScript("fakeMedia.speak(true)", 0)
        await next_emission(stage.event, lambda e: isinstance(e, Heartbeat) and e.watching)
        await next_emission(stage.event, lambda e: isinstance(e, Heartbeat) and e.watching)
        assert problems(events) == []
        view.page().runJavaScript("fakeMedia.mute(true)", 0)
        await next_emission(
            stage.event, lambda e: isinstance(e, StageProblem) and e.problem == "silent"
        )
        view.page().runJavaScript("fakeMedia.mute(false); fakeMedia.freeze(true)", 0)
        await next_emission(
            stage.event, lambda e: isinstance(e, StageProblem) and e.problem == "frozen"
        )
        # the avatar goes: so do its problems (the next heartbeat has none)
        await stage.dispose()
        beat = await next_emission(stage.event, lambda e: isinstance(e, Heartbeat))
        assert beat.watching is False and beat.problems == []

    qloop.run_until_complete(scenario())
    assert ("silent", True) in problems(events)  # cleared when it spoke up again
    assert problems(events)[0] == ("silent", False)
    assert run_js(view, "document.querySelector('.watchdog-alert').hidden") is True


def test_a_problem_shows_on_the_stage_and_a_reload_keeps_the_watchdog(
    view: AvatarView,
    stage: Stage,
    qtbot: Any,
    qloop: qasync.QEventLoop,
    fake_sdk_url: str,
    run_js: RunJs,
    next_emission: Any,
) -> None:
    use_backend(view, qtbot, "https://api.test", fake_sdk_url)
    stage.set_watchdog(FAST)

    async def black() -> Heartbeat:
        await stage.connect("media", api_host="https://api.test", sdk_url=fake_sdk_url, timeout_s=5)
        view.page().runJavaScript("fakeMedia.black(true)", 0)
        await next_emission(
            stage.event, lambda e: isinstance(e, StageProblem) and e.problem == "black"
        )
        beat: Heartbeat = await next_emission(stage.event, lambda e: isinstance(e, Heartbeat))
        return beat

    before = qloop.run_until_complete(black())
    assert before.problems == ["black"] and before.watching
    badge = "(b => b.hidden ? 'hidden' : b.textContent)(document.querySelector('.watchdog-alert'))"
    assert run_js(view, badge) == "Stage: no picture"

    async def reload() -> Heartbeat:
        await stage.reload()
        beat: Heartbeat = await next_emission(stage.event, lambda e: isinstance(e, Heartbeat))
        return beat

    after = qloop.run_until_complete(reload())
    # a new document: its heartbeats count from zero, it watches nothing, it was told again
    assert after.seq <= 1 and after.watching is False and after.problems == []
    assert run_js(view, badge) == "hidden"


def test_the_attract_screen_covers_the_stage_and_comes_back_after_a_reload(
    view: AvatarView, stage: Stage, qtbot: Any, qloop: qasync.QEventLoop, run_js: RunJs
) -> None:
    screen = (
        "(s => s.hidden ? 'hidden' : [s.querySelector('.attract-text').textContent,"
        " s.querySelector('.attract-image').hidden ? '' : s.querySelector('.attract-image').src]"
        ".join('|'))(document.querySelector('.attract'))"
    )
    image = "data:image/png;base64,iVBORw0KGgo="
    assert run_js(view, screen) == "hidden"
    qloop.run_until_complete(stage.attract(True, "Touch me <b>now</b>", image))
    assert run_js(view, screen) == f"Touch me <b>now</b>|{image}"  # text, never markup
    qloop.run_until_complete(stage.reload())
    qtbot.waitUntil(lambda: run_js(view, screen) != "hidden", timeout=5_000)
    assert run_js(view, screen) == f"Touch me <b>now</b>|{image}"
    qloop.run_until_complete(stage.attract(True, "Closed", "https://example.com/x.png"))
    assert run_js(view, screen) == "Closed|"  # only data: images: the page loads nothing
    qloop.run_until_complete(stage.attract(False))
    assert run_js(view, screen) == "hidden"
    qloop.run_until_complete(stage.reload())
    assert run_js(view, screen) == "hidden"
