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

import enum
import logging
from collections.abc import Callable, Sequence

from avaturn_desktop.core.chunker import split_sentences
from avaturn_desktop.core.errors import ConfigError
from avaturn_desktop.core.queue import REASON_REMOVED, ItemState, QueueChange, QueueItem
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech_queue import SpeechQueue

log = logging.getLogger("avaturn.speech")


class BatchOutcome(enum.StrEnum):
    PENDING = "pending"
    TAKEN = "taken"
    GIVEN_BACK = "given back"


def taken(item: QueueItem) -> bool:
    """The service has the sentence: it answered with a task id, or the avatar is already
    saying it (a phrase can start, even end, before the answer to its POST arrives)."""
    return item.acknowledged or item.state in (ItemState.SPEAKING, ItemState.SPOKEN)


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
        self._unsubscribe = queue.subscribe(self._on_change)

    def chunks(self, text: str) -> list[str]:
        """``text`` as it will be sent: cut into sentences when the settings say so."""
        settings = self._settings.value
        if settings.split_sentences:
            return split_sentences(text, settings.max_chunk_chars)
        stripped = text.strip()
        return [stripped] if stripped else []

    def _sentences(self, text: str) -> list[str]:
        chunks = self.chunks(text) if text and text.strip() else []
        if not chunks:
            raise ConfigError("Nothing to say: the text is empty.")
        return chunks

    def say(self, text: str) -> Batch:
        """Queue ``text`` behind what waits; raises :class:`AppError` when it is refused."""
        return self._track(text, self.queue.enqueue(self._sentences(text)))

    async def speak_now(self, text: str) -> Batch:
        """Cut off what plays and what waits, then say ``text`` first."""
        return self._track(text, await self.queue.speak_now(self._sentences(text)))

    def _track(self, text: str, items: list[QueueItem]) -> Batch:
        batch = Batch(text, items)
        for item in items:
            self._pending[item.item_id] = batch
        # a sentence may already be taken or lost (events arrived while queueing)
        latest = [self.queue.item(item.item_id) or item for item in items]
        batch._items = {item.item_id: item for item in latest}
        self._evaluate(batch)
        return batch

    def _on_change(self, change: QueueChange) -> None:
        item = change.item
        if item is None:
            return
        batch = self._pending.get(item.item_id)
        if batch is None:
            return
        batch._items[item.item_id] = item
        if not self._resolving:
            self._evaluate(batch)
            batch._notify()

    def _evaluate(self, batch: Batch) -> None:
        if batch.outcome is not BatchOutcome.PENDING:
            return
        # A line a person removed from the queue is theirs to drop: the rest goes on.
        items = [i for i in batch.items if not _removed(i)]
        if all(taken(item) for item in items):
            self._settle(batch, BatchOutcome.TAKEN)
            return
        lost = next((i for i in items if not taken(i) and i.state.finished), None)
        if lost is not None:
            self._give_back(batch, lost)

    def _give_back(self, batch: Batch, lost: QueueItem) -> None:
        dropped = {i.item_id for i in batch.items if _removed(i)}  # by a person, before
        self._resolving = True
        try:
            for item in batch.items:
                if item.editable:
                    self.queue.remove(item.item_id)
        finally:
            self._resolving = False
        batch.unsent_text = "\n".join(
            i.text for i in batch.items if not taken(i) and i.item_id not in dropped
        )
        batch.reason = lost.reason or lost.state.value
        self._settle(batch, BatchOutcome.GIVEN_BACK)

    def _settle(self, batch: Batch, outcome: BatchOutcome) -> None:
        batch.outcome = outcome
        for item_id in batch._items:
            self._pending.pop(item_id, None)

    def close(self) -> None:
        self._unsubscribe()
