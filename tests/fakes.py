"""Small typed fakes of the speech queue's collaborators (client, stage, session), shared by the
queue's own tests and the speaking panels' tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.models import TaskCreated
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState

Outcome = str | Exception | asyncio.Future[str]


@dataclass
class FakeClient:
    """``add_task`` answers from ``script`` in order (a task id, an error, or a future to await);
    with the script empty it answers ``t<n>``."""

    script: list[Outcome] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: When set, answers wait for it (the service is slow to answer).
    gate: asyncio.Event | None = None
    #: The service's cancel-all: tokens it was called with, and errors to raise in turn.
    cancels: list[str] = field(default_factory=list)
    cancel_errors: list[Exception] = field(default_factory=list)

    async def add_task(self, session_id: str, text: str) -> TaskCreated:
        self.calls.append((session_id, text))
        outcome: Outcome = self.script.pop(0) if self.script else f"t{len(self.calls)}"
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(outcome, asyncio.Future):
            outcome = await outcome
        if isinstance(outcome, Exception):
            raise outcome
        return TaskCreated(task_id=outcome)

    async def cancel_all(self, token: str) -> dict[str, Any]:
        self.cancels.append(token)
        await asyncio.sleep(0)
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        return {"cancelled": 0}


@dataclass
class FakeStage:
    cancels: int = 0
    voices: list[str] = field(default_factory=list)
    voice_error: AppError | None = None
    #: Runs inside cancel_all, before it answers (events the page sends meanwhile).
    during_cancel: Callable[[], None] | None = None
    #: Errors cancel_all raises in turn (the page's SDK failing to cancel).
    cancel_errors: list[Exception] = field(default_factory=list)

    async def cancel_all(self) -> None:
        self.cancels += 1
        if self.during_cancel is not None:
            self.during_cancel()
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)

    async def change_voice(self, voice_id: str) -> None:
        if self.voice_error is not None:
            raise self.voice_error
        self.voices.append(voice_id)


@dataclass
class FakeController:
    snapshot: SessionSnapshot = field(default_factory=SessionSnapshot)
    listeners: list[Callable[[SessionSnapshot], None]] = field(default_factory=list)
    remote_ends: list[tuple[EndReason, str | None]] = field(default_factory=list)

    @property
    def token(self) -> str | None:
        """A viewer token while live (the service's cancel call takes it)."""
        live = self.snapshot.state is SessionState.LIVE
        return f"token-{self.snapshot.session_id}" if live else None

    def subscribe(self, listener: Callable[[SessionSnapshot], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def _set(self, **changes: Any) -> None:
        self.snapshot = dataclasses.replace(self.snapshot, **changes)
        for listener in list(self.listeners):
            listener(self.snapshot)

    def go_live(self, session_id: str = "s1", voice_id: str = "v-old") -> None:
        self._set(state=SessionState.CREATING, session_id=session_id, voice_id=voice_id)
        self._set(state=SessionState.CONNECTING)
        self._set(state=SessionState.LIVE)

    def end(self, reason: str = EndReason.BY_USER.value) -> None:
        self._set(state=SessionState.TERMINATING)
        self._set(state=SessionState.ENDED, reason=reason)

    async def end_remotely(self, reason: EndReason, detail: str | None = None) -> None:
        self.remote_ends.append((reason, detail))
        self.end(reason.value)


async def until(predicate: Callable[[], bool], rounds: int = 500) -> None:
    """Let the loop run until ``predicate`` holds (a condition, never a timed sleep)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")
