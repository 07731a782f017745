"""The service's contract as pydantic models: one set, used by the client and the simulator.

Requests are strict about what the service validates (ranges, the text-echo engine's TTS
config); answers are lenient (extra fields are kept, not refused) so that a newer service does
not break an older client.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

DEFAULT_AVATAR_ID = "jane_20240829"
DEFAULT_USER_ABSENT_TIMEOUT = 60
DEFAULT_MAX_DURATION = 3600
MIN_USER_ABSENT_TIMEOUT = 10
#: No session outlives ``MAX_MAX_DURATION``, so a longer nobody-watching timeout means nothing;
#: the bound also keeps a 400-digit number from reaching arithmetic that overflows a float.
MAX_USER_ABSENT_TIMEOUT = 86_400
MIN_MAX_DURATION = 60
MAX_MAX_DURATION = 86_400
#: The longest text one task may carry. The service documents no limit; this one keeps a
#: pasted novel from becoming one endless utterance (the chunker cuts long text below it).
MAX_TASK_TEXT = 5_000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class TTSConfig(_Request):
    """A text-to-speech voice. Only ElevenLabs is accepted by the service."""

    engine: Literal["elevenlabs"] = "elevenlabs"
    voice_id: Annotated[str, Field(min_length=1, max_length=200)]


class TextEchoEngine(_Request):
    """The engine this product drives: the avatar says exactly the text it is given."""

    type: Literal["text-echo"] = "text-echo"
    tts: TTSConfig


class OtherEngine(BaseModel):
    """Any other conversation engine (openai-realtime, cartesia, external): passed through."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @model_validator(mode="after")
    def _not_text_echo(self) -> OtherEngine:
        if self.type == "text-echo":
            raise ValueError("a text-echo engine needs a 'tts' config")
        return self

    @model_validator(mode="after")
    def _plain_json(self) -> OtherEngine:
        # Passed through unvalidated, so at least it must be JSON that can be sent on: no
        # infinities or NaN (``1e400`` parses as one) and no lone surrogates.
        try:
            json.dumps(self.model_extra, allow_nan=False, ensure_ascii=False).encode()
        except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
            raise ValueError(f"the engine's settings are not plain JSON: {exc}") from None
        return self


def _engine_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "text-echo" if kind == "text-echo" else "other"


#: A conversation engine: text-echo validated strictly (its ``tts`` is required), any other
#: type passed through untouched so a later version can drive it.
ConversationEngine = Annotated[
    Annotated[TextEchoEngine, Tag("text-echo")] | Annotated[OtherEngine, Tag("other")],
    Discriminator(_engine_kind),
]


class SessionCreate(_Request):
    """Body of ``POST /api/v1/sessions``. Every field is optional; an empty body is valid."""

    avatar_id: Annotated[str, Field(min_length=1, max_length=200)] = DEFAULT_AVATAR_ID
    conversation_engine: ConversationEngine | None = None
    background: Literal["default", "transparent"] = "default"
    model: Literal["delta", "golf"] = "delta"
    user_absent_timeout: Annotated[
        int, Field(ge=MIN_USER_ABSENT_TIMEOUT, le=MAX_USER_ABSENT_TIMEOUT)
    ] = DEFAULT_USER_ABSENT_TIMEOUT
    max_duration: Annotated[int, Field(ge=MIN_MAX_DURATION, le=MAX_MAX_DURATION)] = (
        DEFAULT_MAX_DURATION
    )

    @property
    def voice_id(self) -> str | None:
        engine = self.conversation_engine
        return engine.tts.voice_id if isinstance(engine, TextEchoEngine) else None

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send: defaults left out, so the service applies its own."""
        data = self.model_dump(mode="json", exclude_none=True)
        return {key: value for key, value in data.items() if key in self.model_fields_set}


class SessionCreated(_Answer):
    """Answer of ``POST /api/v1/sessions``. ``token`` is the only thing the page ever gets."""

    session_id: str
    token: str

    def __repr__(self) -> str:  # the token is a credential: keep it out of logs
        return f"SessionCreated(session_id={self.session_id!r}, token=<hidden>)"

    __str__ = __repr__


class TaskCreate(_Request):
    """Body of a task call, REST or SDK."""

    text: Annotated[str, Field(max_length=MAX_TASK_TEXT)]

    @model_validator(mode="after")
    def _not_blank(self) -> TaskCreate:
        if not self.text.strip():
            raise ValueError("text must not be empty or only white space")
        return self


class TaskCreated(_Answer):
    task_id: str


class SdkSessionConfig(_Answer):
    uses_stacked_alpha: bool = False


class SdkSession(_Answer):
    """Answer of ``GET /_sdk/v0/sessions`` (the Web SDK's session lookup)."""

    id: str
    limited_access_token: str
    room_url: str
    session_config: SdkSessionConfig = SdkSessionConfig()

    def __repr__(self) -> str:
        return f"SdkSession(id={self.id!r}, room_url={self.room_url!r})"

    __str__ = __repr__


class SdkConfigPatch(_Request):
    """Body of ``PATCH /_sdk/v0/sessions/config`` (what ``changeVoice`` sends)."""

    conversation_engine: TextEchoEngine


class ValidationIssue(_Answer):
    loc: list[str | int] = []
    msg: str = ""
    type: str = ""


class ValidationErrorBody(_Answer):
    """FastAPI's 422 shape."""

    detail: list[ValidationIssue]


class ErrorBody(_Answer):
    """``{"detail": "<message>"}``, the shape of every other error."""

    detail: str


# -- events the avatar emits (over WebRTC app messages in the cloud; a WebSocket in the simulator)

SPEECH_EVENT_TYPES = (
    "avatar_started_speaking",
    "avatar_ended_speaking",
    "avatar_started_speaking_phrase",
    "avatar_ended_speaking_phrase",
)


class SpeechEvent(_Answer):
    type: Literal[
        "avatar_started_speaking",
        "avatar_ended_speaking",
        "avatar_started_speaking_phrase",
        "avatar_ended_speaking_phrase",
    ]
    phrase_id: str | None = None


class ServiceErrorEvent(_Answer):
    type: Literal["error"]
    code: str = "internal_error"
    message: str = ""
