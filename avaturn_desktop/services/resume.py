"""Reconnect that keeps the show going: which lines the next session says again (Qt-free).

When a session dies with lines still to say, the next session says them once, in order:

* the line the avatar was speaking (cut mid-sentence) is said again **from its start**;
* lines the service had taken but not started (``sent``), and a line whose request was still
  on its way (``sending``), are said again: a dead session's queue is gone, so it never
  spoke them;
* lines not sent yet (``waiting``) are sent as they are;
* a line that was spoken is **never** said again; nor is a line cancelled or failed before
  the session died (stopped, removed, replaced by Speak now, an unclear send), nor one a Stop
  or Speak now is cancelling at that moment (``stopping`` / ``cancel_on_ack`` set).

The order is the order the lines would have been spoken in: first what was on the service, in
the order it was sent, then what waited, in queue order.

The task log links the old rows to the new ones: each new row's ``resumed_from`` names the
row it continues (:meth:`TaskLogStore.add_many`), the old row ends ``cancelled`` with
:data:`REASON_CARRIED`. The log refuses to continue a spoken row or to continue a row twice,
so a line cannot be doubled through the log even by a bug in the queue.

:func:`plan_resume` is the automatic rule (kiosk mode), applied by the speech queue to its own
entries when the session ends; :func:`resumable_rows` is the same rule read back from the log
after the fact, for the "say the unfinished lines again" button outside kiosk mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from avaturn_desktop.core.queue import (
    ON_SERVICE_STATES,
    REASON_CARRIED,
    REASON_SESSION_ENDED,
    REASON_SESSION_GONE,
    ItemState,
)
from avaturn_desktop.core.tasks import TaskRecord, TaskState
from avaturn_desktop.services.tasklog import TaskLogStore

__all__ = ["REASON_CARRIED", "Carry", "plan_resume", "resumable_rows", "texts_and_links"]

#: The old rows a person may still ask to have said again (the session ended, nothing else).
_ENDED_WITH_THE_SESSION: Final = {
    (TaskState.CANCELLED, REASON_SESSION_ENDED),
    (TaskState.FAILED, REASON_SESSION_GONE),
}


class Candidate(Protocol):
    """An item of the speech queue as the rule sees it (the queue's own entries fit)."""

    @property
    def item_id(self) -> int: ...

    @property
    def state(self) -> ItemState: ...

    @property
    def row_id(self) -> int | None: ...

    @property
    def send_seq(self) -> int:
        """When it was last sent (1, 2, ...); 0 when it never was."""
        ...

    @property
    def stopping(self) -> str | None:
        """A Stop / Speak now is cutting it off right now (the reason), else ``None``."""
        ...

    @property
    def cancel_on_ack(self) -> str | None:
        """A Stop / Speak now came while its request was on its way, else ``None``."""
        ...


@dataclasses.dataclass(frozen=True)
class Carry:
    """One line the next session says: the item, and the row it continues."""

    item_id: int
    #: The row to end with :data:`REASON_CARRIED` and to name in the new row's
    #: ``resumed_from``; ``None`` for a line held without a row (nothing to link).
    row_id: int | None
    #: The item's state when the session died.
    was: ItemState

    @property
    def cut(self) -> bool:
        """The avatar was speaking it: it is said again from its start."""
        return self.was is ItemState.SPEAKING

    @property
    def in_flight(self) -> bool:
        """Its request had not been answered: the queue carries it once the answer is in."""
        return self.was is ItemState.SENDING


def plan_resume(entries: Iterable[Candidate]) -> list[Carry]:
    """The lines the next session says, in the order it says them (see the module docs).

    ``entries`` are the queue's items in queue order, finished ones included (they are left
    out). Items a Stop or Speak now is cancelling are left out: the person asked for silence.
    """
    on_service: list[Candidate] = []
    waiting: list[Candidate] = []
    for entry in entries:
        if entry.stopping is not None or entry.cancel_on_ack is not None:
            continue
        if entry.state in ON_SERVICE_STATES:
            on_service.append(entry)
        elif entry.state is ItemState.WAITING:
            waiting.append(entry)
    on_service.sort(key=lambda e: e.send_seq)
    return [Carry(e.item_id, e.row_id, e.state) for e in (*on_service, *waiting)]


def resumable_rows(store: TaskLogStore, session_id: str) -> list[TaskRecord]:
    """The lines of an ended session a person may have said again with one click.

    Rows that ended only because the session did (``cancelled`` "session ended" while sent or
    speaking, ``failed`` because the session was gone on the service) and that no later row
    continues yet, in the order they were sent. Lines that waited unsent are not among them:
    the queue holds those for the next session by itself. Say them again with
    ``resumed_from`` set to these rows' ids (see :meth:`TaskLogStore.add_many`).
    """
    rows = store.query(session_id=session_id, states=(TaskState.CANCELLED, TaskState.FAILED))
    chosen = [
        r
        for r in rows
        if (r.state, r.reason) in _ENDED_WITH_THE_SESSION and store.successor(r.row_id) is None
    ]
    return sorted(chosen, key=_send_order)


def _send_order(row: TaskRecord) -> tuple[bool, float, int]:
    # Sent rows in the order they left; one refused as the session was gone (never marked
    # sent) was tried after them, since the queue sends strictly in order.
    return (row.sent_at is None, row.sent_at or 0.0, row.row_id)


def texts_and_links(rows: Sequence[TaskRecord]) -> tuple[list[str], list[int | None]]:
    """The arguments for :meth:`TaskLogStore.add_many` (or the queue) that say ``rows`` again."""
    return [r.text for r in rows], [r.row_id for r in rows]
