"""One text said by several avatars at once: a batch per slot, watched as one (Qt-free).

The composer's "All avatars" sends the same text to every slot's speaker; each slot's
:class:`~avaturn_desktop.services.speech.Batch` follows the usual rule (whole or given back).
:class:`FanOutBatch` looks like one batch to the composer: taken once every slot took its
copy; given back as soon as one slot gave its copy back, with the text that slot did not send
and the slot named in the reason (the slots that took theirs keep them: sending the text back
to all would say it twice there, so the composer should send it to that slot alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from avaturn_desktop.core.queue import QueueItem
from avaturn_desktop.services.speech import Batch, BatchOutcome


class FanOutBatch(Batch):
    """The batches of one text on several slots, as one (see the module docs)."""

    def __init__(self, text: str, parts: Sequence[tuple[int, str, Batch]]) -> None:
        items: list[QueueItem] = [item for _, _, part in parts for item in part.items]
        super().__init__(text, items)
        #: ``(slot index, slot label, batch)`` per slot.
        self.parts = list(parts)
        #: The slot whose copy was given back (None while none was).
        self.given_back_slot: int | None = None
        self._unsubscribe: list[Callable[[], None]] = [
            part.subscribe(self._part_changed) for _, _, part in self.parts
        ]
        self._evaluate()

    @property
    def items(self) -> tuple[QueueItem, ...]:
        return tuple(item for _, _, part in self.parts for item in part.items)

    @property
    def held(self) -> bool:
        return self.outcome is BatchOutcome.PENDING and any(p.held for _, _, p in self.parts)

    @property
    def sent_count(self) -> int:
        return sum(part.sent_count for _, _, part in self.parts)

    def _part_changed(self, _part: Batch) -> None:
        if self._evaluate():
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            self._unsubscribe.clear()
        self._notify()

    def _evaluate(self) -> bool:
        """Settle when the parts say so; True when settled."""
        if self.outcome is not BatchOutcome.PENDING:
            return True
        for index, label, part in self.parts:
            if part.outcome is BatchOutcome.GIVEN_BACK:
                self.outcome = BatchOutcome.GIVEN_BACK
                self.unsent_text = part.unsent_text
                self.reason = f"{label}: {part.reason}"
                self.given_back_slot = index
                return True
        if all(part.outcome is BatchOutcome.TAKEN for _, _, part in self.parts):
            self.outcome = BatchOutcome.TAKEN
            return True
        return False
