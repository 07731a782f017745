"""The bridge object on its own: handshake, queueing, validation."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from avaturn_desktop.core.events import (
    AvatarEndedSpeakingPhrase,
    CancelAllCommand,
    Ready,
    TaskCommand,
)
from avaturn_desktop.ui.web.bridge import Bridge


def _record(bridge: Bridge) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"command": [], "event": [], "bad": [], "ready": []}
    bridge.command.connect(seen["command"].append)
    bridge.event_received.connect(seen["event"].append)
    bridge.bad_message.connect(seen["bad"].append)
    bridge.ready_changed.connect(seen["ready"].append)
    return seen


def test_commands_wait_for_ready_then_flush_in_order(qapp: Any) -> None:
    bridge = Bridge()
    seen = _record(bridge)
    bridge.send(TaskCommand(ref=1, text="one"))
    bridge.send(CancelAllCommand(ref=2))
    assert seen["command"] == []
    bridge.post('{"type": "ready"}')
    assert seen["ready"] == [True]
    assert seen["event"] == [Ready()]
    assert [c for c in seen["command"]] == [
        '{"type":"task","ref":1,"text":"one"}',
        '{"type":"cancel_all","ref":2}',
    ]
    bridge.send(TaskCommand(ref=3, text="three"))
    assert seen["command"][-1] == '{"type":"task","ref":3,"text":"three"}'


def test_reset_makes_the_bridge_queue_again(qapp: Any) -> None:
    bridge = Bridge()
    seen = _record(bridge)
    bridge.post('{"type": "ready"}')
    bridge.reset()
    assert seen["ready"] == [True, False]
    assert not bridge.ready
    bridge.send(CancelAllCommand(ref=9))
    assert seen["command"] == []
    assert bridge.clear_queue() == [CancelAllCommand(ref=9)]
    bridge.post('{"type": "ready"}')
    assert seen["command"] == []


def test_events_arrive_typed(qapp: Any) -> None:
    bridge = Bridge()
    seen = _record(bridge)
    bridge.post('{"type": "avatar_ended_speaking_phrase", "phrase_id": "p7", "at_ms": 1.5}')
    assert seen["event"] == [AvatarEndedSpeakingPhrase(phrase_id="p7", at_ms=1.5)]
    assert seen["bad"] == []


@pytest.mark.parametrize(
    "raw",
    [
        "{oops",
        '"just a string"',
        '{"type": "unheard_of"}',
        '{"type": "inited", "session_id": 42}',
        '{"type": "result", "ref": "x", "ok": "yes"}',
    ],
)
def test_malformed_message_is_reported_not_raised(
    qapp: Any, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = Bridge()
    seen = _record(bridge)
    with caplog.at_level(logging.WARNING, logger="avaturn.web"):
        bridge.post(raw)
    assert seen["event"] == []
    assert len(seen["bad"]) == 1
    assert seen["bad"][0]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert seen["bad"][0] in caplog.records[0].getMessage()
    # and the bridge still works afterwards
    bridge.post('{"type": "ready"}')
    assert seen["event"] == [Ready()]


def test_a_flood_is_cut_to_the_rate_and_logged_once(
    qapp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    bridge = Bridge(max_per_s=50, clock=lambda: now[0])
    seen = _record(bridge)
    raw = '{"type": "avatar_started_speaking"}'
    with caplog.at_level(logging.WARNING, logger="avaturn.web"):
        for _ in range(1000):
            bridge.post(raw)
            now[0] += 0.0001  # 1,000 messages in 0.1 s
    assert len(seen["event"]) == 50
    assert bridge.dropped == 950
    assert len(caplog.records) == 1  # once, not 950 times
    assert "more than 50 messages a second" in caplog.records[0].getMessage()
    caplog.clear()
    now[0] += 1.0  # the next second: taken again, and the flood's count is told once
    with caplog.at_level(logging.WARNING, logger="avaturn.web"):
        bridge.post(raw)
    assert len(seen["event"]) == 51
    assert [r.getMessage() for r in caplog.records] == [
        "950 message(s) from the avatar page were dropped (more than 50 a second)"
    ]


def test_messages_at_the_rate_are_all_taken(qapp: Any) -> None:
    now = [0.0]
    bridge = Bridge(max_per_s=50, clock=lambda: now[0])
    seen = _record(bridge)
    for _ in range(400):  # ten seconds at 40 a second
        bridge.post('{"type": "avatar_ended_speaking"}')
        now[0] += 0.025
    assert len(seen["event"]) == 400
    assert bridge.dropped == 0


def test_bad_messages_count_against_the_rate(qapp: Any) -> None:
    bridge = Bridge(max_per_s=10, clock=lambda: 5.0)
    seen = _record(bridge)
    for _ in range(100):
        bridge.post("{oops")
    assert len(seen["bad"]) == 10
    assert bridge.dropped == 90


def test_a_ready_from_the_document_being_replaced_is_ignored(qapp: Any) -> None:
    import time

    bridge = Bridge()
    seen = _record(bridge)
    old = time.time() * 1000.0 - 5_000  # the document loaded five seconds ago
    bridge.post(f'{{"type": "ready", "time_origin_ms": {old}}}')
    assert bridge.ready
    bridge.reset(replacing=True)  # the app loads a new document now
    bridge.send(CancelAllCommand(ref=1))
    bridge.post(f'{{"type": "ready", "time_origin_ms": {old}}}')  # late, from the old one
    assert not bridge.ready
    assert seen["command"] == []
    bridge.post(f'{{"type": "ready", "time_origin_ms": {time.time() * 1000.0 + 1}}}')
    assert bridge.ready
    assert seen["command"] == ['{"type":"cancel_all","ref":1}']
