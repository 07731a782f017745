"""The typed messages between the avatar page and Python (Qt-free).

Page → Python messages are :data:`PageEvent`; Python → page messages are :data:`PageCommand`.
Both are pydantic discriminated unions on ``type``, carried as JSON strings over the one web
bridge. Everything that arrives from the page is parsed with :func:`parse_page_event` before any
other code sees it; a malformed message becomes a :class:`PageMessageError`, never a ``KeyError``
deep in a widget.

The session token travels in :class:`InitCommand` (the page needs it); it is hidden from every
repr. The API key never appears here at all.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

#: The official Web SDK as an ES module from a CDN, pinned. The setting that overrides it lives
#: with the app's settings; this is only the default.
OFFICIAL_SDK_URL = "https://esm.sh/@avaturn-live/web-sdk@0.3.7"

#: Longest raw page message accepted; anything bigger is refused before JSON parsing.
MAX_PAGE_MESSAGE = 64_000


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Event(_Message):
    # Events are lenient about extra keys (a newer page may add some) but strict on types.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


# -- page → Python ------------------------------------------------------------------------------


class Ready(_Event):
    """The page's script is loaded and listens for commands."""

    type: Literal["ready"] = "ready"
    #: ``performance.timeOrigin`` of the page's document (ms since the epoch): tells a new
    #: document from the one it replaces, whose ``ready`` may still be on its way.
    time_origin_ms: float | None = None


class SdkLoaded(_Event):
    """The Web SDK module was imported."""

    type: Literal["sdk_loaded"] = "sdk_loaded"


class SdkFailed(_Event):
    """The Web SDK module could not be imported (network, CDN, wrong URL, no export)."""

    type: Literal["sdk_failed"] = "sdk_failed"
    message: str


class Inited(_Event):
    """``avatar.init()`` resolved: the avatar is live in the page."""

    type: Literal["inited"] = "inited"
    session_id: str


class InitFailed(_Event):
    """``avatar.init()`` rejected, or did not finish within its timeout."""

    type: Literal["init_failed"] = "init_failed"
    message: str
    timed_out: bool = False


class _Timed(_Event):
    #: ``performance.now()`` in the page when the SDK reported it, if known.
    at_ms: float | None = None


class AvatarStartedSpeaking(_Timed):
    type: Literal["avatar_started_speaking"] = "avatar_started_speaking"


class AvatarEndedSpeaking(_Timed):
    type: Literal["avatar_ended_speaking"] = "avatar_ended_speaking"


class AvatarStartedSpeakingPhrase(_Timed):
    type: Literal["avatar_started_speaking_phrase"] = "avatar_started_speaking_phrase"
    phrase_id: str | None = None


class AvatarEndedSpeakingPhrase(_Timed):
    type: Literal["avatar_ended_speaking_phrase"] = "avatar_ended_speaking_phrase"
    phrase_id: str | None = None


#: The four speech events, named as the SDK names them.
SpeechPageEvent = (
    AvatarStartedSpeaking
    | AvatarEndedSpeaking
    | AvatarStartedSpeakingPhrase
    | AvatarEndedSpeakingPhrase
)


class Idle(_Timed):
    """The SDK's ``idle`` event (five minutes with nothing to say)."""

    type: Literal["idle"] = "idle"


class SdkError(_Timed):
    """The SDK's ``error`` event (``limits_exceeded``, ``internal_error``, ...).

    The page flattens both shapes it may get: the service's ``{"type": "error", "error":
    {"type": "session_lifecycle_error", "code", "message", "session_id"}}`` (``kind`` is the
    inner ``type``) and the simulator's ``{"type": "error", "code", "message", "reason"}``.
    What it says is the page's word only: an error that would end the session is checked with
    the service first (see ``services.session``).
    """

    type: Literal["sdk_error"] = "sdk_error"
    code: str = "internal_error"
    message: str = ""
    reason: str | None = None
    kind: str | None = None


class Disposed(_Timed):
    """The page's avatar is gone: disposed on command (``reason`` None) or by the SDK itself."""

    type: Literal["disposed"] = "disposed"
    reason: str | None = None


class PageGone(_Event):
    """The page itself went away with a live avatar in it (its process died, or it was loaded
    again). Said by the app's stage facade, never by the page: it is no :data:`PageEvent`, and
    :func:`parse_page_event` refuses its type, so no script can send it."""

    type: Literal["page_gone"] = "page_gone"
    reason: str


