"""What the user chose: a versioned pydantic schema saved as JSON in the config dir.

Window geometry and dock layout are state, not settings: they live in QSettings (ui layer).
The API keys (Avaturn's and the language model's) are never here: they live in the environment
or the OS keyring.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from avaturn_desktop.core import catalog, models
from avaturn_desktop.core.errors import ConfigError
from avaturn_desktop.core.kiosk import KioskSettings
from avaturn_desktop.core.look import CaptionStyle, StageBackground

log = logging.getLogger("avaturn.settings")

SCHEMA_VERSION = 1
CLOUD_API_BASE = "https://api.avaturn.live"
#: The official Web SDK, pinned, as an ES module from a CDN (the page imports it).
DEFAULT_SDK_URL = "https://esm.sh/@avaturn-live/web-sdk@0.3.7"
SETTINGS_FILE = "settings.json"
#: The control API's port when it is turned on in Settings (``--control-port`` overrides).
DEFAULT_CONTROL_PORT = 8770
#: How many avatars may run side by side unless the user says otherwise (each is a session on
#: the service, and the service's plan caps how many run at once).
DEFAULT_SLOT_QUOTA = 2
MAX_SLOT_QUOTA = 8


class SessionDefaults(BaseModel):
    """The session panel's fields as last used; validated by the same rules as the service."""

    model_config = ConfigDict(extra="ignore")

    avatar_id: str = models.DEFAULT_AVATAR_ID
    voice_id: str = catalog.DEFAULT_VOICE_ID
    background: Literal["default", "transparent"] = "default"
    model: Literal["delta", "golf"] = "delta"
    user_absent_timeout: Annotated[int, Field(ge=models.MIN_USER_ABSENT_TIMEOUT)] = (
        models.DEFAULT_USER_ABSENT_TIMEOUT
    )
    max_duration: Annotated[int, Field(ge=models.MIN_MAX_DURATION, le=models.MAX_MAX_DURATION)] = (
        models.DEFAULT_MAX_DURATION
    )

    def to_request(self) -> models.SessionCreate:
        engine = models.TextEchoEngine(tts=models.TTSConfig(voice_id=self.voice_id))
        return models.SessionCreate(
            avatar_id=self.avatar_id,
            conversation_engine=engine,
            background=self.background,
            model=self.model,
            user_absent_timeout=self.user_absent_timeout,
            max_duration=self.max_duration,
        )


#: OpenAI's API; with no language model key the app answers from the simulator instead.
DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"
DEFAULT_LLM_MODEL = "gpt-4o-mini"
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly presenter speaking through a talking avatar. Answer in a few short, "
    "complete spoken sentences: no lists, no markdown, no emoji, no code."
)


class LlmSettings(BaseModel):
    """Ask mode: an OpenAI-compatible chat-completions endpoint answers, and the avatar speaks.

    The key is not here: it lives in the environment or the OS keyring (``services/secrets``).
    """

    model_config = ConfigDict(extra="ignore")

    #: The API root, up to and including ``/v1`` (OpenAI's, or a compatible server's).
    base_url: str = DEFAULT_LLM_BASE_URL
    model: Annotated[str, Field(min_length=1, max_length=200)] = DEFAULT_LLM_MODEL
    system_prompt: Annotated[str, Field(max_length=20_000)] = DEFAULT_SYSTEM_PROMPT
    #: Longest wait for the answer to start, and between two pieces of it.
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: Earlier questions and answers sent along with a question (per avatar session).
    history_turns: Annotated[int, Field(ge=0, le=200)] = 20
    #: How fast the built-in simulator streams its answers (tokens per second).
    sim_tokens_per_second: Annotated[float, Field(gt=0, le=10_000)] = 20.0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class AudioOutput(BaseModel):
    """Where an avatar's sound goes: the output device, the level and mute.

    ``device_id`` is the page's (Chromium's) id of the device, which changes between runs of an
    off-the-record page; ``device_label`` is what it is matched by when the id no longer is.
    Empty: the system's default output.
    """

    model_config = ConfigDict(extra="ignore")

    device_id: Annotated[str, Field(max_length=500)] = ""
    device_label: Annotated[str, Field(max_length=500)] = ""
    volume: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    muted: bool = False


