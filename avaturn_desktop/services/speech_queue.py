"""Our speech queue, in front of the service's: visible, editable, one truth (Qt-free).

Every line of speech is an item that moves ``waiting → sending → sent → speaking → spoken``, or
ends ``cancelled`` / ``failed`` with a reason. Each item is a task-log row (see
:class:`~avaturn_desktop.services.tasklog.TaskLogStore`) from the moment it is queued for a
session, and every state change is written to the log as it happens.

Sending
    Items go out through the REST task call, in order, one request in flight at a time, so
    the service receives them in the order of the queue. Items not yet sent can be removed and
    reordered. A ``429`` was refused by the service: the item waits ``retry_after`` seconds and
    is sent again. An unclear outcome (the request may have reached the service) is never sent
    again: the item fails as "may or may not have been spoken" and the user can retry it. A
    ``404`` means the session ended on the service: the item fails and the session controller
    is told. Other errors fail the item with the error's message.

No live session
    Under the ``hold`` policy text waits, visibly, and is sent once a session goes live; under
    ``refuse`` it is refused with :class:`QueueRefusedError`. Nothing is dropped silently.
    Text held while no session exists has no log row yet (a row belongs to a session); it gets
    one, ``queued``, the moment a session goes live. When a session ends, what was sent and not
    spoken becomes ``cancelled`` ("session ended"); what was waiting is held for the next one.

Speaking events
    ``avatar_started_speaking_phrase`` / ``avatar_ended_speaking_phrase`` are matched to items
    by ``phrase_id == task_id`` where they match, else by queue order (the oldest item sent and
    not yet started). When only ``avatar_started_speaking`` / ``avatar_ended_speaking`` arrive,
    those are matched by order. A late event for an item that already ended never brings it
    back. Latency (sent → started speaking) and duration come from the log's timestamps.

Interrupting
    :meth:`SpeechQueue.stop` runs the SDK's cancel-all, cancels what was speaking or queued on
    the service ("stopped") and pauses sending; items not yet sent stay until resumed or removed.
    :meth:`SpeechQueue.speak_now` cancels everything (reason "replaced by Speak now") and sends
    its text first. :meth:`SpeechQueue.change_voice` switches the voice through the SDK; the
    service drops its queued tasks, so those become "voice change cleared the queue", and later
    rows carry the new voice.

Changes are announced to listeners (:meth:`SpeechQueue.subscribe`,
:meth:`SpeechQueue.subscribe_rows`); the ui layer adapts them to Qt signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Literal, Protocol

from avaturn_desktop.core.errors import (
    AppError,
    ConfigError,
    NotFoundError,
    RateLimitedError,
    UnclearOutcomeError,
)
from avaturn_desktop.core.events import (
    AvatarEndedSpeaking,
    AvatarEndedSpeakingPhrase,
    AvatarStartedSpeaking,
    AvatarStartedSpeakingPhrase,
)
from avaturn_desktop.core.models import TaskCreated
from avaturn_desktop.core.queue import (
    DEFAULT_RETRY_AFTER_S,
    ON_SERVICE_STATES,
    REASON_NOT_SENT_ENDED,
    REASON_REMOVED,
    REASON_REQUEUED_VOICE,
    REASON_SESSION_ENDED,
    REASON_SESSION_GONE,
    REASON_SPEAK_NOW,
    REASON_STOPPED,
    REASON_UNCLEAR,
    REASON_VOICE,
    ChangeKind,
    ItemState,
    NotLiveError,
    QueueChange,
    QueueItem,
    QueueRefusedError,
    check_text,
)
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState
from avaturn_desktop.core.tasks import TaskRecord, TaskRoute
from avaturn_desktop.services.tasklog import IllegalTransitionError, TaskLogStore

log = logging.getLogger("avaturn.queue")

Policy = Literal["hold", "refuse"]

QueueListener = Callable[[QueueChange], None]
#: ``(row_id, new)``: a log row was added (``new``) or changed.
RowListener = Callable[[int, bool], None]


class TaskClient(Protocol):
    async def add_task(self, session_id: str, text: str) -> TaskCreated: ...


class SpeechStage(Protocol):
    """The avatar page's speech controls (implemented by ``ui.web.stage.Stage``)."""

    async def cancel_all(self) -> None: ...

    async def change_voice(self, voice_id: str) -> None: ...