#: What the stage's watchdog can find wrong with what the audience sees and hears.
StageProblemKind = Literal["black", "frozen", "silent"]


class Heartbeat(_Timed):
    """The stage page is alive (its watchdog, ``resources/web/watchdog.js``, sends one every
    few seconds once the app turned it on with :class:`WatchdogCommand`)."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: Annotated[int, Field(ge=0)] = 0
    #: A live avatar's picture and sound are being checked.
    watching: bool = False
    #: The page is shown (a hidden page's timers are slowed, and its picture is not judged).
    visible: bool = True
    #: The problems found and not cleared yet.
    problems: Annotated[list[StageProblemKind], Field(max_length=3)] = []


class StageProblem(_Timed):
    """The watchdog found the stage black, frozen or silent (``cleared``: it is over)."""

    type: Literal["stage_problem"] = "stage_problem"
    problem: StageProblemKind
    cleared: bool = False
    detail: Annotated[str, Field(max_length=300)] = ""


class FirstFrame(_Timed):
    """The live avatar's first frame was shown (a video frame, or the first paint of the
    SDK's canvas): the last phase of connecting."""

    type: Literal["first_frame"] = "first_frame"
    source: Literal["video", "paint"] = "paint"


class AudioLevel(_Timed):
    """The avatar's sound level (0 silent … 1 full scale), a few times a second while its
    media has sound; ``None`` when the page cannot measure it."""

    type: Literal["audio_level"] = "audio_level"
    level: float | None = None


class CommandResult(_Event):
    """The answer to one command, matched by ``ref``."""

    type: Literal["result"] = "result"
    ref: int
    ok: bool
    error: str | None = None
    data: Any = None


PageEvent = Annotated[
    Ready
    | SdkLoaded
    | SdkFailed
    | Inited
    | InitFailed
    | AvatarStartedSpeaking
    | AvatarEndedSpeaking
    | AvatarStartedSpeakingPhrase
    | AvatarEndedSpeakingPhrase
    | Idle
    | SdkError
    | Disposed
    | Heartbeat
    | StageProblem
    | FirstFrame
    | AudioLevel
    | CommandResult,
    Field(discriminator="type"),
]

_page_events: TypeAdapter[PageEvent] = TypeAdapter(PageEvent)
_EVENT_TYPES = frozenset(
    model.model_fields["type"].default
    for model in (
        Ready,
        SdkLoaded,
        SdkFailed,
        Inited,
        InitFailed,
        AvatarStartedSpeaking,
        AvatarEndedSpeaking,
        AvatarStartedSpeakingPhrase,
        AvatarEndedSpeakingPhrase,
        Idle,
        SdkError,
        Disposed,
        Heartbeat,
        StageProblem,
        FirstFrame,
        AudioLevel,
        CommandResult,
    )
)


