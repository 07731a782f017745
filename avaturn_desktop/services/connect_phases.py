"""The phases of connecting a session, per avatar slot, and a warning when it was slow (Qt-free).

A session goes live in four steps, each of which can be the slow one (the start is when the
controller announces "creating", just before the create request leaves):

1. **create**: the create request leaves → the service answers with the session and its token;
2. **SDK**: token → the page has the Web SDK loaded (``sdk_loaded``);
3. **join**: SDK loaded → the avatar is live (the SDK's ``init`` resolved);
4. **first frame**: live → the page showed the avatar's first frame (``first_frame``).

:class:`ConnectWatch` follows one slot's session controller and page events and keeps the
timeline of the last sessions (for the metrics plots); each phase is also written to the task
log's session registry as it happens, so the record survives the app. A session whose total
(create sent → first frame, or → live when no frame was reported) is over the slow-connect
threshold is announced once, with its phases, so a person sees which step was slow.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from avaturn_desktop.core.events import FirstFrame, SdkLoaded
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState

log = logging.getLogger("avaturn.connect")

#: Sessions kept per slot for the plots.
HISTORY = 50
PHASES = ("create", "sdk", "join", "first_frame")
PHASE_LABELS = {
    "create": "create",
    "sdk": "SDK loaded",
    "join": "joined",
    "first_frame": "first frame",
}


class PhaseRecorder(Protocol):
    def record_phases(self, session_id: str, **phases: float | None) -> None: ...


class Warner(Protocol):
    def warning(self, text: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class ConnectPhases:
    """One session's way to live (unix seconds; None: not reached)."""

    slot: int
    requested_at: float
    voice_id: str | None = None
    session_id: str | None = None
    token_at: float | None = None
    sdk_ready_at: float | None = None
    live_at: float | None = None
    first_frame_at: float | None = None
    #: ``connecting``, ``live``, ``failed`` or ``ended`` (ended before it went live).
    outcome: str = "connecting"
    reason: str | None = None

    def durations_s(self) -> dict[str, float | None]:
        """Each phase's length in seconds (None when it did not complete)."""
        marks = (self.requested_at, self.token_at, self.sdk_ready_at, self.live_at)
        ends = (self.token_at, self.sdk_ready_at, self.live_at, self.first_frame_at)
        return {
            name: None if start is None or end is None else max(0.0, end - start)
            for name, start, end in zip(PHASES, marks, ends, strict=True)
        }

    @property
    def total_s(self) -> float | None:
        """Create sent → first frame (→ live when no frame was reported)."""
        end = self.first_frame_at if self.first_frame_at is not None else self.live_at
        return None if end is None else max(0.0, end - self.requested_at)

    def describe(self) -> str:
        """The phases in words: "create 0.2 s, SDK loaded 6.1 s, ..."."""
        parts = [
            f"{PHASE_LABELS[name]} {value:.1f} s"
            for name, value in self.durations_s().items()
            if value is not None
        ]
        return ", ".join(parts) or "no phase completed"

    def as_json(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "session_id": self.session_id,
            "voice_id": self.voice_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "requested_at": self.requested_at,
            "phases_s": {
                k: None if v is None else round(v, 3) for k, v in self.durations_s().items()
            },
            "total_s": None if self.total_s is None else round(self.total_s, 3),
        }


Listener = Callable[[ConnectPhases], None]


class ConnectWatch:
    """One slot's sessions connecting (see the module docs)."""

    def __init__(
        self,
        slot: int,
        *,
        recorder: PhaseRecorder | None,
        notices: Warner,
        threshold_s: Callable[[], float],
        label: Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slot = slot
        self._recorder = recorder
        self._notices = notices
        self._threshold_s = threshold_s
        self._label = label
        self._clock = clock
        self.history: collections.deque[ConnectPhases] = collections.deque(maxlen=HISTORY)
        self._current: ConnectPhases | None = None
        self._warned = False
        self._listeners: list[Listener] = []

    @property
    def current(self) -> ConnectPhases | None:
        """The latest session's timeline (connecting, live, or how it ended)."""
        return self._current

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- sources ---------------------------------------------------------------------------

    def on_snapshot(self, snap: SessionSnapshot) -> None:
        state = snap.state
        if state is SessionState.CREATING:
            self._warned = False
            self._replace(
                ConnectPhases(
                    slot=self.slot,
                    requested_at=self._clock(),
                    voice_id=snap.voice_id,
                ),
                new=True,
            )
            return
        current = self._current
        if current is None or current.outcome != "connecting":
            return
        if state is SessionState.CONNECTING:
            self._replace(
                dataclasses.replace(
                    current, session_id=snap.session_id, token_at=snap.created_at or self._clock()
                )
            )
            self._record(requested_at=current.requested_at)
        elif state is SessionState.LIVE:
            live = dataclasses.replace(current, live_at=snap.live_at or self._clock())
            # The frame may already have been shown (its event can overtake the answer).
            self._replace(dataclasses.replace(live, outcome="live"))
            self._record(live_at=live.live_at)
            self._judge()
        elif state in (SessionState.FAILED, SessionState.ENDED):
            outcome = "failed" if state is SessionState.FAILED else "ended"
            reason = " ".join(p for p in (snap.reason, snap.detail) if p) or None
            self._replace(dataclasses.replace(current, outcome=outcome, reason=reason))

    def handle_page_event(self, event: object) -> None:
        current = self._current
        if current is None:
            return
        if isinstance(event, SdkLoaded) and current.outcome == "connecting":
            if current.sdk_ready_at is None:
                self._replace(dataclasses.replace(current, sdk_ready_at=self._clock()))
                self._record(sdk_ready_at=self._current.sdk_ready_at if self._current else None)
        elif isinstance(event, FirstFrame) and current.first_frame_at is None:
            if current.outcome not in ("connecting", "live"):
                return
            self._replace(dataclasses.replace(current, first_frame_at=self._clock()))
            self._record(first_frame_at=self._current.first_frame_at if self._current else None)
            self._judge()

    # -- helpers ---------------------------------------------------------------------------

    def _replace(self, phases: ConnectPhases, *, new: bool = False) -> None:
        if new or not self.history:
            self.history.append(phases)
        else:
            self.history[-1] = phases
        self._current = phases
        for listener in list(self._listeners):
            try:
                listener(phases)
            except Exception:
                log.exception("A connect-phase listener failed")

    def _record(self, **phases: float | None) -> None:
        current = self._current
        if self._recorder is None or current is None or current.session_id is None:
            return
        try:
            self._recorder.record_phases(current.session_id, **phases)
        except Exception:  # a record, not a gate
            log.exception("Could not record the phases of session %s", current.session_id)

    def _judge(self) -> None:
        """Warn once per session when it took longer than the threshold to connect."""
        current = self._current
        if current is None or self._warned or current.total_s is None:
            return
        threshold = self._threshold_s()
        if current.total_s <= threshold:
            return
        self._warned = True
        self._notices.warning(
            f"{self._label()} was slow to connect: {current.total_s:.1f} s, over "
            f"{threshold:g} s ({current.describe()})."
        )
