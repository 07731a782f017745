"""Our speech queue, in front of the service's: visible, editable, one truth (Qt-free).

Every line of speech is an item that moves ``waiting → sending → sent → speaking → spoken``, or
ends ``cancelled`` / ``failed`` with a reason. Each item is a task-log row (see
:class:`~avaturn_desktop.services.tasklog.TaskLogStore`) from the moment it is queued for a
session, and every state change is written to the log as it happens.

Sending
    Items go out through the REST task call, in order, one request in flight at a time, so
    the service receives them in the order of the queue. One method, :meth:`SpeechQueue._claim`,
    lets an item go, checked at the moment of sending: only a waiting item that never left
    for the service, while nothing else is in flight. Once a request carrying an item has left,
    that item never goes again, whatever happens next (Stop, Resume, Speak now, a reconnect, a
    new session, a 429 wait); only a proven refusal (429 or 4xx) returns it. Items not yet sent
    can be removed and reordered.

Look-ahead
    Only the line speaking and the next are with the service (``lookahead``, 2); the rest waits
    here, where it can be moved, removed or edited until it is needed. The next goes when a
    line ends, so the service always has the next line before the current one ends: no gap.
    Lines so short (or a voice so fast) that what waits on the service would be said in less
    than ``LOOKAHEAD_COVER_S`` get a deeper look-ahead (at most ``LOOKAHEAD_MOST``), from the
    speaking rate learned from the lines said so far, so that a busy machine hearing a line
    end late does not leave the avatar silent. A line whose end event was lost stops counting
    well after the voice should have finished it (``_dues``): the queue never stalls for
    long on a lost event.
    ``lookahead=None`` posts every line the moment it is queued.

    A ``429`` was refused by the service: the item waits ``retry_after`` seconds, clamped to
    ``RETRY_AFTER_CEILING_S``, visibly (``retry_at``), and is sent again; the wait ends early on
    :meth:`SpeechQueue.skip_wait`, Remove, Stop, Resume or Speak now. An unclear outcome (the
    service may have taken it: the connection broke after the request left, no answer came, a
    gateway answered 5xx, a 2xx came without a task id) is never sent again: the item fails as
    "may or may not have been spoken" (``unclear``), and :meth:`SpeechQueue.retry` sends it again
    only when asked with ``confirm=True``. A ``404`` means the session ended on the service: the
    item fails and the session controller is told. Other errors fail the item with the error's
    message. The sender never ends silently: an error in it is logged, announced to listeners
    (``ChangeKind.ERROR``) and the sender goes on.

No live session
    Under the ``hold`` policy text waits, visibly, and is sent once a session goes live; under
    ``refuse`` it is refused with :class:`QueueRefusedError`. Nothing is dropped silently.
    Text held while no session exists has no log row yet (a row belongs to a session); it gets
    one, ``queued``, the moment a session goes live. When a session ends, what was sent and not
    spoken becomes ``cancelled`` ("session ended"); what was waiting is held for the next one,
    its new row linked to the old (``resumed_from``).

Reconnect carry-over (``carry_over``, kiosk mode)
    When a session dies, the lines it had taken and not said to their end (the one cut
    mid-sentence, the next one, one whose request was on its way) are said once more in the
    next session, from their start, ahead of what waited, in the order they were sent
    (:func:`~avaturn_desktop.services.resume.plan_resume`). The old rows end ``cancelled``
    (``REASON_CARRIED``) and the new ones name them in ``resumed_from``, which the log lets
    happen once per row. A line a Stop or Speak now is silencing is not carried. Outside kiosk
    mode the same lines end "session ended" and :meth:`SpeechQueue.say_unfinished_again` says
    them again when a person asks (one click, once).

Speaking events
    ``avatar_started_speaking_phrase`` / ``avatar_ended_speaking_phrase`` are matched to items
    by ``phrase_id == task_id`` where they match, else by queue order (the oldest item sent and
    not yet started). When only ``avatar_started_speaking`` / ``avatar_ended_speaking`` arrive,
    those are matched by order. A late event for an item that already ended never brings it
    back. Latency (sent → started speaking) and duration come from the log's timestamps.

Interrupting
    :meth:`SpeechQueue.stop` cancels on both paths at once (the page's Web SDK cancel-all, and
    the service's own cancel call with the session token), retried briefly, cancels what was
    speaking or queued on the service ("stopped") and pauses sending; items not yet sent stay
    until resumed or removed. If neither path confirms, it raises
    :class:`StopUnconfirmedError`: the avatar may still be talking, and stopping again is safe.
    :meth:`SpeechQueue.speak_now` cancels everything (reason "replaced by Speak now") and sends
    its text first. What it replaces while a request is in flight is not ended until that
    request is answered (it is never sent): so an item seen ending unsent is one that never
    left, and a line on its way is never handed back as unsent while it may still arrive.
    :meth:`SpeechQueue.change_voice` switches the voice through the SDK; the service drops its
    queued tasks, so those become "voice change cleared the queue", and later rows carry the
    new voice.

Changes are announced to listeners (:meth:`SpeechQueue.subscribe`,
:meth:`SpeechQueue.subscribe_rows`); the ui layer adapts them to Qt signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from typing import Any, Final, Literal, Protocol

from avaturn_desktop.core.errors import (
    RETRY_AFTER_CEILING_S,
    AppError,
    BadAnswerError,
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
    REASON_CARRIED,
    REASON_CRASHED,
    REASON_NOT_SENT_ENDED,
    REASON_REMOVED,
    REASON_REQUEUED_VOICE,
    REASON_SESSION_ENDED,
    REASON_SESSION_GONE,
    REASON_SET_ASIDE,
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
    StopResult,
    StopUnconfirmedError,
    UnclearRetryError,
    check_text,
)
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState
from avaturn_desktop.core.tasks import TaskRecord, TaskRoute
from avaturn_desktop.services.resume import plan_resume, resumable_rows
from avaturn_desktop.services.tasklog import IllegalTransitionError, TaskLogStore

log = logging.getLogger("avaturn.queue")

Policy = Literal["hold", "refuse"]

#: How long a stop keeps trying (both paths at once, their retries included), seconds.
STOP_BUDGET_S: Final = 4.0
#: Tries of the page's cancel-all within that budget, and the pause between two.
STOP_PAGE_TRIES: Final = 3
STOP_PAGE_PAUSE_S: Final = 0.2
#: Errors in a row after which the sender pauses (and says so) instead of spinning.
MAX_SENDER_ERRORS: Final = 3
#: Lines on the service at a time: the one speaking and the next (see "Look-ahead").
LOOKAHEAD: Final = 2
#: ... and more, while what waits on the service would be said in less than this (very short
#: lines, a fast voice): time enough for the app to hear a line end and send the next one
#: before the avatar runs out of words, even on a busy machine. Never more than ``LOOKAHEAD_MOST``.
LOOKAHEAD_COVER_S: Final = 0.6
LOOKAHEAD_MOST: Final = 8
#: The speaking rate assumed until the queue has timed lines of its own (characters a second).
DEFAULT_CHARS_PER_S: Final = 15.0
#: A line on the service counts against the look-ahead until its end is seen, or until this
#: long after it should have ended (its expected speaking time ``LOOKAHEAD_SLACK`` times over,
#: from when the line before it should have ended): a lost "ended" event (an event channel
#: that dropped) never stalls the queue for long.
LOOKAHEAD_GRACE_S: Final = 2.0
LOOKAHEAD_SLACK: Final = 2.0

QueueListener = Callable[[QueueChange], None]
#: ``(row_id, new)``: a log row was added (``new``) or changed.
RowListener = Callable[[int, bool], None]


class TaskClient(Protocol):
    async def add_task(self, session_id: str, text: str) -> TaskCreated: ...

    async def cancel_all(self, token: str) -> object:
        """The service's cancel-all for the session of ``token`` (idempotent)."""
        ...