class SlotSettings(BaseModel):
    """One avatar slot's own choices (slot 0's session form is :attr:`Settings.session`)."""

    model_config = ConfigDict(extra="ignore")

    #: The session form of this slot as last used (None: the first slot's).
    session: SessionDefaults | None = None
    audio: AudioOutput = AudioOutput()


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    schema_version: int = SCHEMA_VERSION
    #: "auto": the cloud when an API key is set, else the in-process simulator.
    backend: Literal["auto", "cloud", "simulator"] = "auto"
    api_base: str = CLOUD_API_BASE
    sdk_url: str = DEFAULT_SDK_URL
    session: SessionDefaults = SessionDefaults()
    init_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: Keep the SDK from disposing itself after 5 idle minutes.
    keep_alive: bool = True
    #: Cut long text into sentences, one task each.
    split_sentences: bool = True
    max_chunk_chars: Annotated[int, Field(ge=40, le=models.MAX_TASK_TEXT)] = 400
    #: What happens to text sent while no session is live: held in the queue, or refused.
    offline_policy: Literal["hold", "refuse"] = "hold"
    #: Warn this many seconds before the session's max_duration ends it.
    warn_before_end_s: Annotated[int, Field(ge=0)] = 120
    #: Ask before Terminate ends a session while the avatar speaks or lines wait.
    confirm_terminate: bool = True
    #: The local control API (``control-api.md``): on, and on which loopback port.
    control_enabled: bool = False
    control_port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_CONTROL_PORT
    #: The show (``core/look.py``, ``core/keys.py``): what the stage paints behind the avatar,
    #: the app's captions, the audience output's screen, and keys that differ from the defaults.
    stage_background: StageBackground = StageBackground()
    captions: CaptionStyle = CaptionStyle()
    audience_screen: Annotated[int, Field(ge=0, le=63)] = 0
    audience_fullscreen: bool = True
    keys: dict[str, str] = Field(default_factory=dict)
    #: Ask mode's language model.
    llm: LlmSettings = LlmSettings()
    #: Kiosk mode: the stage watchdog, the attract screen, the opening hours.
    kiosk: KioskSettings = KioskSettings()
    #: How many avatars may run side by side (each one a session on the service).
    slot_quota: Annotated[int, Field(ge=1, le=MAX_SLOT_QUOTA)] = DEFAULT_SLOT_QUOTA
    #: Per slot (by index): its session form and where its sound goes.
    slots: Annotated[list[SlotSettings], Field(max_length=MAX_SLOT_QUOTA)] = []
    #: A session that takes longer than this from create to its first frame is called slow.
    slow_connect_s: Annotated[float, Field(gt=0, le=600)] = 5.0

    def slot_settings(self, index: int) -> SlotSettings:
        """Slot ``index``'s own choices (defaults when none were saved)."""
        return self.slots[index] if 0 <= index < len(self.slots) else SlotSettings()

    def slot_session(self, index: int) -> SessionDefaults:
        """The session form slot ``index`` starts with: its own, else the first slot's."""
        own = self.slot_settings(index).session if index > 0 else None
        return own if own is not None else self.session

    def with_slot(self, index: int, **changes: Any) -> list[SlotSettings]:
        """:attr:`slots` with slot ``index``'s fields changed (for ``update(slots=...)``)."""
        slots = list(self.slots)
        while len(slots) <= index:
            slots.append(SlotSettings())
        slots[index] = slots[index].model_copy(update=changes)
        return slots

    @field_validator("api_base", "sdk_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


#: Migrations from version N to N+1, applied in order to the raw JSON.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    version = int(raw.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"the settings file was written by a newer version (schema {version}); "
            f"this version reads up to {SCHEMA_VERSION}"
        )
    while version < SCHEMA_VERSION:
        raw = MIGRATIONS[version](raw)
        version += 1
        raw["schema_version"] = version
    return raw


def settings_path(config_dir: Path) -> Path:
    return config_dir / SETTINGS_FILE


def load(config_dir: Path) -> Settings:
    """Read the settings; a missing file gives the defaults, a broken one is kept aside."""
    path = settings_path(config_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _set_aside(path, f"it could not be read ({exc.__class__.__name__})")
    if not isinstance(raw, dict):
        return _set_aside(path, "it is not a JSON object")
    version = raw.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return _set_aside(path, "its schema_version is not a version number")
    try:
        return Settings.model_validate(migrate(raw))
    except ValidationError as exc:
        return _set_aside(path, f"it has invalid values ({exc.error_count()} errors)")


def _set_aside(path: Path, why: str) -> Settings:
    backup = path.with_suffix(".broken.json")
    log.warning("Settings file %s ignored: %s; kept as %s", path, why, backup.name)
    try:
        os.replace(path, backup)
    except OSError:
        log.warning("Could not move the broken settings file aside")
    return Settings()


def save(settings: Settings, config_dir: Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    path = settings_path(config_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(settings.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)
