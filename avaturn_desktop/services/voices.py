"""The voice library: the voices an operator knows, what they think of them, and whether the
service takes them (Qt-free).

Each voice has a name, a language, tags, a favourite flag and free notes, kept in
``voices.json`` in the data directory (written whole, atomically, on every change). Its
measured start latency and speaking rate are not stored here: they are read from the task log
(:mod:`avaturn_desktop.services.latency`), the one record of what was said.

Where voices come from:

* the built-in catalogue (:mod:`avaturn_desktop.core.catalog`, the voices the simulator
  knows): the library a fresh install starts with, and the offline one;
* the simulator's own catalogue when the app runs on one (``--voice`` adds ids there), read
  from its ``/_sim/state``;
* an ElevenLabs account: with an ElevenLabs key (``ELEVENLABS_API_KEY`` or the OS keyring),
  ``GET https://api.elevenlabs.io/v1/voices`` lists the account's voices with their names,
  language and labels;
* a person, by id.

**Does the service take a voice?** Avaturn validates the voice only when a session is created
(an unknown id is refused with 400); it has no call that lists or checks voices, and
ElevenLabs knowing a voice does not mean Avaturn's account may use it. So the honest check is
the service's own: :func:`check_voice` creates a session with that voice and ends it at once.
Its cost: two requests (create, delete; a few hundred milliseconds), no viewer ever joins so
nothing is rendered or spoken, but for that moment it takes one of the plan's concurrent
sessions (a 429 when all are taken: then the check says it could not tell) and it may count as
a session in the service's usage. It is therefore only run when a person asks (one voice at a
time), never in bulk, and its verdict is kept with the voice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avaturn_desktop.core import catalog
from avaturn_desktop.core.errors import (
    ApiError,
    AppError,
    AuthError,
    ConfigError,
    GoneError,
    InvalidRequestError,
    NetworkError,
)
from avaturn_desktop.core.models import SessionCreate, TextEchoEngine, TTSConfig
from avaturn_desktop.core.tasks import SessionRecord

log = logging.getLogger("avaturn.voices")

LIBRARY_FILE: Final = "voices.json"
SCHEMA_VERSION: Final = 1
ELEVENLABS_VOICES_URL: Final = "https://api.elevenlabs.io/v1/voices"
#: ElevenLabs voice ids are 20 letters and digits; anything else is surely not one.
_VOICE_ID_SHAPE: Final = re.compile(r"^[A-Za-z0-9]{20}$")
#: What the library knows of the built-in catalogue's voices (ElevenLabs' premade voices).
_CATALOG_TAGS: Final[dict[str, tuple[str, ...]]] = {
    "21m00Tcm4TlvDq8ikWAM": ("female", "american", "calm"),
    "EXAVITQu4vr4xnSDxMaL": ("female", "american", "soft"),
    "ErXwobaYiN019PkySvjV": ("male", "american", "well-rounded"),
    "TxGEqnHWrfWFTfGW9XjX": ("male", "american", "deep"),
    "pNInz6obpgDQGcFmaJgB": ("male", "american", "deep"),
    "XB0fDUnXU5powFXDhCwa": ("female", "swedish", "seductive"),
}

Source = Literal["catalog", "simulator", "elevenlabs", "manual"]


class VoiceCheck(BaseModel):
    """What the service said of a voice when it was last checked."""

    model_config = ConfigDict(frozen=True)

    #: True: taken; False: refused; None: the check could not tell (busy, offline, ...).
    accepted: bool | None
    #: The service's words, or why the check could not tell.
    reason: str = ""
    at: float = 0.0
    #: The base URL of the service that answered.
    backend: str = ""

    @property
    def label(self) -> str:
        if self.accepted is None:
            return "not known"
        return "taken" if self.accepted else "refused"


class VoiceEntry(BaseModel):
    """One voice of the library."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    voice_id: Annotated[str, Field(min_length=1, max_length=200)]
    name: Annotated[str, Field(max_length=200)] = ""
    language: Annotated[str, Field(max_length=50)] = ""
    tags: tuple[str, ...] = ()
    favourite: bool = False
    notes: Annotated[str, Field(max_length=10_000)] = ""
    source: Source = "manual"
    check: VoiceCheck | None = None

    @property
    def label(self) -> str:
        """``Name (id)``, or the id alone."""
        return f"{self.name} ({self.voice_id})" if self.name else self.voice_id