class SpeechStage(Protocol):
    """The avatar page's speech controls (implemented by ``ui.web.stage.Stage``)."""

    async def cancel_all(self) -> None: ...

    async def change_voice(self, voice_id: str) -> None: ...


class SessionSource(Protocol):
    """The session controller, as the queue sees it."""

    @property
    def snapshot(self) -> SessionSnapshot: ...

    @property
    def token(self) -> str | None:
        """The live session's viewer token (for the service's cancel call), else None."""
        ...

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
    #: A request carrying it left and was not refused (see ``SpeechQueue._claim``).
    left: bool = False
    unclear: bool = False
    # bookkeeping, not shown
    attempts: int = 0
    sent_at: float | None = None
    row_sent: bool = False
    send_seq: int = 0
    #: Started by a plain ``avatar_started_speaking`` (a phrase event may adopt it).
    provisional: bool = False
    #: When the avatar began saying it (the queue's clock), to learn the speaking rate.
    started_at: float | None = None
    #: Stop / Speak now arrived while its request was in flight: cancel it once answered.
    cancel_on_ack: str | None = None
    #: A cancel-all is on its way for it: an "ended" event now means it was cut off.
    stopping: str | None = None
    #: Ended unsent (Speak now, a session end) while another request was in flight: never
    #: sent, and ended (with this reason) once that request is answered.
    replaced: str | None = None
    #: The log row this line continues (said again after its session died), for its new row.
    resumed_from: int | None = None
    #: A copy of a line a dead session had taken: it goes before the lines that waited.
    carried: bool = False
    #: Its session died while its request was on its way: carried once the answer is in.
    carry_on_answer: bool = False
    #: Waited through a Stop, and new words went first: not sent until Resume keeps it.
    set_aside: bool = False

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
            ever_sent=self.left,
            unclear=self.unclear,
            question_id=self.question_id,
            set_aside=self.set_aside,
        )


