"""What a line of speech is, for the services and the doors alike (Qt-free values).

The speech queue (``services/speech_queue.py``) owns the items; panels, the control API and
tests read them as the frozen :class:`QueueItem` snapshots defined here.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Final

from avaturn_desktop.core.errors import AppError, ConfigError
from avaturn_desktop.core.models import MAX_TASK_TEXT

REASON_STOPPED: Final = "stopped"
REASON_SPEAK_NOW: Final = "replaced by Speak now"
REASON_VOICE: Final = "voice change cleared the queue"
REASON_SESSION_ENDED: Final = "session ended"
REASON_NOT_SENT_ENDED: Final = "session ended before it was sent"
REASON_REMOVED: Final = "removed from the queue"
REASON_REQUEUED_VOICE: Final = "queued again with the new voice"
REASON_UNCLEAR: Final = "may or may not have been spoken"
REASON_SESSION_GONE: Final = "the session has ended on the service"
REASON_CRASHED: Final = "could not be sent (an error in the app)"
#: Waited when the avatar was stopped, and new words came: kept here until Resume or Remove.
REASON_SET_ASIDE: Final = "set aside by Stop: Resume says it, Remove drops it"
#: A line a dead session had taken (cut mid-sentence, or not started): its copy says it again,
#: from its start, in the next session (``services/resume.py``).
REASON_CARRIED: Final = (
    "session ended before it was said to its end; said again in the next session"
)
#: Wait after a 429 without a Retry-After.
DEFAULT_RETRY_AFTER_S: Final = 1.0


class ItemState(StrEnum):
    WAITING = "waiting"
    SENDING = "sending"
    SENT = "sent"
    SPEAKING = "speaking"
    SPOKEN = "spoken"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES: Final = frozenset({ItemState.SPOKEN, ItemState.CANCELLED, ItemState.FAILED})
ON_SERVICE_STATES: Final = frozenset({ItemState.SENDING, ItemState.SENT, ItemState.SPEAKING})


class QueueRefusedError(AppError):
    """Text arrived while no session is live and the policy is ``refuse``."""


class NotLiveError(AppError):
    """An action that needs a live session (voice change) was asked for without one."""


class UnclearRetryError(AppError):
    """Retry was asked for a line that may already have been spoken; ``confirm=True`` sends it
    anyway (the door asks the person first)."""


@dataclasses.dataclass(frozen=True)
class StopResult:
    """What a stop reached. ``confirmed_by`` names the paths that confirmed the cancel
    (``"page"``: the Web SDK's cancel-all; ``"service"``: the service's cancel call);
    ``problems`` says why the others did not, one readable line each."""

    confirmed: bool
    confirmed_by: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def may_still_be_talking(self) -> bool:
        return not self.confirmed


class StopUnconfirmedError(AppError):
    """No path confirmed the cancel: the avatar may still be talking. ``result`` says what was
    tried; the door should say so and offer to stop again (stopping twice is harmless)."""

    def __init__(self, result: StopResult) -> None:
        why = "; ".join(result.problems) or "no answer"
        super().__init__(
            f"The avatar may still be talking: the stop did not get through ({why}). "
            "Press Stop again."
        )
        self.result = result


@dataclasses.dataclass(frozen=True)
class QueueItem:
    """One item as listeners and panels see it (a snapshot; the queue replaces it)."""

    item_id: int
    text: str
    state: ItemState
    reason: str | None = None
    row_id: int | None = None
    session_id: str | None = None
    voice_id: str | None = None
    task_id: str | None = None
    #: Set while the item waits after a 429, for the panel: when it is sent again (clock time).
    retry_at: float | None = None
    #: A request carrying it left for the service and was not refused: it may be on the
    #: service, whatever its state (a line that never left is the only one safe to re-queue).
    ever_sent: bool = False
    #: Its send ended with no proof either way: it may or may not have been spoken.
    unclear: bool = False
    #: The question this line answers (Ask mode), else ``None``.
    question_id: str | None = None
    #: It waited when the avatar was stopped and new words went first: not sent until Resume.
    set_aside: bool = False

    @property
    def acknowledged(self) -> bool:
        """The service took it (it answered with a task id)."""
        return self.task_id is not None

    @property
    def held(self) -> bool:
        """Waiting for a session to go live (it has no log row yet)."""
        return self.state is ItemState.WAITING and self.row_id is None

    @property
    def editable(self) -> bool:
        """Not sent yet: it can be removed and moved."""
        return self.state is ItemState.WAITING


class ChangeKind(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    MOVED = "moved"
    PAUSED = "paused"  # ``paused`` changed (no item)
    #: A door asked for silence (``SpeechQueue.stop``), paused already or not (no item).
    STOPPED = "stopped"
    #: An ended session's lines not said to their end changed (``SpeechQueue.unfinished``).
    UNFINISHED = "unfinished"
    #: Something went wrong that a person should see (``message``; ``item`` if it is about one).
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class QueueChange:
    kind: ChangeKind
    item: QueueItem | None = None
    message: str | None = None


def check_text(text: str) -> str:
    """``text`` if it can be one task; else :class:`ConfigError` with a readable message."""
    if not text or not text.strip():
        raise ConfigError("Nothing to say: the text is empty.")
    if len(text) > MAX_TASK_TEXT:
        raise ConfigError(
            f"The text is {len(text)} characters long; one task takes at most {MAX_TASK_TEXT}. "
            "Turn on sentence splitting or shorten it."
        )
    return text