class SessionSource(Protocol):
    """The session controller, as the queue sees it."""

    @property
    def snapshot(self) -> SessionSnapshot: ...

    def subscribe(self, listener: Callable[[SessionSnapshot], None]) -> Callable[[], None]: ...

    async def end_remotely(self, reason: EndReason, detail: str | None = None) -> None: ...


@dataclasses.dataclass
class _Entry:
    item_id: int
    text: str
    state: ItemState = ItemState.WAITING
    reason: str | None = None
    row_id: int | None = None
    session_id: str | None = None
    voice_id: str | None = None
    task_id: str | None = None
    retry_at: float | None = None
    route: TaskRoute = TaskRoute.REST
    question_id: str | None = None
    # bookkeeping, not shown
    attempts: int = 0
    sent_at: float | None = None
    row_sent: bool = False
    send_seq: int = 0
    #: Started by a plain ``avatar_started_speaking`` (a phrase event may adopt it).
    provisional: bool = False
    #: Stop / Speak now arrived while its request was in flight: cancel it once answered.
    cancel_on_ack: str | None = None
    #: A cancel-all is on its way for it: an "ended" event now means it was cut off.
    stopping: str | None = None

    def view(self) -> QueueItem:
        return QueueItem(
            item_id=self.item_id,
            text=self.text,
            state=self.state,
            reason=self.reason,
            row_id=self.row_id,
            session_id=self.session_id,
            voice_id=self.voice_id,
            task_id=self.task_id,
            retry_at=self.retry_at,
            question_id=self.question_id,
        )


