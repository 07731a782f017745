"""What a text becomes: sentences, sent as one batch, whole or not at all (Qt-free).

The operator's rules live here once, for every door (the composer, the control API, a
script, an answer stream):

- A text is cut into sentences when the settings say so (``split_sentences``), each at most
  ``max_chunk_chars`` long; otherwise it is one line. Empty or oversized text is refused by
  :func:`~avaturn_desktop.core.queue.check_text`, with the message a person reads.
- Its sentences form a :class:`Batch`. The batch is *taken* once the service has every
  sentence (it answered with a task id, or the avatar already says it).
- When a sentence of a batch is not taken (it failed, or was cancelled before the service had
  it), the rest of the batch that has not left yet is taken out of the queue, and
  the batch is *given back* with the text that was not sent and the reason: the composer puts
  it back in its box, the control API reports it. Nothing is lost, nothing half-said is
  silently followed by the rest. A line a person removes from the queue on purpose is only
  dropped: the rest of its batch goes on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence

from avaturn_desktop.core.chunker import SentenceChunker
from avaturn_desktop.core.errors import ConfigError
from avaturn_desktop.core.queue import (
    REASON_CARRIED,
    REASON_REMOVED,
    REASON_SPEAK_NOW,
    ItemState,
    QueueChange,
    QueueItem,
)
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech_queue import SpeechQueue

log = logging.getLogger("avaturn.speech")

#: Sentences queued at once when a text arrives; a longer text goes on a slice per loop turn.
#: Each line queued is logged and drawn too (a row, a list entry): 100 lines in one turn were
#: 16-23 ms of the GUI thread with two avatars streaming, 25 stay well under a frame.
FIRST_SLICE = 20
#: At most this many sentences, and about this much chunking work, per later slice.
SLICE = 25
SLICE_BUDGET_S = 0.006
#: How much text the chunker reads at a time.
PIECE_CHARS = 2000


class BatchOutcome(enum.StrEnum):
    PENDING = "pending"
    TAKEN = "taken"
    GIVEN_BACK = "given back"


def taken(item: QueueItem) -> bool:
    """The service has the sentence: it answered with a task id, or the avatar is already
    saying it (a phrase can start, even end, before the answer to its POST arrives), or its
    session died and a copy says it in the next one (kiosk mode)."""
    return (
        item.acknowledged
        or item.state in (ItemState.SPEAKING, ItemState.SPOKEN)
        or (item.state is ItemState.CANCELLED and item.reason == REASON_CARRIED)
    )


def _removed(item: QueueItem) -> bool:
    return item.state is ItemState.CANCELLED and item.reason == REASON_REMOVED


BatchListener = Callable[["Batch"], None]


class Batch:
    """One text's sentences on their way; see the module docs."""

    def __init__(self, text: str, items: Sequence[QueueItem]) -> None:
        self.text = text
        self._items: dict[int, QueueItem] = {item.item_id: item for item in items}
        self.outcome = BatchOutcome.PENDING
        #: Given back: the sentences that were not sent, joined by newlines.
        self.unsent_text = ""
        #: Given back: why the first lost sentence was not taken.
        self.reason: str | None = None
        self._listeners: list[BatchListener] = []
        #: A long text still being queued: what is left of it (see ``Speaker.say``).
        self._rest: _Cutter | None = None
        #: Sentences never queued (given back before their slice came).
        self._unqueued: list[str] = []
        #: The ids of the sentences not taken yet (a person's removals left out): kept up to
        #: date change by change, so a change costs the same in a batch of 1 or 1,000.
        self._untaken: set[int] = set()
        self._recount()

    def _recount(self) -> None:
        self._untaken = {
            i.item_id for i in self._items.values() if not taken(i) and not _removed(i)
        }

    def _note(self, item: QueueItem) -> None:
        """``item`` changed: keep :attr:`_untaken` true."""
        if taken(item) or _removed(item):
            self._untaken.discard(item.item_id)
        else:
            self._untaken.add(item.item_id)

    @property
    def items(self) -> tuple[QueueItem, ...]:
        return tuple(self._items.values())

    @property
    def held(self) -> bool:
        """Waiting for a session to go live."""
        return self.outcome is BatchOutcome.PENDING and any(i.held for i in self._items.values())

    @property
    def sent_count(self) -> int:
        return sum(1 for item in self._items.values() if taken(item))

    def subscribe(self, listener: BatchListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:
                log.exception("A batch listener failed")


class Speaker:
    """Turns texts into batches on one speech queue, by the settings in force."""

    def __init__(self, queue: SpeechQueue, settings: SettingsStore) -> None:
        self.queue = queue
        self._settings = settings
        self._pending: dict[int, Batch] = {}  # item id -> its batch, while pending
        self._resolving = False
        self._continuation: tuple[Batch, asyncio.Task[None]] | None = None
        self._unsubscribe = queue.subscribe(self._on_change)

    def chunks(self, text: str) -> list[str]:
        """``text`` as it will be sent: cut into sentences when the settings say so."""
        cutter = self._cutter(text)
        return cutter.take(None)

    def _cutter(self, text: str) -> _Cutter:
        settings = self._settings.value
        return _Cutter(text, settings.max_chunk_chars if settings.split_sentences else None)

    def _first(self, text: str) -> tuple[_Cutter, list[str]]:
        """The first sentences of ``text`` (as many as one loop turn should queue)."""
        if not text or not text.strip():
            raise ConfigError("Nothing to say: the text is empty.")
        self._finish_continuation()
        cutter = self._cutter(text)
        first = cutter.take(FIRST_SLICE)
        if not first:
            raise ConfigError("Nothing to say: the text is empty.")
        return cutter, first

    def say(self, text: str) -> Batch:
        """Queue ``text`` behind what waits; raises :class:`AppError` when it is refused.

        A long text (a pasted script) is queued a slice per loop turn: the first sentences
        now, the rest right after, so the window never stalls; its batch is pending until
        every slice is in the queue.
        """
        cutter, first = self._first(text)
        items = self.queue.enqueue(first)
        # after a Stop, new words are said now; what waited is set aside for the person
        self.queue.set_aside_waiting(but={item.item_id for item in items})
        return self._track(text, items, cutter)

    async def speak_now(self, text: str) -> Batch:
        """Cut off what plays and what waits, then say ``text`` first."""
        cutter, first = self._first(text)
        self._stop_continuation(REASON_SPEAK_NOW)
        return self._track(text, await self.queue.speak_now(first), cutter)

    def _track(self, text: str, items: list[QueueItem], cutter: _Cutter) -> Batch:
        batch = Batch(text, items)
        for item in items:
            self._pending[item.item_id] = batch
        # a sentence may already be taken or lost (events arrived while queueing); each is
        # looked up alone: a copy of every item in the queue cost each say as much as the rest
        latest = [self.queue.item(item.item_id) or item for item in items]
        batch._items = {item.item_id: item for item in latest}
        if not cutter.done:
            batch._rest = cutter
            self._continuation = (batch, asyncio.ensure_future(self._continue(batch)))
        self._evaluate(batch)
        return batch

    async def _continue(self, batch: Batch) -> None:
        """Queue the rest of a long batch, one slice per loop turn."""
        try:
            while batch._rest is not None and batch.outcome is BatchOutcome.PENDING:
                await asyncio.sleep(0)
                self._queue_slice(batch, SLICE_BUDGET_S)
        except Exception:
            log.exception("Queueing the rest of a long text failed")
            self._stop_continuation("could not queue the rest of the text")
        finally:
            if self._continuation is not None and self._continuation[0] is batch:
                self._continuation = None

    def _queue_slice(self, batch: Batch, budget_s: float | None) -> None:
        cutter = batch._rest
        if cutter is None:
            return
        sentences = cutter.take(None if budget_s is None else SLICE, budget_s)
        if cutter.done:
            batch._rest = None
        items: list[QueueItem] = []
        if sentences:
            items = self.queue.enqueue(sentences)
            for item in items:
                batch._items[item.item_id] = item
                batch._note(item)
                self._pending[item.item_id] = batch
        self._evaluate(batch, items)
        batch._notify()

    def _finish_continuation(self) -> None:
        """A new text while a long one is still being queued: queue the rest of it now, so
        the order of the texts holds."""
        if self._continuation is not None:
            batch, task = self._continuation
            task.cancel()
            self._continuation = None
            while batch._rest is not None and batch.outcome is BatchOutcome.PENDING:
                self._queue_slice(batch, None)

    def _stop_continuation(self, reason: str) -> None:
        """Speak now replaces what waits: the part of a long text not queued yet goes too."""
        if self._continuation is None:
            return
        batch, task = self._continuation
        task.cancel()
        self._continuation = None
        if batch.outcome is BatchOutcome.PENDING and batch._rest is not None:
            unqueued = batch._rest.take(None)
            batch._rest = None
            batch._unqueued = unqueued
            self._give_back(batch, None, reason)
            batch._notify()

    def _on_change(self, change: QueueChange) -> None:
        item = change.item
        if item is None:
            return
        batch = self._pending.get(item.item_id)
        if batch is None:
            return
        batch._items[item.item_id] = item
        batch._note(item)
        if not self._resolving:
            self._evaluate(batch, [item])
            batch._notify()

    def _evaluate(self, batch: Batch, changed: Sequence[QueueItem] | None = None) -> None:
        """Settle ``batch`` when its sentences say so. ``changed``: only these changed since
        the last look (only they can have been lost); None: look at all of them."""
        if batch.outcome is not BatchOutcome.PENDING:
            return
        if changed is None:
            batch._recount()
            changed = batch.items
        # A line a person removed from the queue is theirs to drop: the rest goes on.
        if batch._rest is None and not batch._untaken:
            self._settle(batch, BatchOutcome.TAKEN)
            return
        lost = next((i for i in changed if i.item_id in batch._untaken and i.state.finished), None)
        if lost is not None:
            self._give_back(batch, lost)

    def _give_back(self, batch: Batch, lost: QueueItem | None, reason: str = "") -> None:
        dropped = {i.item_id for i in batch.items if _removed(i)}  # by a person, before
        self._resolving = True
        try:
            for item in batch.items:
                if item.editable:
                    self.queue.remove(item.item_id)
        finally:
            self._resolving = False
        if batch._rest is not None:  # a long text: what was not queued yet is not sent either
            batch._unqueued += batch._rest.take(None)
            batch._rest = None
        unsent = [i.text for i in batch.items if not taken(i) and i.item_id not in dropped]
        batch.unsent_text = "\n".join([*unsent, *batch._unqueued])
        batch.reason = (lost.reason or lost.state.value) if lost is not None else reason
        self._settle(batch, BatchOutcome.GIVEN_BACK)

    def _settle(self, batch: Batch, outcome: BatchOutcome) -> None:
        batch.outcome = outcome
        for item_id in batch._items:
            self._pending.pop(item_id, None)

    def close(self) -> None:
        if self._continuation is not None:
            self._continuation[1].cancel()
            self._continuation = None
        self._unsubscribe()


class _Cutter:
    """A text cut into sentences a piece at a time (or whole, when splitting is off)."""

    def __init__(self, text: str, max_chars: int | None) -> None:
        self._text = text
        self._pos = 0
        self._chunker = SentenceChunker(max_chars) if max_chars is not None else None
        self._ready: list[str] = []
        self._read_all = False

    @property
    def done(self) -> bool:
        """Every sentence was taken."""
        return self._read_all and not self._ready

    def take(self, most: int | None, budget_s: float | None = None) -> list[str]:
        """Up to ``most`` sentences (all: None), within about ``budget_s`` of work."""
        started = time.perf_counter()
        while not self._read_all and (most is None or len(self._ready) < most):
            if budget_s is not None and time.perf_counter() - started > budget_s:
                break
            self._advance()
        cut = len(self._ready) if most is None else most
        out, self._ready = self._ready[:cut], self._ready[cut:]
        return out

    def _advance(self) -> None:
        if self._chunker is None:
            stripped = self._text.strip()
            self._ready += [stripped] if stripped else []
            self._read_all = True
            return
        piece = self._text[self._pos : self._pos + PIECE_CHARS]
        self._pos += len(piece)
        self._ready += self._chunker.feed(piece)
        if self._pos >= len(self._text):
            self._ready += self._chunker.flush()
            self._read_all = True