@dataclasses.dataclass
class _Early:
    """A phrase that started while the only line it could be was still on its way: it is that
    line's only if the service acknowledges it (else it was some other phrase)."""

    phrase_id: str | None
    by_phrase: bool
    started_at: float
    ended_at: float | None = None


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
        lookahead: int | None = LOOKAHEAD,
        carry_over: bool = False,
    ) -> None:
        self._client = client
        self._store = store
        self._controller = controller
        self._stage = stage
        self.policy: Policy = policy
        #: Lines handed to the service at a time (``None``: every line as soon as it is queued).
        self.lookahead = lookahead
        #: Say the lines a dead session had taken again in the next one, by itself (kiosk mode);
        #: otherwise they end "session ended" and a door offers :meth:`say_unfinished_again`.
        self.carry_over = carry_over
        self._voice_getter = voice_id_getter or (lambda: controller.snapshot.voice_id)
        self._clock = clock
        self._sleep = sleep
        self._max_rate_limit_retries = max_rate_limit_retries
        self._keep_finished = keep_finished
        self._entries: list[_Entry] = []
        #: The same entries by item id (a line is found in one step, not by a walk).
        self._by_id: dict[int, _Entry] = {}
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
        #: The item whose request is on its way (one at a time; see ``_claim``).
        self._in_flight: _Entry | None = None
        #: Set once the request in flight is answered and settled (a late line re-cancelled).
        self._settled: asyncio.Event | None = None
        #: Speak now's cancel is on its way: nothing new is sent meanwhile.
        self._interrupting = 0
        #: A phrase that started before the answer to the line in flight (see ``_Early``).
        self._early: _Early | None = None
        #: Set to wake the sender from a wait (skip, remove, stop, resume, a new session, ...).
        self._wake: asyncio.Event | None = None
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        #: The last ended session with lines not said to their end, and how many (see
        #: :meth:`say_unfinished_again`); ``None`` when there are none.
        self._unfinished: tuple[str, int] | None = None
        #: Looks again when the oldest line on the service stops counting (see ``_room``).
        #: The voice's speaking rate, learned from the lines it said (see ``_room``).
        self._chars_per_s = DEFAULT_CHARS_PER_S
        #: (qasync's handles do not say when they are due, so that is kept beside it)
        self._lookahead_timer: tuple[asyncio.Handle, float] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe = controller.subscribe(self._on_session)
        self._on_session(controller.snapshot)

    # -- reading ---------------------------------------------------------------------------

    @property
    def items(self) -> tuple[QueueItem, ...]:
        """Every item, in queue order (finished ones first, as they were sent)."""
        return tuple(e.view() for e in self._entries)

    def item_ids(self) -> tuple[int, ...]:
        """Every item's id, in queue order, with no snapshot made (a panel keeps its rows in
        step with this after items were added, removed or moved)."""
        return tuple(e.item_id for e in self._entries)

    def item(self, item_id: int) -> QueueItem | None:
        entry = self._find(item_id)
        return None if entry is None else entry.view()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def set_aside(self) -> bool:
        """Whether lines wait set aside (a Stop, then new words went first): what
        ``any(i.set_aside for i in items)`` says, without a copy of every item."""
        return any(e.set_aside for e in self._entries)

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
        self._by_id.update((e.item_id, e) for e in entries)
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
        del self._by_id[entry.item_id]
        entry.state = ItemState.CANCELLED
        entry.reason = REASON_REMOVED
        entry.retry_at = None
        self._notify(ChangeKind.REMOVED, entry)
        self._kick()  # a wait for it is over
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
        self._kick()
        return True

    def retry(self, item_id: int, *, confirm: bool = False) -> list[QueueItem]:
        """Queue a failed or cancelled item's text again (a new item and row).

        A line whose send was unclear may already have been spoken: without ``confirm`` it
        raises :class:`UnclearRetryError` (the door asks the person, then calls again with
        ``confirm=True``), so a retry never doubles a line silently.
        """
        entry = self._find(item_id)
        if entry is None or entry.state not in (ItemState.FAILED, ItemState.CANCELLED):
            return []
        if entry.unclear and not confirm:
            raise UnclearRetryError(
                "This line may already have been spoken (its send got no clear answer). "
                "Send it again only if the avatar did not say it."
            )
        return self.enqueue([entry.text], route=entry.route, question_id=entry.question_id)

    def skip_wait(self, item_id: int) -> bool:
        """Send an item waiting after a 429 now instead of at ``retry_at``. True if it waited."""
        entry = self._find(item_id)
        if entry is None or entry.state is not ItemState.WAITING or entry.retry_at is None:
            return False
        entry.retry_at = None
        entry.reason = None
        self._notify(ChangeKind.CHANGED, entry)
        self._kick()
        return True

    def clear_finished(self) -> None:
        """Drop spoken, cancelled and failed items from view (their rows stay in the log)."""
        for entry in [e for e in self._entries if e.state.finished]:
            self._forget(entry)
            self._notify(ChangeKind.REMOVED, entry)

    def resume(self) -> None:
        """Send again after :meth:`stop` (what was set aside too); a wait after a 429 ends too
        (the person said: now)."""
        if self._paused:
            self._paused = False
            self._notify(ChangeKind.PAUSED, None)
        for entry in self._entries:
            if entry.state is ItemState.WAITING and (entry.retry_at is not None or entry.set_aside):
                entry.retry_at = None
                entry.set_aside = False
                entry.reason = None
                self._notify(ChangeKind.CHANGED, entry)
        self._kick()

    def set_aside_waiting(self, *, but: Collection[int] = ()) -> int:
        """After a Stop, new words go at once: what waited is set aside (kept, marked, sent
        only when :meth:`resume` keeps it, or dropped with :meth:`remove`), and sending is on
        again. ``but``: the ids of the new words. Returns how many lines were set aside;
        nothing happens unless stopped."""
        if not self._paused:
            return 0
        aside = [
            e
            for e in self._entries
            if e.state is ItemState.WAITING and not e.set_aside and e.item_id not in but
        ]
        for entry in aside:
            entry.set_aside = True
            entry.retry_at = None
            entry.reason = REASON_SET_ASIDE
            self._notify(ChangeKind.CHANGED, entry)
        self._paused = False
        self._notify(ChangeKind.PAUSED, None)
        self._kick()
        return len(aside)

    # -- interrupting ----------------------------------------------------------------------

    async def stop(self) -> StopResult:
        """Cut the avatar off now; what was not sent yet stays, paused, until resumed.

        Returns which paths confirmed the cancel. Raises :class:`StopUnconfirmedError` when
        none did: the avatar may still be talking (the queue is paused all the same, and the
        items it could not cancel keep their state).
        """
        if not self._paused:
            self._paused = True
            self._notify(ChangeKind.PAUSED, None)
        self._notify(ChangeKind.STOPPED, None)  # every time: what follows stops ends too
        self._poke()  # a sender waiting out a 429 lets go
        settled = self._settled if self._in_flight is not None else None
        result = await self._cancel_on_service(REASON_STOPPED)
        if settled is not None:
            # A line on its way may land after the cancel: it is cancelled again once answered
            # (see _acknowledged). Stop returns only then, so nothing it cut off is left.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), STOP_BUDGET_S)
        return result

    async def cut_off(self, reason: str) -> StopResult:
        """Cut off what plays and what the service holds (ended with ``reason``) without
        pausing: what waits here goes next. Raises :class:`StopUnconfirmedError` as
        :meth:`stop` does. (A new question cuts the old answer off this way.)"""
        # nothing new leaves while the cancel is on its way (it could land after the cancel)
        self._interrupting += 1
        try:
            return await self._cancel_on_service(reason)
        finally:
            self._interrupting -= 1
            self._kick()

    async def speak_now(self, texts: str | Sequence[str]) -> list[QueueItem]:
        """Cancel what plays and what is queued, then send ``texts`` first.

        If the cancel cannot be confirmed, raises :class:`StopUnconfirmedError` and changes
        nothing (the text is not queued: it would play after what the avatar still says).
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ConfigError("Nothing to say: the text is empty.")
        for text in batch:
            check_text(text)
        if not self.live and self.policy == "refuse":
            raise QueueRefusedError("No session is live, so the text was not spoken.")
        await self.cut_off(REASON_SPEAK_NOW)
        if self._in_flight is not None and not self._in_flight.state.finished:
            # refused after all (a 429)? then it stays unsent and ends with the rest
            self._in_flight.replaced = REASON_SPEAK_NOW
        self._end_unsent(
            [e for e in self._entries if e.state is ItemState.WAITING], REASON_SPEAK_NOW
        )
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
            elif (
                entry.state is ItemState.WAITING
                and entry.row_id is not None
                and entry.replaced is None
            ):
                # queued with the old voice: log it again with the one it will be spoken in
                self._write(self._store.mark_cancelled, entry.row_id, REASON_REQUEUED_VOICE)
                entry.row_id = None
                self._add_row(entry)
                self._notify(ChangeKind.CHANGED, entry)
        log.info("Voice changed to %s", voice_id)

    async def _cancel_on_service(self, reason: str) -> StopResult:
        # The cut phrase's "ended" event can arrive before cancel-all answers: it must log the
        # item as cancelled, not spoken.
        targets = [e for e in self._entries if e.state in (ItemState.SENT, ItemState.SPEAKING)]
        for entry in targets:
            entry.stopping = reason
        try:
            result = await self._cancel_everywhere() if self.live else StopResult(True)
        finally:
            for entry in targets:
                entry.stopping = None
        if not result.confirmed and self.live:
            raise StopUnconfirmedError(result)
        if not result.confirmed:  # the session ended meanwhile: nothing is left to talk
            result = StopResult(True, (), (*result.problems, "the session has ended"))
        for entry in list(self._entries):
            if entry.state in (ItemState.SENT, ItemState.SPEAKING):
                self._cancel(entry, reason)
            elif entry.state is ItemState.SENDING:
                entry.cancel_on_ack = reason
        return result

    async def _cancel_everywhere(self) -> StopResult:
        """Cancel on both paths at once, each retried briefly; confirmed if either answers.

        Both are awaited (within ``STOP_BUDGET_S``) before anything else is sent, so a late
        cancel cannot cut the line sent after it.
        """
        token = self._controller.token
        page, service = await asyncio.gather(
            self._cancel_page(),
            self._cancel_service(token) if token else _skipped("no live session token"),
        )
        outcomes = (("page", "the page", page), ("service", "the service", service))
        confirmed_by = tuple(name for name, _, problem in outcomes if problem is None)
        problems = tuple(f"{said}: {problem}" for _, said, problem in outcomes if problem)
        if not confirmed_by:
            log.warning("A stop did not get through: %s", "; ".join(problems))
        return StopResult(bool(confirmed_by), confirmed_by, problems)

    async def _cancel_page(self) -> str | None:
        """The Web SDK's cancel-all through the page; None when it answered, else why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_BUDGET_S
        problem = "no answer"
        for attempt in range(STOP_PAGE_TRIES):
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._stage.cancel_all(), left)
                return None
            except TimeoutError:
                return f"no answer within {STOP_BUDGET_S:g} s"
            except AppError as exc:
                problem = exc.user_message
            if attempt + 1 < STOP_PAGE_TRIES:
                await self._sleep(STOP_PAGE_PAUSE_S)
        return problem

    async def _cancel_service(self, token: str) -> str | None:
        """The service's cancel call (the client retries it: it is idempotent)."""
        try:
            await asyncio.wait_for(self._client.cancel_all(token), STOP_BUDGET_S)
        except TimeoutError:
            return f"no answer within {STOP_BUDGET_S:g} s"
        except NotFoundError:
            return None  # the session is over on the service: nothing is talking
        except AppError as exc:
            return exc.user_message
        return None

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
        held = [
            e
            for e in self._entries
            if e.state is ItemState.WAITING and e.row_id is None and e.replaced is None
        ]
        self._add_rows(held)
        for entry in held:
            self._notify(ChangeKind.CHANGED, entry)
        self._kick()

    def _session_over(self) -> None:
        ended, self._live_session = self._live_session, None
        self._early = None
        # decided before anything is marked; nothing is carried while a Stop or Speak now is
        # silencing the avatar (the person asked for silence, or for other words)
        carry = (
            {c.item_id for c in plan_resume(self._entries) if c.was in ON_SERVICE_STATES}
            if self.carry_over and not self._paused and not self._interrupting
            else set()
        )
        carried: list[_Entry] = []
        for entry in list(self._entries):
            if entry.state in (ItemState.SENT, ItemState.SPEAKING):
                if entry.item_id in carry:
                    self._cancel(entry, REASON_CARRIED)
                    carried.append(entry)
                else:
                    self._cancel(entry, REASON_SESSION_ENDED)
            elif entry.state is ItemState.SENDING:
                entry.cancel_on_ack = REASON_SESSION_ENDED
                if entry.item_id in carry:
                    entry.cancel_on_ack = REASON_CARRIED
                    entry.carry_on_answer = True
            elif (
                entry.state is ItemState.WAITING
                and entry.row_id is not None
                and entry.replaced is None
            ):
                self._unsent_at_session_end(entry)
        carried.sort(key=lambda e: e.send_seq)
        self._say_again(carried)
        if ended is not None and not self.carry_over:
            self._note_unfinished(ended)
        self._poke()

    def _note_unfinished(self, session_id: str | None) -> None:
        count = 0 if session_id is None else len(resumable_rows(self._store, session_id))
        now = (session_id, count) if session_id is not None and count else None
        if now != self._unfinished:
            self._unfinished = now
            self._notify(ChangeKind.UNFINISHED, None)

    def _say_again(self, lines: Sequence[_Entry]) -> None:
        """Queue copies of ``lines`` (which a dead session had taken) ahead of what waited:
        said once more, from their start, each new row linked to the old one."""
        self._queue_carried(
            [(e.text, e.row_id, e.route, e.question_id) for e in lines if e.row_id is not None]
        )

    def _queue_carried(
        self, lines: Sequence[tuple[str, int | None, TaskRoute, str | None]]
    ) -> list[_Entry]:
        copies = [
            _Entry(
                item_id=next(self._ids),
                text=text,
                route=route,
                question_id=question_id,
                resumed_from=row_id,
                carried=True,
            )
            for text, row_id, route, question_id in lines
        ]
        if not copies:
            return []
        at = next(
            (
                i
                for i, e in enumerate(self._entries)
                if e.state is ItemState.WAITING and not e.carried
            ),
            len(self._entries),
        )
        self._entries[at:at] = copies
        self._by_id.update((e.item_id, e) for e in copies)
        if self.live:
            self._add_rows(copies)
        for copy in copies:
            self._notify(ChangeKind.ADDED, copy)
        self._kick()
        return copies

    def unfinished(self, session_id: str | None = None) -> int:
        """How many lines of the ended ``session_id`` (default: the last one that ended with
        some) :meth:`say_unfinished_again` would say."""
        if session_id is None:
            return 0 if self._unfinished is None else self._unfinished[1]
        return len(resumable_rows(self._store, session_id))

    def say_unfinished_again(self, session_id: str | None = None) -> list[QueueItem]:
        """Say again the lines the ended ``session_id`` (default: the last one that ended with
        some) had taken and not said to their end (cut mid-sentence, or not started): the one
        click outside kiosk mode. Each is queued ahead of what waits, its new row linked to the
        old one, and never said twice."""
        if session_id is None:
            if self._unfinished is None:
                return []
            session_id = self._unfinished[0]
        if session_id == self._live_session:
            raise ConfigError("That session is still live: its lines are still being said.")
        rows = resumable_rows(self._store, session_id)
        taken = {e.resumed_from for e in self._entries if e.resumed_from is not None}
        lines = [(r.text, r.row_id, r.route, r.question_id) for r in rows if r.row_id not in taken]
        copies = self._queue_carried(lines)
        if self._unfinished is not None and self._unfinished[0] == session_id:
            self._note_unfinished(None)
        return [e.view() for e in copies]

    def _unsent_at_session_end(self, entry: _Entry) -> None:
        """A line not sent to a session that ended: held for the next one, or refused."""
        entry.retry_at = None
        if self.policy == "refuse":
            self._end_unsent([entry], REASON_NOT_SENT_ENDED)
            return
        if entry.row_id is not None:
            ended = self._write(self._store.mark_cancelled, entry.row_id, REASON_NOT_SENT_ENDED)
            # its next row continues this one (in the log's chain of a line said at most once)
            entry.resumed_from = entry.row_id if ended is not None else None
        entry.row_id = None
        entry.session_id = None
        entry.voice_id = None
        entry.reason = REASON_SET_ASIDE if entry.set_aside else None
        if self.live:  # a new session is live already: it is queued for that one
            self._add_row(entry)
        self._notify(ChangeKind.CHANGED, entry)

    # -- sending --------------------------------------------------------------------------

    def _kick(self) -> None:
        """Something changed: let the sender look again (start it if it is not running)."""
        self._poke()
        if self._pump is not None and not self._pump.done():
            return
        if self._next() is None:
            return
        if _loop() is None:  # no event loop yet (built before the app runs): sent when kicked
            log.debug("No event loop: sending waits")
            return
        self._pump = self._spawn(self._run())

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _next(self) -> _Entry | None:
        """The item to send next (it may still have a wait to sit out), or None."""
        if (
            self._paused
            or self._interrupting
            or self._live_session is None
            or self._in_flight is not None
        ):
            return None
        for entry in self._entries:
            if (
                entry.state is ItemState.WAITING
                and entry.row_id is not None
                and not entry.replaced
                and not entry.set_aside
            ):
                return entry if self._room() else None
        return None

    def _room(self) -> bool:
        """Whether the look-ahead lets one more line go to the service now.

        A line on the service counts until it ends, or until it has been there longer than
        any voice takes to say it (its end event was lost): then a timer looks again.
        """
        if self.lookahead is None:
            return True
        now = self._clock()
        counted = [(due, e) for due, e in self._dues(now) if due > now]
        if len(counted) < self.lookahead:
            return True
        waiting_chars = sum(len(e.text) for _, e in counted if e.state is not ItemState.SPEAKING)
        if waiting_chars / self._chars_per_s < LOOKAHEAD_COVER_S and len(counted) < LOOKAHEAD_MOST:
            return True  # too little left to say to cover the time it takes to send the next
        self._look_again_in(min(due for due, _ in counted) - now)
        return False

    def _dues(self, now: float) -> list[tuple[float, _Entry]]:
        """The lines on the service, each with when it stops counting against the look-ahead:
        a line starts when the one before it ends, and takes its length at the learned rate."""
        on_service = sorted(
            (e for e in self._entries if e.state in ON_SERVICE_STATES), key=lambda e: e.send_seq
        )
        dues: list[tuple[float, _Entry]] = []
        free_at = 0.0  # when the line before should have ended
        for entry in on_service:
            took = len(entry.text) / self._chars_per_s
            if entry.state is ItemState.SPEAKING and entry.started_at is not None:
                start = entry.started_at
            else:
                start = max(entry.sent_at if entry.sent_at is not None else now, free_at)
            free_at = start + took
            dues.append((start + LOOKAHEAD_GRACE_S + LOOKAHEAD_SLACK * took, entry))
        return dues

    def _look_again_in(self, delay: float) -> None:
        loop = _loop()
        if loop is None:
            return
        when = loop.time() + max(0.0, delay)
        timer = self._lookahead_timer
        if timer is not None and not timer[0].cancelled() and timer[1] <= when + 0.05:
            return
        if timer is not None:
            timer[0].cancel()
        self._lookahead_timer = (loop.call_later(max(0.0, delay), self._lookahead_due), when)

    def _lookahead_due(self) -> None:
        self._lookahead_timer = None
        self._kick()

    def _claim(self, entry: _Entry) -> bool:
        """The one place that lets an item go to the service, at the moment it goes.

        Only a waiting, logged item that never left and was not replaced, with no wait left,
        while sending is on and nothing else is in flight. Once it goes, ``left`` stays set
        unless the service provably refused it (see ``_refused``): whatever else happens
        (Stop, Resume, Speak now, a new session, a retry, a 429 wait), it is never sent again.
        """
        if entry.left and entry.state is ItemState.WAITING:  # a broken invariant: never send
            log.error("Task row %s left once already; it is not sent again", entry.row_id)
            self._fail(entry, REASON_CRASHED)
            return False
        if (
            entry.state is not ItemState.WAITING
            or entry.left
            or entry.set_aside
            or entry.replaced is not None
            or entry.row_id is None
            or entry.retry_at is not None
            or self._paused
            or self._interrupting
            or self._live_session is None
            or self._in_flight is not None
            or not self._room()
        ):
            return False
        entry.left = True
        self._in_flight = entry
        entry.state = ItemState.SENDING
        entry.reason = None
        entry.attempts += 1
        entry.send_seq = next(self._send_seq)
        entry.sent_at = self._clock()
        self._notify(ChangeKind.CHANGED, entry)
        return True

    async def _run(self) -> None:
        """The sender: one item at a time, in order. It never ends on an error: each is
        logged, announced (``ChangeKind.ERROR``) and the sender goes on; only after
        ``MAX_SENDER_ERRORS`` in a row does it pause, and says so."""
        errors = 0
        while True:
            entry: _Entry | None = None
            try:
                entry = self._next()
                if entry is None:
                    return
                if entry.retry_at is not None:
                    await self._wait_out(entry)
                else:
                    await self._send(entry)
                errors = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors += 1
                self._sender_error(exc, entry, give_up=errors >= MAX_SENDER_ERRORS)
                if errors >= MAX_SENDER_ERRORS:
                    return
            finally:
                self._settle_replaced()

    def _sender_error(self, exc: Exception, entry: _Entry | None, *, give_up: bool) -> None:
        log.error("The speech queue's sender hit an error", exc_info=exc)
        if entry is not None and entry.state is ItemState.WAITING and entry.retry_at is not None:
            # the wait itself failed (a timer): not the line's fault, it goes now
            entry.retry_at = None
            entry.reason = None
            self._notify(ChangeKind.CHANGED, entry)
        elif entry is not None and not entry.state.finished:
            if entry.left:
                entry.unclear = True
                self._fail(entry, f"{REASON_UNCLEAR} (an error in the app)")
            else:
                self._fail(entry, REASON_CRASHED)
        message = f"The speech queue hit an error ({type(exc).__name__}: {exc})"
        if give_up:
            self._paused = True
            self._notify(ChangeKind.PAUSED, None)
            message += " again and again, so it stopped sending. Press Resume to try again."
        else:
            message += "; it goes on with the next line."
        self._announce(message, entry)

    async def _wait_out(self, entry: _Entry) -> None:
        """Sit out ``entry``'s wait after a 429 (never longer than the ceiling); any change
        to the queue (skip, remove, stop, resume, Speak now, a session) cuts it short."""
        assert entry.retry_at is not None
        left = min(max(0.0, entry.retry_at - self._clock()), RETRY_AFTER_CEILING_S)
        woken = await self._sleep_or_wake(left)
        if not woken and entry.state is ItemState.WAITING and entry.retry_at is not None:
            entry.retry_at = None
            entry.reason = None
            self._notify(ChangeKind.CHANGED, entry)

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if woken first (by ``_poke``)."""
        loop = asyncio.get_running_loop()
        if self._wake is None or self._wake_loop is not loop:
            self._wake, self._wake_loop = asyncio.Event(), loop
        wake = self._wake
        wake.clear()
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(wake.wait())
        try:
            done, _ = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
        error = sleeper.exception() if sleeper in done and not sleeper.cancelled() else None
        if error is not None:
            raise error  # the sender's loop reports it and goes on
        return waker in done and sleeper not in done

    async def _send(self, entry: _Entry) -> None:
        session_id = self._live_session
        if session_id is None or not self._claim(entry):
            return
        settled = self._settled = asyncio.Event()
        try:
            await self._request(entry, session_id)
        finally:
            settled.set()
            self._early = None  # not acknowledged: that phrase was not this line's
            if entry.carry_on_answer:
                entry.carry_on_answer = False
                if entry.state is ItemState.CANCELLED and entry.reason == REASON_CARRIED:
                    self._say_again([entry])
            if self._in_flight is entry:
                self._in_flight = None

    async def _request(self, entry: _Entry, session_id: str) -> None:
        row_id = entry.row_id
        try:
            created = await self._client.add_task(session_id, entry.text)
        except RateLimitedError as exc:
            self._refused(entry, session_id, exc)
        except (UnclearOutcomeError, BadAnswerError) as exc:
            # it may be on the service: logged as sent, never sent again by the queue
            await self._unclear(entry, session_id, exc.user_message)
        except NotFoundError as exc:
            entry.left = False  # refused: the session is gone
            if entry.carry_on_answer:  # its session's end carries it, after the cut line
                self._cancel(entry, REASON_CARRIED)
            elif self.carry_over:
                # never said: held in its place for the next session (by the end, below)
                entry.cancel_on_ack = None
                entry.state = ItemState.WAITING
                if self._live_session != session_id:  # that end came already
                    self._unsent_at_session_end(entry)
                else:
                    self._notify(ChangeKind.CHANGED, entry)
            else:
                self._fail(entry, REASON_SESSION_GONE)
            if self._live_session == session_id:
                await self._controller.end_remotely(EndReason.SERVER, exc.user_message)
        except AppError as exc:
            entry.left = False  # refused with a reason (the client tells maybes apart)
            self._fail(entry, exc.user_message)
        except asyncio.CancelledError:
            # shutting down: whether it arrived is unknown, and it is never sent twice
            entry.unclear = True
            self._mark_sent(entry)
            self._fail(entry, f"{REASON_UNCLEAR} (the app stopped while sending)")
            raise
        except Exception as exc:
            log.exception("Sending task row %s failed unexpectedly", row_id)
            await self._unclear(entry, session_id, f"unexpected error: {type(exc).__name__}")
            self._announce(f"Sending a line failed unexpectedly ({type(exc).__name__}).", entry)
        else:
            await self._acknowledged(entry, created.task_id, session_id)

    def _refused(self, entry: _Entry, session_id: str, exc: RateLimitedError) -> None:
        """A 429: the service did nothing. The item never left; it waits, or ends unsent."""
        entry.left = False
        entry.cancel_on_ack = None
        if entry.state.finished:
            return
        entry.state = ItemState.WAITING
        if entry.replaced is not None:  # Speak now took its place meanwhile
            self._end_unsent([entry], entry.replaced)
            return
        if self._live_session != session_id:  # its session ended meanwhile
            self._unsent_at_session_end(entry)
            return
        if entry.attempts > self._max_rate_limit_retries:
            self._fail(entry, f"{exc.user_message} (gave up after {entry.attempts} tries)")
            return
        wait = _clamp_wait(exc.retry_after)
        entry.retry_at = self._clock() + wait
        advised = exc.advised
        asked = (
            f" (it asked for {advised:g} s)" if advised is not None and advised > wait + 0.5 else ""
        )
        entry.reason = f"the service is busy{asked}; sending again in {wait:g} s"
        self._notify(ChangeKind.CHANGED, entry)
        log.info("Task row %s rate limited; sending again in %.2f s", entry.row_id, wait)

    async def _unclear(self, entry: _Entry, session_id: str, why: str) -> None:
        if entry.carry_on_answer:
            # its session died meanwhile: taken or not, it is said again from its start
            self._mark_sent(entry)
            self._cancel(entry, REASON_CARRIED)
            return
        entry.unclear = True
        self._mark_sent(entry)
        self._fail(entry, f"{REASON_UNCLEAR} ({why})")
        if entry.cancel_on_ack is not None and self._live_session == session_id:
            # stopped while on its way, and it may have arrived after the cancel: cancel again
            result = await self._cancel_everywhere()
            if not result.confirmed:
                self._announce(StopUnconfirmedError(result).user_message, entry)

    def _end_unsent(self, entries: Sequence[_Entry], reason: str) -> None:
        """End lines that never left. While a request is in flight they are only marked (never
        sent) and end once it is answered: a door that hands unsent lines back (the composer)
        then never hands back the one in flight, which may still arrive."""
        for entry in entries:
            if entry.state.finished:
                continue
            if self._in_flight is None or entry is self._in_flight:  # (refused: answered)
                self._cancel(entry, reason)
                continue
            entry.replaced = reason
            entry.retry_at = None
            entry.reason = reason
            self._notify(ChangeKind.CHANGED, entry)

    def _settle_replaced(self) -> None:
        if self._in_flight is not None:
            return
        for entry in list(self._entries):
            if entry.replaced is not None and entry.state is ItemState.WAITING:
                self._cancel(entry, entry.replaced)

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
        early, self._early = self._early, None
        if early is not None and reason is None and entry.state is ItemState.SENT:
            # it started (maybe ended) before this answer came: it was this line
            if early.phrase_id and early.phrase_id != task_id:
                self._by_phrase_id[early.phrase_id] = entry
            entry.provisional = not early.by_phrase
            self._start(entry, at=early.started_at)
            if early.ended_at is not None:
                self._finish(entry, at=early.ended_at)
            return
        if reason is not None and not entry.state.finished:
            # Stopped (or replaced) while on its way: it may have reached the service after
            # the cancel-all, so cancel again before anything else is sent.
            self._cancel(entry, reason)
            if self._live_session == session_id:
                result = await self._cancel_everywhere()
                if not result.confirmed:
                    self._announce(StopUnconfirmedError(result).user_message, entry)
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
        # By order, only among lines the service acknowledged: a line is never logged as
        # speaking (or spoken) before the service has it.
        entry = self._oldest([ItemState.SENT])
        if entry is None:
            flying = self._in_flight
            if flying is not None and flying.state is ItemState.SENDING:
                # a phrase can start before its POST is answered: the answer decides
                self._early = _Early(phrase_id, by_phrase, self._clock())
                for other in [e for e in self._entries if e.state is ItemState.SPEAKING]:
                    self._finish(other)
                return
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
        early = self._early
        if (
            entry is None
            and early is not None
            and early.ended_at is None
            and (not phrase_id or not early.phrase_id or phrase_id == early.phrase_id)
        ):
            early.ended_at = self._clock()
            return
        if entry is None:
            log.debug("Speaking ended with nothing speaking (phrase %s): ignored", phrase_id)
            return
        self._finish(entry)

    def _start(self, entry: _Entry, at: float | None = None) -> None:
        assert entry.row_id is not None
        self._mark_sent(entry)
        started = self._clock() if at is None else at
        if self._write(self._store.mark_speaking, entry.row_id, at=started) is None:
            return
        entry.state = ItemState.SPEAKING
        entry.started_at = started
        self._notify(ChangeKind.CHANGED, entry)
        # The avatar speaks one phrase at a time: one that was speaking is over now, even if
        # its end event was lost (e.g. while the event channel was reconnecting).
        for other in [e for e in self._entries if e.state is ItemState.SPEAKING and e is not entry]:
            self._finish(other)

    def _finish(self, entry: _Entry, at: float | None = None) -> None:
        assert entry.row_id is not None
        if entry.stopping is not None:
            self._cancel(entry, entry.stopping)
            return
        self._mark_sent(entry)
        ended = self._clock() if at is None else at
        if self._write(self._store.mark_spoken, entry.row_id, at=ended) is None:
            return
        entry.state = ItemState.SPOKEN
        self._learn_rate(entry, ended)
        self._notify(ChangeKind.CHANGED, entry)
        self._trim()
        self._kick()  # room for the next line

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
        for (route, question_id), grouped in itertools.groupby(
            entries, key=lambda e: (e.route, e.question_id)
        ):
            group = list(grouped)
            records += self._log_lines(group, session_id, voice, route, question_id)
        for entry, record in zip(entries, records, strict=True):
            entry.row_id = record.row_id
            entry.session_id = session_id
            entry.voice_id = voice
        for record in records:
            self._rows(record.row_id, new=True)

    def _log_lines(
        self,
        group: Sequence[_Entry],
        session_id: str,
        voice: str | None,
        route: TaskRoute,
        question_id: str | None,
    ) -> list[TaskRecord]:
        links = [e.resumed_from for e in group]
        add = functools.partial(
            self._store.add_many,
            [e.text for e in group],
            session_id=session_id,
            voice_id=voice,
            route=route,
            at=self._clock(),
            question_id=question_id,
        )
        if not any(links):
            return add()
        try:
            return add(resumed_from=links)
        except (ValueError, KeyError):
            # a link the log refuses (a bug here): the lines are logged all the same, unlinked
            log.exception("The task log refused to link lines said again; logged unlinked")
            for entry in group:
                entry.resumed_from = None
            return add()

    def _learn_rate(self, entry: _Entry, ended: float) -> None:
        """Fold a line said start to end (by its own phrase events) into the speaking rate."""
        if entry.started_at is None or entry.provisional:
            return
        took = ended - entry.started_at
        if took < 0.05 or len(entry.text) < 8:
            return
        rate = min(max(len(entry.text) / took, 1.0), 2000.0)
        self._chars_per_s = 0.7 * self._chars_per_s + 0.3 * rate

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
        self._kick()  # room for the next line

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
        return self._by_id.get(item_id)

    def _forget(self, entry: _Entry) -> None:
        self._entries.remove(entry)
        self._by_id.pop(entry.item_id, None)
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

    def _announce(self, message: str, entry: _Entry | None = None) -> None:
        """Tell listeners something went wrong that a person should see."""
        change = QueueChange(
            ChangeKind.ERROR, None if entry is None else entry.view(), message=message
        )
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
        if self._lookahead_timer is not None:
            self._lookahead_timer[0].cancel()
            self._lookahead_timer = None
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


def _clamp_wait(retry_after: float | None) -> float:
    """A 429's wait in seconds: the advice if readable, never less than 0 nor more than the
    ceiling (``inf``, ``nan`` or ``1e400`` from any client included)."""
    if retry_after is None or math.isnan(retry_after):
        return DEFAULT_RETRY_AFTER_S
    return min(max(0.0, retry_after), RETRY_AFTER_CEILING_S)


async def _skipped(why: str) -> str:
    return why


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Speech queue task failed", exc_info=task.exception())