class SpeechQueue:
    """See the module docs. All methods run on the event loop's thread."""

    def __init__(
        self,
        client: TaskClient,
        store: TaskLogStore,
        controller: SessionSource,
        *,
        stage: SpeechStage,
        policy: Policy = "hold",
        voice_id_getter: Callable[[], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_rate_limit_retries: int = 5,
        keep_finished: int = 200,
    ) -> None:
        self._client = client
        self._store = store
        self._controller = controller
        self._stage = stage
        self.policy: Policy = policy
        self._voice_getter = voice_id_getter or (lambda: controller.snapshot.voice_id)
        self._clock = clock
        self._sleep = sleep
        self._max_rate_limit_retries = max_rate_limit_retries
        self._keep_finished = keep_finished
        self._entries: list[_Entry] = []
        self._ids = itertools.count(1)
        self._send_seq = itertools.count(1)
        self._by_task_id: dict[str, _Entry] = {}
        self._by_phrase_id: dict[str, _Entry] = {}
        self._listeners: list[QueueListener] = []
        self._row_listeners: list[RowListener] = []
        self._paused = False
        self._live_session: str | None = None
        self._voice_override: str | None = None
        self._phrase_events = False
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe = controller.subscribe(self._on_session)
        self._on_session(controller.snapshot)

    # -- reading ---------------------------------------------------------------------------

    @property
    def items(self) -> tuple[QueueItem, ...]:
        """Every item, in queue order (finished ones first, as they were sent)."""
        return tuple(e.view() for e in self._entries)

    def item(self, item_id: int) -> QueueItem | None:
        entry = self._find(item_id)
        return None if entry is None else entry.view()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def live(self) -> bool:
        return self._live_session is not None

    @property
    def session_id(self) -> str | None:
        """The live session the queue sends to, if any."""
        return self._live_session

    @property
    def voice_id(self) -> str | None:
        """The voice new rows are logged with (the live session's, or the one changed to)."""
        return self._voice_override or self._voice_getter()

    def subscribe(self, listener: QueueListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def subscribe_rows(self, listener: RowListener) -> Callable[[], None]:
        self._row_listeners.append(listener)
        return lambda: self._row_listeners.remove(listener)

    # -- editing ---------------------------------------------------------------------------

    def enqueue(
        self,
        texts: str | Sequence[str],
        *,
        route: TaskRoute = TaskRoute.REST,
        question_id: str | None = None,
    ) -> list[QueueItem]:
        """Queue ``texts`` (one item each), in order, behind what waits already.

        A language model's answer is logged with ``route=TaskRoute.LLM`` and its question's id.
        """
        return self._enqueue(texts, front=False, route=route, question_id=question_id)

    def _enqueue(
        self,
        texts: str | Sequence[str],
        *,
        front: bool,
        route: TaskRoute = TaskRoute.REST,
        question_id: str | None = None,
    ) -> list[QueueItem]:
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ConfigError("Nothing to say: the text is empty.")
        for text in batch:
            check_text(text)
        if not self.live and self.policy == "refuse":
            raise QueueRefusedError(
                "No session is live, so the text was not queued. Start a session first "
                "(or let the queue hold text until one is live, in the settings)."
            )
        entries = [
            _Entry(item_id=next(self._ids), text=text, route=route, question_id=question_id)
            for text in batch
        ]
        at = len(self._entries)
        if front:
            at = next((i for i, e in enumerate(self._entries) if e.state is ItemState.WAITING), at)
        self._entries[at:at] = entries
        if self.live:
            self._add_rows(entries)
        for entry in entries:
            self._notify(ChangeKind.ADDED, entry)
        self._kick()
        return [e.view() for e in entries]

    def remove(self, item_id: int) -> bool:
        """Take a waiting item out of the queue (its row becomes cancelled). True if done."""
        entry = self._find(item_id)
        if entry is None or entry.state is not ItemState.WAITING:
            return False
        if entry.row_id is not None:
            self._write(self._store.mark_cancelled, entry.row_id, REASON_REMOVED)
        self._entries.remove(entry)
        entry.state = ItemState.CANCELLED
        entry.reason = REASON_REMOVED
        self._notify(ChangeKind.REMOVED, entry)
        return True

    def move(self, item_id: int, delta: int) -> bool:
        """Move a waiting item ``delta`` places among the waiting items (-1 up, +1 down)."""
        entry = self._find(item_id)
        if entry is None or entry.state is not ItemState.WAITING or delta == 0:
            return False
        waiting = [i for i, e in enumerate(self._entries) if e.state is ItemState.WAITING]
        pos = waiting.index(self._entries.index(entry))
        target = max(0, min(len(waiting) - 1, pos + delta))
        if target == pos:
            return False
        order = [self._entries[i] for i in waiting]
        order.insert(target, order.pop(pos))
        for slot, moved in zip(waiting, order, strict=True):
            self._entries[slot] = moved
        self._notify(ChangeKind.MOVED, entry)
        return True

    def retry(self, item_id: int) -> list[QueueItem]:
        """Queue a failed or cancelled item's text again (a new item and row)."""
        entry = self._find(item_id)
        if entry is None or entry.state not in (ItemState.FAILED, ItemState.CANCELLED):
            return []
        return self.enqueue([entry.text], route=entry.route, question_id=entry.question_id)

    def clear_finished(self) -> None:
        """Drop spoken, cancelled and failed items from view (their rows stay in the log)."""
        for entry in [e for e in self._entries if e.state.finished]:
            self._forget(entry)
            self._notify(ChangeKind.REMOVED, entry)

    def resume(self) -> None:
        """Send again after :meth:`stop`."""
        if self._paused:
            self._paused = False
            self._notify(ChangeKind.PAUSED, None)
        self._kick()

    # -- interrupting ----------------------------------------------------------------------

    async def stop(self) -> None:
        """Cut the avatar off now; what was not sent yet stays, paused, until resumed."""
        if not self._paused:
            self._paused = True
            self._notify(ChangeKind.PAUSED, None)
        await self._cancel_on_service(REASON_STOPPED)

    async def speak_now(self, texts: str | Sequence[str]) -> list[QueueItem]:
        """Cancel what plays and what is queued, then send ``texts`` first."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ConfigError("Nothing to say: the text is empty.")
        for text in batch:
            check_text(text)
        if not self.live and self.policy == "refuse":
            raise QueueRefusedError("No session is live, so the text was not spoken.")
        await self._cancel_on_service(REASON_SPEAK_NOW)
        for entry in [e for e in self._entries if e.state is ItemState.WAITING]:
            self._cancel(entry, REASON_SPEAK_NOW)
        if self._paused:
            self._paused = False
            self._notify(ChangeKind.PAUSED, None)
        return self._enqueue(batch, front=True)

    async def change_voice(self, voice_id: str) -> None:
        """Switch the live session's voice; on an error the old voice stays (error raised)."""
        voice_id = voice_id.strip()
        if not voice_id:
            raise ConfigError("Enter a voice id or pick a voice.")
        if not self.live:
            raise NotLiveError("Start a session before changing its voice.")
        session = self._live_session
        await self._stage.change_voice(voice_id)
        if self._live_session != session:
            return
        self._voice_override = voice_id
        for entry in list(self._entries):
            if entry.state is ItemState.SENT:
                self._cancel(entry, REASON_VOICE)
            elif entry.state is ItemState.WAITING and entry.row_id is not None:
                # queued with the old voice: log it again with the one it will be spoken in
                self._write(self._store.mark_cancelled, entry.row_id, REASON_REQUEUED_VOICE)
                entry.row_id = None
                self._add_row(entry)
                self._notify(ChangeKind.CHANGED, entry)
        log.info("Voice changed to %s", voice_id)

    async def _cancel_on_service(self, reason: str) -> None:
        # The cut phrase's "ended" event can arrive before cancel-all answers: it must log the
        # item as cancelled, not spoken.
        targets = [e for e in self._entries if e.state in (ItemState.SENT, ItemState.SPEAKING)]
        for entry in targets:
            entry.stopping = reason
        try:
            if self.live:
                await self._stage.cancel_all()
        finally:
            for entry in targets:
                entry.stopping = None
        for entry in list(self._entries):
            if entry.state in (ItemState.SENT, ItemState.SPEAKING):
                self._cancel(entry, reason)
            elif entry.state is ItemState.SENDING:
                entry.cancel_on_ack = reason

    # -- the session ----------------------------------------------------------------------

    def _on_session(self, snap: SessionSnapshot) -> None:
        if snap.state is SessionState.LIVE and snap.session_id is not None:
            if self._live_session != snap.session_id:
                if self._live_session is not None:
                    self._session_over()
                self._went_live(snap.session_id)
        elif self._live_session is not None:
            self._session_over()

    def _went_live(self, session_id: str) -> None:
        self._live_session = session_id
        self._voice_override = None
        self._phrase_events = False
        self._by_phrase_id.clear()
        held = [e for e in self._entries if e.state is ItemState.WAITING and e.row_id is None]
        self._add_rows(held)
        for entry in held:
            self._notify(ChangeKind.CHANGED, entry)
        self._kick()

    def _session_over(self) -> None:
        self._live_session = None
        for entry in list(self._entries):
            if entry.state in (ItemState.SENT, ItemState.SPEAKING):
                self._cancel(entry, REASON_SESSION_ENDED)
            elif entry.state is ItemState.SENDING:
                entry.cancel_on_ack = REASON_SESSION_ENDED
            elif entry.state is ItemState.WAITING and entry.row_id is not None:
                if self.policy == "hold":
                    self._write(self._store.mark_cancelled, entry.row_id, REASON_NOT_SENT_ENDED)
                    entry.row_id = None
                    entry.session_id = None
                    entry.voice_id = None
                    self._notify(ChangeKind.CHANGED, entry)
                else:
                    self._cancel(entry, REASON_NOT_SENT_ENDED)

    # -- sending --------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._pump is not None and not self._pump.done():
            return
        if self._next() is None:
            return
        if _loop() is None:  # no event loop yet (built before the app runs): sent when kicked
            log.debug("No event loop: sending waits")
            return
        self._pump = self._spawn(self._run())

    def _next(self) -> _Entry | None:
        if self._paused or self._live_session is None:
            return None
        if any(e.state is ItemState.SENDING for e in self._entries):
            return None
        for entry in self._entries:
            if entry.state is ItemState.WAITING and entry.row_id is not None:
                return entry
        return None

    async def _run(self) -> None:
        while (entry := self._next()) is not None:
            await self._send(entry)

    async def _send(self, entry: _Entry) -> None:
        session_id = self._live_session
        assert session_id is not None and entry.row_id is not None
        row_id = entry.row_id
        entry.state = ItemState.SENDING
        entry.reason = None
        entry.retry_at = None
        entry.attempts += 1
        entry.send_seq = next(self._send_seq)
        entry.sent_at = self._clock()
        self._notify(ChangeKind.CHANGED, entry)
        try:
            created = await self._client.add_task(session_id, entry.text)
        except RateLimitedError as exc:
            await self._rate_limited(entry, exc)
        except UnclearOutcomeError as exc:
            self._mark_sent(entry)
            self._fail(entry, f"{REASON_UNCLEAR} ({exc.user_message})")
        except NotFoundError as exc:
            self._fail(entry, REASON_SESSION_GONE)
            if self._live_session == session_id:
                await self._controller.end_remotely(EndReason.SERVER, exc.user_message)
        except AppError as exc:
            self._fail(entry, exc.user_message)
        except asyncio.CancelledError:
            # shutting down: whether it arrived is unknown, and it is never sent twice
            self._mark_sent(entry)
            self._fail(entry, f"{REASON_UNCLEAR} (the app stopped while sending)")
            raise
        except Exception as exc:
            log.exception("Sending task row %d failed unexpectedly", row_id)
            self._fail(entry, f"unexpected error: {exc.__class__.__name__}")
        else:
            await self._acknowledged(entry, created.task_id, session_id)

    async def _rate_limited(self, entry: _Entry, exc: RateLimitedError) -> None:
        if entry.attempts > self._max_rate_limit_retries:
            self._fail(entry, f"{exc.user_message} (gave up after {entry.attempts} tries)")
            return
        wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER_S
        entry.state = ItemState.WAITING
        entry.retry_at = self._clock() + wait
        entry.reason = f"the service is busy; sending again in {wait:g} s"
        self._notify(ChangeKind.CHANGED, entry)
        log.info("Task row %s rate limited; sending again in %.2f s", entry.row_id, wait)
        await self._sleep(wait)
        if entry.state is ItemState.WAITING:
            entry.retry_at = None
            entry.reason = None
            self._notify(ChangeKind.CHANGED, entry)

    async def _acknowledged(self, entry: _Entry, task_id: str, session_id: str) -> None:
        assert entry.row_id is not None
        self._mark_sent(entry)
        self._write(self._store.mark_acked, entry.row_id, task_id, at=self._clock())
        entry.task_id = task_id
        self._by_task_id[task_id] = entry
        if entry.state is ItemState.SENDING:
            entry.state = ItemState.SENT
        reason = entry.cancel_on_ack
        if reason is None and self._live_session != session_id:
            reason = REASON_SESSION_ENDED
        if reason is not None and not entry.state.finished:
            # Stopped (or replaced) while on its way: it may have reached the service after
            # the cancel-all, so cancel again before anything else is sent.
            self._cancel(entry, reason)
            if self._live_session == session_id:
                try:
                    await self._stage.cancel_all()
                except AppError as exc:
                    log.warning("Could not cancel a task sent during a stop: %s", exc)
        else:
            self._notify(ChangeKind.CHANGED, entry)

    # -- speaking events ------------------------------------------------------------------

    def handle_page_event(self, event: object) -> None:
        """Feed every page event here; the speech ones move items (see the module docs)."""
        if self._live_session is None:
            return
        if isinstance(event, AvatarStartedSpeakingPhrase):
            self._phrase_events = True
            self._started(event.phrase_id, by_phrase=True)
        elif isinstance(event, AvatarEndedSpeakingPhrase):
            self._phrase_events = True
            self._ended(event.phrase_id)
        elif isinstance(event, AvatarStartedSpeaking):
            if not self._phrase_events:
                self._started(None, by_phrase=False)
        elif isinstance(event, AvatarEndedSpeaking) and not self._phrase_events:
            self._ended(None)

    def _known(self, phrase_id: str) -> tuple[bool, _Entry | None]:
        """Whether ``phrase_id`` names a known task, and its live entry (None if gone)."""
        entry = self._by_task_id.get(phrase_id) or self._by_phrase_id.get(phrase_id)
        if entry is not None:
            return True, entry
        # an item no longer in view (cleared) or from before a restart: never by order
        return self._store.find_by_task_id(phrase_id) is not None, None

    def _oldest(self, states: Iterable[ItemState]) -> _Entry | None:
        wanted = frozenset(states)
        candidates = [e for e in self._entries if e.state in wanted and e.send_seq]
        return min(candidates, key=lambda e: e.send_seq, default=None)

    def _started(self, phrase_id: str | None, *, by_phrase: bool) -> None:
        if phrase_id:
            known, entry = self._known(phrase_id)
            if known:
                if entry is not None and not entry.state.finished:
                    if entry.state is ItemState.SPEAKING:
                        entry.provisional = False
                    else:
                        self._start(entry)
                return
        if by_phrase:
            provisional = self._oldest([ItemState.SPEAKING])
            oldest = self._oldest(ON_SERVICE_STATES)
            if provisional is not None and provisional.provisional and provisional is oldest:
                provisional.provisional = False
                if phrase_id:
                    self._by_phrase_id[phrase_id] = provisional
                return
        entry = self._oldest([ItemState.SENDING, ItemState.SENT])
        if entry is None:
            log.debug("Speaking started with nothing sent (phrase %s): ignored", phrase_id)
            return
        if phrase_id:
            self._by_phrase_id[phrase_id] = entry
        entry.provisional = not by_phrase
        self._start(entry)

    def _ended(self, phrase_id: str | None) -> None:
        if phrase_id:
            known, entry = self._known(phrase_id)
            if known:
                if entry is not None and not entry.state.finished:
                    self._finish(entry)
                return
        entry = self._oldest([ItemState.SPEAKING])
        if entry is None:
            log.debug("Speaking ended with nothing speaking (phrase %s): ignored", phrase_id)
            return
        self._finish(entry)

    def _start(self, entry: _Entry) -> None:
        assert entry.row_id is not None
        self._mark_sent(entry)
        if self._write(self._store.mark_speaking, entry.row_id, at=self._clock()) is None:
            return
        entry.state = ItemState.SPEAKING
        self._notify(ChangeKind.CHANGED, entry)
        # The avatar speaks one phrase at a time: one that was speaking is over now, even if
        # its end event was lost (e.g. while the event channel was reconnecting).
        for other in [e for e in self._entries if e.state is ItemState.SPEAKING and e is not entry]:
            self._finish(other)

    def _finish(self, entry: _Entry) -> None:
        assert entry.row_id is not None
        if entry.stopping is not None:
            self._cancel(entry, entry.stopping)
            return
        self._mark_sent(entry)
        if self._write(self._store.mark_spoken, entry.row_id, at=self._clock()) is None:
            return
        entry.state = ItemState.SPOKEN
        self._notify(ChangeKind.CHANGED, entry)
        self._trim()

    # -- helpers --------------------------------------------------------------------------

    def _add_row(self, entry: _Entry) -> None:
        self._add_rows([entry])

    def _add_rows(self, entries: Sequence[_Entry]) -> None:
        """Log new lines, all in one transaction (a pasted script is hundreds of them)."""
        if not entries:
            return
        session_id = self._live_session
        assert session_id is not None
        voice = self.voice_id
        records: list[TaskRecord] = []
        for (route, question_id), group in itertools.groupby(
            entries, key=lambda e: (e.route, e.question_id)
        ):
            records += self._store.add_many(
                [entry.text for entry in group],
                session_id=session_id,
                voice_id=voice,
                route=route,
                at=self._clock(),
                question_id=question_id,
            )
        for entry, record in zip(entries, records, strict=True):
            entry.row_id = record.row_id
            entry.session_id = session_id
            entry.voice_id = voice
        for record in records:
            self._rows(record.row_id, new=True)

    def _mark_sent(self, entry: _Entry) -> None:
        """Log ``sent`` (with the time the request left) once, when the service has it."""
        if entry.row_sent or entry.row_id is None:
            return
        entry.row_sent = True
        self._write(self._store.mark_sent, entry.row_id, at=entry.sent_at)

    def _cancel(self, entry: _Entry, reason: str) -> None:
        self._end_item(entry, ItemState.CANCELLED, reason)

    def _fail(self, entry: _Entry, reason: str) -> None:
        self._end_item(entry, ItemState.FAILED, reason)

    def _end_item(self, entry: _Entry, state: ItemState, reason: str) -> None:
        """End an item as cancelled or failed, in the log first; an ended item stays ended."""
        if entry.state.finished:
            return
        if entry.row_id is not None:
            mark = (
                self._store.mark_cancelled
                if state is ItemState.CANCELLED
                else self._store.mark_failed
            )
            self._write(mark, entry.row_id, reason, at=self._clock())
        entry.state = state
        entry.reason = reason
        entry.retry_at = None
        self._notify(ChangeKind.CHANGED, entry)
        self._trim()

    def _write(
        self, method: Callable[..., TaskRecord], row_id: int, *args: Any, **kw: Any
    ) -> TaskRecord | None:
        try:
            record = method(row_id, *args, **kw)
        except IllegalTransitionError as exc:
            log.debug("Task log: %s (late event ignored)", exc)
            return None
        self._rows(row_id, new=False)
        return record

    def _find(self, item_id: int) -> _Entry | None:
        return next((e for e in self._entries if e.item_id == item_id), None)

    def _forget(self, entry: _Entry) -> None:
        self._entries.remove(entry)
        if entry.task_id is not None and self._by_task_id.get(entry.task_id) is entry:
            del self._by_task_id[entry.task_id]
        for phrase_id in [p for p, e in self._by_phrase_id.items() if e is entry]:
            del self._by_phrase_id[phrase_id]

    def _trim(self) -> None:
        finished = [e for e in self._entries if e.state.finished]
        for entry in finished[: max(0, len(finished) - self._keep_finished)]:
            self._forget(entry)
            self._notify(ChangeKind.REMOVED, entry)

    def _notify(self, kind: ChangeKind, entry: _Entry | None) -> None:
        change = QueueChange(kind, None if entry is None else entry.view())
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("A speech queue listener failed")

    def _rows(self, row_id: int, *, new: bool) -> None:
        for listener in list(self._row_listeners):
            try:
                listener(row_id, new)
            except Exception:
                log.exception("A task log listener failed")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro, loop=_loop())  # _kick checked there is one
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def shutdown(self) -> None:
        """Stop sending and listening; in-flight sends are cancelled (and logged as unclear)."""
        with contextlib.suppress(ValueError):
            self._unsubscribe()
        self._paused = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a Qt slot outside a running loop (tests): the loop that is set
        pass
    try:
        return asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Speech queue task failed", exc_info=task.exception())
