"""What the task log records: one row per line of speech, and one per avatar session.

A task moves ``queued → sent → speaking → spoken``, or ends ``cancelled`` / ``failed`` (with a
reason) from any state before that. ``sent → spoken`` without ``speaking`` is allowed: the
service does not promise a start event for every phrase. Nothing leaves a terminal state.
Times are unix seconds (floats).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict


class TaskState(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    SPEAKING = "speaking"
    SPOKEN = "spoken"
    CANCELLED = "cancelled"
    FAILED = "failed"


TERMINAL_STATES: Final[frozenset[TaskState]] = frozenset(
    {TaskState.SPOKEN, TaskState.CANCELLED, TaskState.FAILED}
)

#: For each target state, the states a task may be in to move there.
ALLOWED_FROM: Final[dict[TaskState, frozenset[TaskState]]] = {
    TaskState.SENT: frozenset({TaskState.QUEUED}),
    TaskState.SPEAKING: frozenset({TaskState.SENT}),
    TaskState.SPOKEN: frozenset({TaskState.SENT, TaskState.SPEAKING}),
    TaskState.CANCELLED: frozenset({TaskState.QUEUED, TaskState.SENT, TaskState.SPEAKING}),
    TaskState.FAILED: frozenset({TaskState.QUEUED, TaskState.SENT, TaskState.SPEAKING}),
}


class TaskRoute(StrEnum):
    """How the text reached the service: the REST task call or the Web SDK's ``task()``, or,
    for a language model's answer (Ask mode), ``llm``: sent by REST, cut from the model's
    stream, the row linked to its question by ``question_id``."""

    REST = "rest"
    SDK = "sdk"
    LLM = "llm"


class TaskRecord(BaseModel):
    """One line of speech as the log knows it."""

    model_config = ConfigDict(frozen=True)

    row_id: int
    session_id: str
    text: str
    voice_id: str | None
    route: TaskRoute
    state: TaskState
    reason: str | None
    task_id: str | None
    created_at: float
    sent_at: float | None
    acked_at: float | None
    started_at: float | None
    ended_at: float | None
    #: The row whose line this one says again: the session that row was queued for ended
    #: before the avatar finished it (``None``: a line said for the first time).
    resumed_from: int | None = None
    #: The question this line answers (route ``llm``), else ``None``.
    question_id: str | None = None

    @property
    def latency_ms(self) -> float | None:
        """From the request leaving to the avatar starting to speak."""
        if self.sent_at is None or self.started_at is None:
            return None
        return (self.started_at - self.sent_at) * 1000.0

    @property
    def duration_s(self) -> float | None:
        """How long the avatar spoke (until it finished, or was cancelled or failed)."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class SessionRecord(BaseModel):
    """One avatar session this app created, kept so a crash leaves no orphan behind."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    backend: str  # the service's base URL
    avatar_id: str
    voice_id: str | None = None
    created_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    max_duration: int
    #: Which avatar slot of the app ran it (0 the first; None: logged before slots were kept).
    slot: int | None = None
    #: The phases of connecting (unix seconds): the create request left, the page's SDK was
    #: loaded, the avatar went live, its first frame was shown. ``created_at`` is when the
    #: service answered the create with the session's token.
    requested_at: float | None = None
    sdk_ready_at: float | None = None
    live_at: float | None = None
    first_frame_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class QuestionState(StrEnum):
    """How a question put to the language model ended (``answering`` while it streams)."""

    ANSWERING = "answering"
    ANSWERED = "answered"
    STOPPED = "stopped"
    REPLACED = "replaced"
    FAILED = "failed"


class QuestionRecord(BaseModel):
    """One question of Ask mode as the log knows it; its answer's lines are the task rows with
    its ``question_id``. ``reason`` says why it was not answered in full, and what was not
    said."""

    model_config = ConfigDict(frozen=True)

    question_id: str
    session_id: str | None
    text: str
    state: QuestionState
    reason: str | None
    asked_at: float
    ended_at: float | None