class PageMessageError(ValueError):
    """A page message that is not valid JSON, has an unknown ``type`` or wrong fields.

    ``reason`` is short and safe to log: it never quotes the message's values.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_page_event(raw: str) -> PageEvent:
    """Parse one message from the page, or raise :class:`PageMessageError`."""
    if not isinstance(raw, str):
        raise PageMessageError(f"not a string but {type(raw).__name__}")
    if len(raw) > MAX_PAGE_MESSAGE:
        raise PageMessageError(f"too long ({len(raw)} characters)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PageMessageError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise PageMessageError(f"not a JSON object but {type(data).__name__}")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise PageMessageError("no string 'type'")
    if kind not in _EVENT_TYPES:
        raise PageMessageError(f"unknown type {kind[:40]!r}")
    try:
        return _page_events.validate_python(data)
    except ValidationError as exc:
        fields = ", ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or '?'}: {err['type']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise PageMessageError(f"bad fields for {kind!r} ({fields})") from None


# -- Python → page ------------------------------------------------------------------------------


class InitCommand(_Message):
    """Import the SDK from ``sdk_url``, create ``AvaturnHead`` and ``init`` it.

    ``ref`` lets the page refuse a second init while one runs (a ``result`` with an error);
    success or failure of the init itself arrives as ``inited`` / ``init_failed`` /
    ``sdk_failed``.
    """

    type: Literal["init"] = "init"
    ref: int = 0
    token: Annotated[str, Field(min_length=1, repr=False)]
    api_host: str
    sdk_url: str
    timeout_ms: Annotated[int, Field(gt=0)]
    keep_alive: bool = True

    def __repr__(self) -> str:  # the token is a credential: keep it out of logs
        return (
            f"InitCommand(ref={self.ref}, api_host={self.api_host!r}, sdk_url={self.sdk_url!r}, "
            f"timeout_ms={self.timeout_ms}, keep_alive={self.keep_alive}, token=<hidden>)"
        )

    __str__ = __repr__


class TaskCommand(_Message):
    type: Literal["task"] = "task"
    ref: int
    text: Annotated[str, Field(min_length=1)]


class CancelAllCommand(_Message):
    type: Literal["cancel_all"] = "cancel_all"
    ref: int


class ChangeVoiceCommand(_Message):
    type: Literal["change_voice"] = "change_voice"
    ref: int
    voice_id: Annotated[str, Field(min_length=1)]


class DisposeCommand(_Message):
    type: Literal["dispose"] = "dispose"
    ref: int


class WatchdogCommand(_Message):
    """Turn the stage's watchdog on with its times, in ms (see ``resources/web/watchdog.js``):
    a heartbeat every ``heartbeat_ms``; while an avatar is live, a sample every ``sample_ms``,
    and a problem once the picture was black ``black_ms``, unchanged ``frozen_ms``, or the
    avatar spoke without a sound ``silent_ms`` (0 turns that check off)."""

    type: Literal["watchdog"] = "watchdog"
    ref: int
    heartbeat_ms: Annotated[int, Field(ge=100, le=60_000)] = 2000
    sample_ms: Annotated[int, Field(ge=50, le=10_000)] = 500
    black_ms: Annotated[int, Field(ge=0, le=600_000)] = 3000
    frozen_ms: Annotated[int, Field(ge=0, le=600_000)] = 4000
    silent_ms: Annotated[int, Field(ge=0, le=600_000)] = 3000


class AttractCommand(_Message):
    """Show the attract screen over the stage (``show``), or take it away. ``image`` is a
    ``data:image/...`` URL (the page reads no files)."""

    type: Literal["attract"] = "attract"
    ref: int
    show: bool
    text: Annotated[str, Field(max_length=500)] = ""
    image: str | None = Field(default=None, repr=False)


class LookCommand(_Message):
    """How the stage looks (``core/look.py``): what it paints behind the avatar, the caption
    style, and whether it is the audience output (then it shows no placeholder or messages).
    ``background_image`` is a ``data:`` URL (the page reads no files)."""

    type: Literal["look"] = "look"
    ref: int
    background: Literal["default", "transparent", "colour", "image"] = "default"
    background_colour: str | None = None
    background_image: str | None = Field(default=None, repr=False)
    captions: bool = False
    caption_size_pct: float = 4.5
    caption_position: Literal["bottom", "top"] = "bottom"
    caption_colour: str = "#ffffff"
    caption_background: str = "#000000b3"
    audience: bool = False


class CaptionCommand(_Message):
    """The phrase being spoken, shown as the caption when captions are on (None: none)."""

    type: Literal["caption"] = "caption"
    ref: int
    text: str | None = None


class AudioOutputCommand(_Message):
    """Where the page's sound goes: ``sink_id`` through ``HTMLMediaElement.setSinkId`` ("" is
    the default device), ``volume`` 0…1, ``muted``. The answer's data lists the output devices
    the page sees (``[{"id", "label"}]``) and whether the device could be chosen."""

    type: Literal["audio_output"] = "audio_output"
    ref: int
    sink_id: Annotated[str, Field(max_length=500)] = ""
    volume: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    muted: bool = False


PageCommand = Annotated[
    InitCommand
    | TaskCommand
    | CancelAllCommand
    | ChangeVoiceCommand
    | DisposeCommand
    | WatchdogCommand
    | AttractCommand
    | LookCommand
    | CaptionCommand
    | AudioOutputCommand,
    Field(discriminator="type"),
]

_page_commands: TypeAdapter[PageCommand] = TypeAdapter(PageCommand)


def command_json(command: PageCommand) -> str:
    """The JSON text sent to the page for ``command``."""
    return command.model_dump_json()


def parse_page_command(raw: str) -> PageCommand:
    """Parse a command's JSON (used by tests and tools; the page has its own checks)."""
    return _page_commands.validate_json(raw)


def describe_command(command: PageCommand) -> str:
    """A short, secret-free description for logs: type and ref only."""
    return f"{command.type}#{command.ref}"
