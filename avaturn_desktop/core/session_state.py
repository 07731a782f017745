"""The session lifecycle: states, end reasons and the snapshot every panel renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from avaturn_desktop.core.models import SessionCreate


class SessionState(StrEnum):
    IDLE = "idle"
    CREATING = "creating"
    CONNECTING = "connecting"
    LIVE = "live"
    TERMINATING = "terminating"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def busy(self) -> bool:
        """A session is being made, is live, or is being ended: no second start."""
        return self in _BUSY

    @property
    def label(self) -> str:
        return self.value.capitalize()


_BUSY = frozenset(
    {SessionState.CREATING, SessionState.CONNECTING, SessionState.LIVE, SessionState.TERMINATING}
)

#: Which state may follow which. Anything else is a programming error.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.IDLE: frozenset({SessionState.CREATING}),
    SessionState.CREATING: frozenset(
        {SessionState.CONNECTING, SessionState.FAILED, SessionState.ENDED, SessionState.TERMINATING}
    ),
    SessionState.CONNECTING: frozenset(
        {SessionState.LIVE, SessionState.FAILED, SessionState.TERMINATING, SessionState.ENDED}
    ),
    SessionState.LIVE: frozenset(
        {SessionState.TERMINATING, SessionState.ENDED, SessionState.FAILED}
    ),
    SessionState.TERMINATING: frozenset({SessionState.ENDED, SessionState.FAILED}),
    SessionState.ENDED: frozenset({SessionState.CREATING}),
    SessionState.FAILED: frozenset({SessionState.CREATING}),
}


class EndReason(StrEnum):
    """Why a session ended, in words a presenter understands."""

    BY_USER = "terminated by you"
    CANCELLED = "cancelled before it went live"
    MAX_DURATION = "max duration reached"
    USER_ABSENT = "nobody was watching"
    SDK_IDLE = "the avatar page went idle"
    SERVER = "ended by the service"
    CONNECTION_LOST = "connection to the avatar lost"
    APP_QUIT = "the app was closed"
    #: Kiosk mode: nobody used it for a while; the attract screen shows (no quota burnt).
    ATTRACT = "nobody used the kiosk"
    #: Kiosk mode: outside its opening hours.
    CLOSED = "outside the opening hours"


@dataclass(frozen=True)
class SessionSnapshot:
    """Everything a panel needs to draw the session; replaced, never mutated."""

    state: SessionState = SessionState.IDLE
    session_id: str | None = None
    request: SessionCreate | None = None
    voice_id: str | None = None
    created_at: float | None = None
    live_at: float | None = None
    ended_at: float | None = None
    #: Why it ended (ENDED) or failed (FAILED), as a sentence.
    reason: str | None = None
    #: Extra words on a failure, e.g. the service's own message.
    detail: str | None = None
    history: tuple[SessionState, ...] = field(default=())

    @property
    def max_duration(self) -> int | None:
        return self.request.max_duration if self.request else None

    def elapsed(self, now: float) -> float | None:
        if self.created_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.created_at)

    def time_left(self, now: float) -> float | None:
        """Seconds until the service's max_duration ends the session (counted from creation)."""
        if self.created_at is None or self.max_duration is None or self.ended_at is not None:
            return None
        return max(0.0, self.created_at + self.max_duration - now)