class _LibraryFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    voices: list[VoiceEntry] = []


def catalog_voices() -> list[VoiceEntry]:
    """The built-in catalogue as library entries (the offline library)."""
    return [
        VoiceEntry(
            voice_id=preset.id,
            name=preset.name,
            language="en",
            tags=_CATALOG_TAGS.get(preset.id, ()),
            source="catalog",
        )
        for preset in catalog.VOICES
    ]


def looks_like_voice_id(voice_id: str) -> bool:
    """Whether ``voice_id`` has the shape of an ElevenLabs voice id (a hint, not a check)."""
    return bool(_VOICE_ID_SHAPE.match(voice_id))


def _clean_tags(tags: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for tag in tags:
        tag = " ".join(str(tag).split()).strip().lower()[:50]
        if tag and tag not in out:
            out.append(tag)
    return tuple(out)


LibraryListener = Callable[[], None]


class VoiceLibrary:
    """The voices (see the module docs); ``path`` None keeps them in memory only."""

    def __init__(self, path: Path | None, voices: Iterable[VoiceEntry] = ()) -> None:
        self.path = path
        self._voices: dict[str, VoiceEntry] = {v.voice_id: v for v in voices}
        self._listeners: list[LibraryListener] = []

    @classmethod
    def open(cls, data_dir: Path | None) -> VoiceLibrary:
        """The library of ``data_dir`` (None: in memory); a fresh one holds the catalogue.

        A file that cannot be read is kept aside (``voices.broken.json``) and the catalogue
        used, so the app starts; the log says so.
        """
        if data_dir is None:
            return cls(None, catalog_voices())
        path = data_dir / LIBRARY_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, catalog_voices())
        except OSError as exc:
            log.warning("Voice library %s could not be read (%s)", path, exc.strerror)
            return cls(None, catalog_voices())
        try:
            data = _LibraryFile.model_validate_json(raw)
            if data.schema_version > SCHEMA_VERSION:
                raise ValueError(f"schema {data.schema_version} is newer than this app's")
        except (ValidationError, ValueError) as exc:
            backup = path.with_suffix(".broken.json")
            log.warning("Voice library %s ignored (%s); kept as %s", path, exc, backup.name)
            with contextlib.suppress(OSError):
                os.replace(path, backup)
            return cls(path, catalog_voices())
        return cls(path, data.voices)

    # -- reading ---------------------------------------------------------------------------

    def entries(self) -> list[VoiceEntry]:
        return list(self._voices.values())

    def get(self, voice_id: str) -> VoiceEntry | None:
        return self._voices.get(voice_id)

    def __contains__(self, voice_id: object) -> bool:
        return voice_id in self._voices

    def __len__(self) -> int:
        return len(self._voices)

    def name_of(self, voice_id: str | None) -> str:
        """The voice's name, or its id when the library has no name for it."""
        if not voice_id:
            return ""
        entry = self._voices.get(voice_id)
        return entry.name if entry is not None and entry.name else voice_id

    def subscribe(self, listener: LibraryListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- changing --------------------------------------------------------------------------

    def add(self, voice_id: str, **fields: Any) -> VoiceEntry:
        """Add a voice by id (or update the fields given of one already there)."""
        voice_id = voice_id.strip()
        if not voice_id:
            raise ConfigError("Enter a voice id.")
        if len(voice_id) > 200 or any(c.isspace() for c in voice_id):
            raise ConfigError("A voice id is one word of at most 200 characters.")
        existing = self._voices.get(voice_id)
        if existing is not None:
            return self.update(voice_id, **fields) if fields else existing
        entry = self._validated({"voice_id": voice_id, **fields})
        self._voices[voice_id] = entry
        self._changed()
        return entry

    def update(self, voice_id: str, **changes: Any) -> VoiceEntry:
        """Change fields of a voice (``KeyError`` when it is not in the library)."""
        entry = self._voices[voice_id]
        updated = self._validated({**entry.model_dump(), **changes, "voice_id": voice_id})
        if updated != entry:
            self._voices[voice_id] = updated
            self._changed()
        return updated

    def remove(self, voice_id: str) -> bool:
        if self._voices.pop(voice_id, None) is None:
            return False
        self._changed()
        return True

    def record_check(self, voice_id: str, check: VoiceCheck) -> VoiceEntry:
        """Keep the service's verdict with the voice (added to the library if new)."""
        if voice_id not in self._voices:
            self.add(voice_id)
        return self.update(voice_id, check=check)

    def merge(self, voices: Iterable[VoiceEntry]) -> tuple[int, int]:
        """Take imported voices: new ones are added; for known ones the name, language and
        source are refreshed and tags joined; the person's notes, favourite and the last check
        are kept. Returns ``(added, updated)``."""
        added = updated = 0
        for voice in voices:
            old = self._voices.get(voice.voice_id)
            if old is None:
                self._voices[voice.voice_id] = voice
                added += 1
                continue
            new = old.model_copy(
                update={
                    "name": voice.name or old.name,
                    "language": voice.language or old.language,
                    "tags": _clean_tags((*old.tags, *voice.tags)),
                    "source": voice.source if old.source == "catalog" else old.source,
                }
            )
            if new != old:
                self._voices[voice.voice_id] = new
                updated += 1
        if added or updated:
            self._changed()
        return added, updated

    def _validated(self, data: dict[str, Any]) -> VoiceEntry:
        if "tags" in data:
            tags = data["tags"]
            data["tags"] = _clean_tags(tags.split(",") if isinstance(tags, str) else tags)
        try:
            return VoiceEntry.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(f"{where}: {first.get('msg', 'is not valid')}.") from None

    def _changed(self) -> None:
        self.save()
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("A voice library listener failed")

    def save(self) -> None:
        """Write the library (temp file + rename: a crash never leaves half a file)."""
        if self.path is None:
            return
        body = _LibraryFile(voices=list(self._voices.values())).model_dump_json(indent=2)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ConfigError(
                f"The voice library could not be saved ({exc.strerror}); the change holds "
                "until the app closes."
            ) from None


# -- importing -----------------------------------------------------------------------------


def _elevenlabs_entry(raw: Any) -> VoiceEntry | None:
    if not isinstance(raw, dict):
        return None
    voice_id = raw.get("voice_id")
    if not isinstance(voice_id, str) or not voice_id.strip() or len(voice_id) > 200:
        return None
    raw_labels = raw.get("labels")
    labels: dict[str, Any] = raw_labels if isinstance(raw_labels, dict) else {}
    language = labels.get("language") if isinstance(labels.get("language"), str) else ""
    verified = raw.get("verified_languages")
    if not language and isinstance(verified, list) and verified:
        first = verified[0]
        if isinstance(first, dict) and isinstance(first.get("language"), str):
            language = first["language"]
    fine_tuning = raw.get("fine_tuning")
    if not language and isinstance(fine_tuning, dict):
        language = fine_tuning.get("language") or ""
    tags = [
        value
        for key in ("gender", "accent", "age", "use_case", "descriptive", "description")
        if isinstance(value := labels.get(key), str)
    ]
    if isinstance(raw.get("category"), str):
        tags.append(raw["category"])
    raw_name = raw.get("name")
    name = raw_name if isinstance(raw_name, str) else ""
    return VoiceEntry(
        voice_id=voice_id.strip(),
        name=name[:200],
        language=str(language)[:50],
        tags=_clean_tags(tags),
        source="elevenlabs",
    )


async def fetch_elevenlabs_voices(
    http: httpx.AsyncClient, key: str, *, url: str = ELEVENLABS_VOICES_URL
) -> list[VoiceEntry]:
    """The ElevenLabs account's voices (``GET /v1/voices`` with ``xi-api-key``).

    Errors are :class:`AppError` with a sentence a person can act on; the key never appears
    in them (nor in a log line).
    """
    if not key.strip():
        raise ConfigError("Enter an ElevenLabs API key first (File → Settings).")
    try:
        response = await http.get(url, headers={"xi-api-key": key.strip()}, timeout=20.0)
    except httpx.TimeoutException:
        raise NetworkError("ElevenLabs did not answer in time; try again later.") from None
    except httpx.HTTPError as exc:
        raise NetworkError(
            f"ElevenLabs could not be reached ({type(exc).__name__}); check the connection."
        ) from None
    status = response.status_code
    if status == 401:
        raise AuthError(
            "ElevenLabs refused the key (401); check the ElevenLabs key in Settings.",
            status=status,
        )
    if status == 429:
        raise ApiError("ElevenLabs is busy (429); try again in a minute.", status=status)
    if status >= 400:
        raise ApiError(f"ElevenLabs could not list the voices ({status}).", status=status)
    try:
        body = response.json()
    except ValueError:
        raise ApiError(
            "ElevenLabs answered with something that is not JSON.", status=status
        ) from None
    raw_voices = body.get("voices") if isinstance(body, dict) else None
    if not isinstance(raw_voices, list):
        raise ApiError("ElevenLabs answered without a list of voices.", status=status)
    entries = [entry for raw in raw_voices if (entry := _elevenlabs_entry(raw)) is not None]
    log.info("ElevenLabs listed %d voice(s), %d usable", len(raw_voices), len(entries))
    return entries


async def fetch_simulator_voices(
    http: httpx.AsyncClient, base_url: str, key: str
) -> list[VoiceEntry]:
    """The voices a simulator knows (its built-in catalogue and ``--voice`` ids), from its
    ``/_sim/state``; an empty list when it does not answer (e.g. not a simulator)."""
    try:
        response = await http.get(
            f"{base_url.rstrip('/')}/_sim/state",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5.0,
        )
        ids = response.json().get("voices", []) if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    names = {v.id: v.name for v in catalog.VOICES}
    return [
        VoiceEntry(
            voice_id=voice_id,
            name=names.get(voice_id, ""),
            tags=_CATALOG_TAGS.get(voice_id, ()),
            source="simulator",
        )
        for voice_id in ids
        if isinstance(voice_id, str) and 0 < len(voice_id) <= 200
    ]


# -- does the service take it? ---------------------------------------------------------------


class CreateEndClient(Protocol):
    async def create_session(self, request: SessionCreate | None = None) -> Any: ...

    async def terminate_session(self, session_id: str) -> None: ...


class Registry(Protocol):
    def record_session(self, record: SessionRecord) -> None: ...

    def end_session(self, session_id: str, reason: str, *, at: float | None = None) -> None: ...


CHECK_REASON = "voice check (ended at once)"


async def check_voice(
    client: CreateEndClient,
    voice_id: str,
    *,
    avatar_id: str,
    backend: str,
    registry: Registry | None = None,
    clock: Callable[[], float] = time.time,
) -> VoiceCheck:
    """Ask the service whether it takes ``voice_id``: create a session with it and end it at
    once (see the module docs for what that costs). Never raises for the service's answers.

    The session is remembered in ``registry`` while it exists, so a crash in between leaves
    no session unknown to the next start.
    """
    voice_id = voice_id.strip()
    if not voice_id:
        raise ConfigError("Enter a voice id to check.")
    request = SessionCreate(
        avatar_id=avatar_id,
        conversation_engine=TextEchoEngine(tts=TTSConfig(voice_id=voice_id)),
        user_absent_timeout=10,
        max_duration=60,
    )
    try:
        created = await client.create_session(request)
    except InvalidRequestError as exc:
        return VoiceCheck(
            accepted=False, reason=exc.detail or exc.user_message, at=clock(), backend=backend
        )
    except GoneError as exc:
        return VoiceCheck(
            accepted=None,
            reason=f"The avatar {avatar_id} is retired, so the check could not tell: "
            f"{exc.user_message}",
            at=clock(),
            backend=backend,
        )
    except AppError as exc:
        return VoiceCheck(
            accepted=None,
            reason=f"The check could not tell: {exc.user_message}",
            at=clock(),
            backend=backend,
        )
    now = clock()
    if registry is not None:
        with contextlib.suppress(Exception):
            registry.record_session(
                SessionRecord(
                    session_id=created.session_id,
                    backend=backend,
                    avatar_id=avatar_id,
                    voice_id=voice_id,
                    created_at=now,
                    max_duration=60,
                )
            )
    reason = "The service created a session with this voice."
    try:
        await client.terminate_session(created.session_id)
    except AppError as exc:
        # left open in the registry: the next start ends it if it is still there
        reason += f" Ending it failed ({exc.user_message}); it ends by itself within 10 s."
    else:
        if registry is not None:
            with contextlib.suppress(Exception):
                registry.end_session(created.session_id, CHECK_REASON)
    return VoiceCheck(accepted=True, reason=reason, at=now, backend=backend)


__all__ = [
    "ELEVENLABS_VOICES_URL",
    "VoiceCheck",
    "VoiceEntry",
    "VoiceLibrary",
    "catalog_voices",
    "check_voice",
    "fetch_elevenlabs_voices",
    "fetch_simulator_voices",
    "looks_like_voice_id",
]
