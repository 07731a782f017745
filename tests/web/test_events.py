"""The page message schema (Qt-free)."""

from __future__ import annotations

import json

import pytest

from avaturn_desktop.core.events import (
    AvatarStartedSpeakingPhrase,
    CommandResult,
    InitCommand,
    InitFailed,
    PageMessageError,
    Ready,
    TaskCommand,
    command_json,
    parse_page_command,
    parse_page_event,
)


def test_events_parse_typed() -> None:
    assert parse_page_event('{"type": "ready"}') == Ready()
    phrase = parse_page_event(
        '{"type": "avatar_started_speaking_phrase", "phrase_id": "p1", "at_ms": 12}'
    )
    assert phrase == AvatarStartedSpeakingPhrase(phrase_id="p1", at_ms=12.0)
    result = parse_page_event('{"type": "result", "ref": 3, "ok": true, "data": {"task_id": "t"}}')
    assert isinstance(result, CommandResult)
    assert result.data == {"task_id": "t"}
    failed = parse_page_event('{"type": "init_failed", "message": "x", "timed_out": true}')
    assert failed == InitFailed(message="x", timed_out=True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"kind": "ready"}', "no string 'type'"),
        ('{"type": 7}', "no string 'type'"),
        ('{"type": "launch_rockets"}', "unknown type 'launch_rockets'"),
        ('{"type": "inited"}', "session_id: missing"),
        ('{"type": "inited", "session_id": 5}', "session_id: string_type"),
        ('{"type": "result", "ref": "1", "ok": true}', "ref: int_type"),
        ('{"type": "result", "ref": 1, "ok": 1}', "ok: bool_type"),
        ('{"type": "avatar_ended_speaking", "at_ms": "soon"}', "at_ms"),
        ("x" * 70_000, "too long"),
    ],
)
def test_malformed_events_raise_a_short_reason(raw: str, reason: str) -> None:
    with pytest.raises(PageMessageError) as info:
        parse_page_event(raw)
    assert reason in info.value.reason
    assert len(info.value.reason) < 200


def test_reason_never_quotes_values() -> None:
    with pytest.raises(PageMessageError) as info:
        parse_page_event('{"type": "inited", "session_id": ["secret-value"]}')
    assert "secret-value" not in info.value.reason


def test_init_command_hides_the_token() -> None:
    cmd = InitCommand(token="tok-SECRET", api_host="h", sdk_url="u", timeout_ms=1000)
    assert "tok-SECRET" not in repr(cmd)
    assert "tok-SECRET" not in str(cmd)
    assert "tok-SECRET" not in f"{cmd}"
    # ...but the page does get it
    assert json.loads(command_json(cmd))["token"] == "tok-SECRET"
    assert json.loads(command_json(cmd))["keep_alive"] is True


def test_commands_round_trip() -> None:
    cmd = TaskCommand(ref=4, text="Hello.")
    assert parse_page_command(command_json(cmd)) == cmd
