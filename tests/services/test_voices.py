"""The voice library: kept in the data directory, merged from imports without losing a person's
notes; ElevenLabs' voice list (over ``httpx.MockTransport``: there is no internet here) with
every kind of failure; and the service's own check of a voice, against the simulator over real
loopback HTTP, with every kind of answer the service can give."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from avaturn_desktop.core.catalog import VOICES
from avaturn_desktop.core.errors import ApiError, AppError, AuthError, ConfigError, NetworkError
from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.core.tasks import SessionRecord
from avaturn_desktop.services import secrets
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.services.voices import (
    ELEVENLABS_VOICES_URL,
    LIBRARY_FILE,
    VoiceCheck,
    VoiceEntry,
    VoiceLibrary,
    check_voice,
    fetch_elevenlabs_voices,
    fetch_simulator_voices,
    looks_like_voice_id,
)
from avaturn_desktop.simulator.faults import FaultConfig
from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

KEY = "el-secret-key-0123456789"
SIM_KEY = "voices-test-key"


# -- the library ---------------------------------------------------------------------------


def test_a_fresh_library_is_the_catalogue_and_changes_are_kept(tmp_path: Path) -> None:
    library = VoiceLibrary.open(tmp_path)
    assert [v.voice_id for v in library.entries()] == [v.id for v in VOICES]
    assert library.name_of(VOICES[0].id) == VOICES[0].name
    assert library.name_of("unknown-id") == "unknown-id"
    library.add("custom1", name="Narrator", tags="Calm, deep ,calm", notes="for launches")
    library.update(VOICES[1].id, favourite=True, notes="the client liked it")
    assert library.get("custom1") == VoiceEntry(
        voice_id="custom1",
        name="Narrator",
        tags=("calm", "deep"),
        notes="for launches",
        source="manual",
    )
    again = VoiceLibrary.open(tmp_path)
    assert again.entries() == library.entries()
    assert again.get(VOICES[1].id).favourite  # type: ignore[union-attr]
    assert library.remove("custom1") and not library.remove("custom1")
    assert "custom1" not in VoiceLibrary.open(tmp_path)


@pytest.mark.parametrize("bad", ["", "   ", "two words", "x" * 201])
def test_a_voice_id_is_one_word(tmp_path: Path, bad: str) -> None:
    library = VoiceLibrary.open(tmp_path)
    with pytest.raises(ConfigError):
        library.add(bad)
    assert len(library) == len(VOICES)


def test_bad_fields_are_refused_with_a_sentence(tmp_path: Path) -> None:
    library = VoiceLibrary.open(tmp_path)
    with pytest.raises(ConfigError, match="name"):
        library.add("v1", name="n" * 300)
    assert "v1" not in library


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"voices": [{"name": "no id"}]}', b'{"schema_version": 99}', b"\xff"],
)
def test_a_broken_file_is_set_aside_and_the_catalogue_used(tmp_path: Path, content: bytes) -> None:
    (tmp_path / LIBRARY_FILE).write_bytes(content)
    library = VoiceLibrary.open(tmp_path)
    assert len(library) == len(VOICES)
    assert (tmp_path / "voices.broken.json").read_bytes() == content
    library.add("fresh")  # and it saves again
    assert "fresh" in VoiceLibrary.open(tmp_path)


def test_imports_refresh_names_and_keep_the_persons_notes(tmp_path: Path) -> None:
    library = VoiceLibrary.open(tmp_path)
    library.update(VOICES[0].id, notes="mine", favourite=True, tags=["warm"])
    check = VoiceCheck(accepted=True, reason="ok", at=1.0, backend="b")
    library.record_check(VOICES[0].id, check)
    added, updated = library.merge(
        [
            VoiceEntry(
                voice_id=VOICES[0].id,
                name="Rachel (v2)",
                language="en",
                tags=("female", "warm"),
                source="elevenlabs",
            ),
            VoiceEntry(voice_id="newvoice", name="New", source="elevenlabs"),
        ]
    )
    assert (added, updated) == (1, 1)
    rachel = library.get(VOICES[0].id)
    assert rachel is not None
    assert (rachel.name, rachel.notes, rachel.favourite, rachel.check) == (
        "Rachel (v2)",
        "mine",
        True,
        check,
    )
    assert rachel.tags == ("warm", "female") and rachel.source == "elevenlabs"
    assert library.merge([VoiceEntry(voice_id="newvoice", name="New")]) == (0, 0)


def test_a_library_that_cannot_be_saved_says_so(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    library = VoiceLibrary(blocked / "sub" / LIBRARY_FILE)
    with pytest.raises(ConfigError, match="could not be saved"):
        library.add("v1")


def test_voice_id_shape_hint() -> None:
    assert all(looks_like_voice_id(v.id) for v in VOICES)
    assert not looks_like_voice_id("no-such-voice")


def test_the_elevenlabs_key_is_kept_like_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secrets.ELEVENLABS_ENV_VAR, raising=False)
    assert secrets.load_elevenlabs_key() == (None, "none")
    secrets.store_elevenlabs_key(KEY)
    assert secrets.load_elevenlabs_key() == (KEY, "keyring")
    assert secrets.load_api_key() == (None, "none")  # a separate entry
    monkeypatch.setenv(secrets.ELEVENLABS_ENV_VAR, "from-env")
    assert secrets.load_elevenlabs_key() == ("from-env", "environment")
    secrets.store_elevenlabs_key(None)
    monkeypatch.delenv(secrets.ELEVENLABS_ENV_VAR)
    assert secrets.load_elevenlabs_key() == (None, "none")


# -- ElevenLabs ------------------------------------------------------------------------------

ELEVENLABS_ANSWER: dict[str, Any] = {
    "voices": [
        {
            "voice_id": "21m00Tcm4TlvDq8ikWAM",
            "name": "Rachel",
            "category": "premade",
            "labels": {"accent": "american", "gender": "female", "use_case": "narration"},
            "verified_languages": [{"language": "en", "model_id": "eleven_turbo_v2_5"}],
        },
        {
            "voice_id": "abcdefghij0123456789",
            "name": "My clone",
            "category": "cloned",
            "labels": {"language": "de"},
            "fine_tuning": {"language": "fr"},
        },
        {"voice_id": "noname00000000000000"},
        {"name": "no id at all"},
        "not an object",
        {"voice_id": 42, "name": "numeric id"},
    ]
}


def elevenlabs(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_elevenlabs_voices_are_imported_with_their_names() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ELEVENLABS_ANSWER)

    async def scenario() -> list[VoiceEntry]:
        async with elevenlabs(handler) as http:
            return await fetch_elevenlabs_voices(http, KEY)

    voices = asyncio.run(scenario())
    assert str(seen[0].url) == ELEVENLABS_VOICES_URL
    assert seen[0].headers["xi-api-key"] == KEY
    assert [(v.voice_id, v.name, v.language) for v in voices] == [
        ("21m00Tcm4TlvDq8ikWAM", "Rachel", "en"),
        ("abcdefghij0123456789", "My clone", "de"),
        ("noname00000000000000", "", ""),
    ]
    assert voices[0].tags == ("female", "american", "narration", "premade")
    assert {v.source for v in voices} == {"elevenlabs"}


def _status(status: int, body: bytes = b"{}") -> Any:
    return lambda _request: httpx.Response(status, content=body)


def _raise(exc: Exception) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "words"),
    [
        (_status(401), AuthError, "refused the key"),
        (_status(403), ApiError, "403"),
        (_status(429), ApiError, "busy"),
        (_status(500), ApiError, "500"),
        (_status(503, b"<html>down</html>"), ApiError, "503"),
        (_status(200, b"<html>not json</html>"), ApiError, "not JSON"),
        (_status(200, b'{"voices": "many"}'), ApiError, "without a list"),
        (_status(200, b"[]"), ApiError, "without a list"),
        (_raise(httpx.ConnectError("refused")), NetworkError, "could not be reached"),
        (_raise(httpx.ReadTimeout("slow")), NetworkError, "in time"),
        (_raise(httpx.RemoteProtocolError("reset")), NetworkError, "could not be reached"),
    ],
)
def test_every_elevenlabs_failure_is_a_sentence_without_the_key(
    handler: Any, error: type[AppError], words: str
) -> None:
    async def scenario() -> None:
        async with elevenlabs(handler) as http:
            await fetch_elevenlabs_voices(http, KEY)

    with pytest.raises(error) as caught:
        asyncio.run(scenario())
    assert words in caught.value.user_message
    assert KEY not in caught.value.user_message and KEY not in str(caught.value)


def test_no_elevenlabs_key_no_request() -> None:
    calls: list[httpx.Request] = []

    async def scenario() -> None:
        async with elevenlabs(lambda r: calls.append(r) or httpx.Response(200)) as http:
            await fetch_elevenlabs_voices(http, "  ")

    with pytest.raises(ConfigError, match="ElevenLabs API key"):
        asyncio.run(scenario())
    assert calls == []


# -- the simulator's catalogue and the service's check --------------------------------------


@pytest.fixture
def sim() -> Any:
    server = SimulatorServer(
        SimulatorConfig(port=0, api_key=SIM_KEY, extra_voices=["extravoice0000000000"])
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_simulators_catalogue_is_read_with_its_key(sim: Any) -> None:
    async def scenario() -> list[VoiceEntry]:
        async with httpx.AsyncClient() as http:
            return await fetch_simulator_voices(http, sim.base_url, SIM_KEY)

    good = asyncio.run(scenario())
    ids = {v.voice_id for v in good}
    assert ids == {v.id for v in VOICES} | {"extravoice0000000000"}
    assert {v.name for v in good if v.voice_id == VOICES[0].id} == {VOICES[0].name}


@pytest.mark.parametrize(
    "handler",
    [
        _status(404),
        _status(401),
        _status(200, b"<html>"),
        _status(200, b"[1, 2]"),
        _status(200, b'{"voices": [1, "", {"x": 1}]}'),
        _raise(httpx.ConnectError("refused")),
    ],
)
def test_a_service_that_is_not_a_simulator_lists_nothing(handler: Any) -> None:
    async def scenario() -> list[VoiceEntry]:
        async with elevenlabs(handler) as http:
            return await fetch_simulator_voices(http, "http://service.test", SIM_KEY)

    assert asyncio.run(scenario()) == []


async def _check(
    base_url: str,
    voice_id: str,
    *,
    avatar_id: str = "jane_20240829",
    registry: TaskLogStore | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> VoiceCheck:
    async with httpx.AsyncClient(transport=transport) as http:
        client = AvaturnClient(http, api_key=SIM_KEY, base_url=base_url, max_retries=0)
        return await check_voice(
            client, voice_id, avatar_id=avatar_id, backend=base_url, registry=registry
        )


def test_the_service_takes_a_known_voice_and_refuses_an_unknown(sim: Any, tmp_path: Path) -> None:
    with TaskLogStore(tmp_path / "log.sqlite3") as store:
        taken = asyncio.run(_check(sim.base_url, VOICES[2].id, registry=store))
        extra = asyncio.run(_check(sim.base_url, "extravoice0000000000", registry=store))
        refused = asyncio.run(_check(sim.base_url, "no-such-voice", registry=store))
        assert taken.accepted is True and extra.accepted is True
        assert refused.accepted is False and "no-such-voice" in refused.reason
        assert taken.label == "taken" and refused.label == "refused"
        # the two sessions the checks made were ended at once, there and in the registry
        sessions = sim.snapshot()["sessions"]
        assert len(sessions) == 2 and {s["state"] for s in sessions} == {"ended"}
        assert store.open_sessions() == []
        assert {r.end_reason for r in store.sessions()} == {"voice check (ended at once)"}


@pytest.mark.parametrize(
    ("faults", "avatar", "words"),
    [
        (FaultConfig(rate_limit_burst=5), "jane_20240829", "429"),
        (FaultConfig(error_rate=1.0, error_status=503), "jane_20240829", "503"),
        (FaultConfig(error_rate=1.0, error_status=500), "jane_20240829", "500"),
        (FaultConfig(reset_rate=1.0), "jane_20240829", "could not tell"),
        (FaultConfig(), "bob_20230101", "retired"),
        # two at once: a retired avatar on a busy service
        (FaultConfig(rate_limit_burst=5), "bob_20230101", "429"),
    ],
)
def test_when_the_service_cannot_say_the_check_says_it_could_not_tell(
    sim: Any, tmp_path: Path, faults: FaultConfig, avatar: str, words: str
) -> None:
    sim.set_faults(faults)
    with TaskLogStore(tmp_path / "log.sqlite3") as store:
        verdict = asyncio.run(_check(sim.base_url, VOICES[0].id, avatar_id=avatar, registry=store))
        assert verdict.accepted is None, verdict
        assert words in verdict.reason
        assert verdict.label == "not known"
        assert store.sessions() == []  # nothing was made


def test_a_check_session_that_could_not_be_ended_stays_in_the_registry(
    tmp_path: Path,
) -> None:
    """Created, then the DELETE fails: the voice is taken, and the session stays open in the
    registry so the next start ends it (it also ends by itself: no viewer, 10 s)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            assert body["user_absent_timeout"] == 10 and body["max_duration"] == 60
            return httpx.Response(200, json={"session_id": "s-check", "token": "t"})
        return httpx.Response(503, json={"detail": "down"})

    with TaskLogStore(tmp_path / "log.sqlite3") as store:
        verdict = asyncio.run(
            _check(
                "http://service.test", "v1", registry=store, transport=httpx.MockTransport(handler)
            )
        )
        assert verdict.accepted is True and "ends by itself" in verdict.reason
        (left,) = store.open_sessions()
        assert left.session_id == "s-check" and left.voice_id == "v1"


class _Recorder:
    def __init__(self) -> None:
        self.requests: list[SessionCreate | None] = []

    async def create_session(self, request: SessionCreate | None = None) -> Any:
        self.requests.append(request)
        raise NetworkError("offline")

    async def terminate_session(self, session_id: str) -> None:
        raise AssertionError("nothing to end")

    def record_session(self, record: SessionRecord) -> None:
        raise AssertionError("nothing to record")


def test_the_check_asks_for_the_smallest_session_and_needs_an_id() -> None:
    client = _Recorder()
    verdict = asyncio.run(check_voice(client, " v2 ", avatar_id="a", backend="b"))
    assert verdict.accepted is None and "offline" in verdict.reason
    (request,) = client.requests
    assert request is not None and request.voice_id == "v2" and request.avatar_id == "a"
    assert (request.user_absent_timeout, request.max_duration) == (10, 60)
    with pytest.raises(ConfigError):
        asyncio.run(check_voice(client, "  ", avatar_id="a", backend="b"))
