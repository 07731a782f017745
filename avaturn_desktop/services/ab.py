"""A/B comparisons of voices: the same lines said by voice A, B (C, ...), rated by ear (Qt-free).

Two ways to run one:

* **one session** (``sequential``): one avatar says every line with voice A, then its voice
  is changed (the SDK's ``changeVoice``; the queue is empty by then, so nothing is dropped)
  and it says them again with B, and so on;

Each take is said alone: the runner waits until the avatar has nothing else to say (lines
queued from the composer meanwhile go first), so a take's start latency is the voice's, not
the queue's.
* **side by side** (``side_by_side``): each voice gets its own avatar slot (a session each,
  within the quota), and the slots take turns line by line (A says line 1, then B says line 1,
  ...), so the same line is heard back to back from each voice.

Blind: the voices are given to the labels in a random order, and which voice a label is stays
hidden (:attr:`AbRun.revealed`) until every take is rated or the operator reveals it.

Each take (one line by one voice) is recorded in the task log's ``ab_takes`` with the task row
that said it; the results table reads the start latency and speaking time from that row, the
same figures as the log, and exports as CSV.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

from avaturn_desktop.core.errors import AppError, ConfigError
from avaturn_desktop.core.queue import QueueChange, QueueItem
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.services.export import iso_utc
from avaturn_desktop.services.tasklog import AbTake

if TYPE_CHECKING:
    from avaturn_desktop.services.runtime import AvatarSlot, Runtime

log = logging.getLogger("avaturn.ab")

Mode = Literal["sequential", "side_by_side"]
LABELS: Final = "ABCDEFGH"
#: A line the avatar does not finish within this long is given up (its take has no figures).
LINE_TIMEOUT_S: Final = 120.0
#: A session that does not go live within this long fails the comparison.
LIVE_TIMEOUT_S: Final = 90.0
CSV_COLUMNS: Final = (
    "run_id",
    "take",
    "label",
    "voice_id",
    "voice_name",
    "slot",
    "line",
    "text",
    "rating",
    "state",
    "start_latency_ms",
    "speaking_s",
    "rated_at",
)


class AbError(AppError):
    """The comparison could not run (no voice, no line, a session that did not go live)."""


@dataclass(frozen=True)
class AbPlan:
    """What to compare: ``lines`` said by each of ``voices``, in ``mode``, maybe blind."""

    lines: tuple[str, ...]
    voices: tuple[str, ...]
    mode: Mode = "sequential"
    blind: bool = False
    #: The slot of a one-session comparison (side by side uses slots 0, 1, ...).
    slot: int = 0

    def check(self, quota: int) -> None:
        if len(self.voices) < 2:
            raise ConfigError("Pick at least two voices to compare.")
        if len(set(self.voices)) != len(self.voices):
            raise ConfigError("Each voice can be in a comparison once.")
        if len(self.voices) > len(LABELS):
            raise ConfigError(f"Compare at most {len(LABELS)} voices at a time.")
        if not self.lines or not any(line.strip() for line in self.lines):
            raise ConfigError("Enter at least one line for the voices to say.")
        if self.mode == "side_by_side" and len(self.voices) > quota:
            raise ConfigError(
                f"Side by side needs one avatar per voice: {len(self.voices)} voices but "
                f"{quota} avatar(s) allowed (Settings). Compare in one session instead."
            )


@dataclass(frozen=True)
class AbResult:
    """One row of the results table."""

    take: AbTake
    #: The voice as shown: hidden while the comparison is blind and not revealed.
    voice_shown: str
    state: str
    start_latency_ms: float | None
    speaking_s: float | None


@dataclass
class AbRun:
    """One comparison: its takes, their ratings, and how far it got."""

    run_id: str
    plan: AbPlan
    takes: list[AbTake]
    names: Callable[[str], str] = field(default=lambda voice_id: voice_id)
    state: Literal["ready", "running", "done", "failed", "stopped"] = "ready"
    error: str | None = None
    #: The take being said now (None between takes).
    current: int | None = None
    _revealed: bool = False
    _listeners: list[Callable[[AbRun], None]] = field(default_factory=list)

    @classmethod
    def plan_takes(
        cls,
        plan: AbPlan,
        *,
        names: Callable[[str], str] = lambda voice_id: voice_id,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> AbRun:
        """The takes of ``plan`` in the order they are said (labels A, B, ... to the voices;
        shuffled first when blind)."""
        voices = list(plan.voices)
        if plan.blind:
            (rng or random.Random()).shuffle(voices)
        lines = [line.strip() for line in plan.lines if line.strip()]
        run_id = uuid.uuid4().hex[:12]
        now = clock()
        order: list[tuple[int, int]] = (
            [(v, n) for v in range(len(voices)) for n in range(len(lines))]
            if plan.mode == "sequential"
            else [(v, n) for n in range(len(lines)) for v in range(len(voices))]
        )
        takes = [
            AbTake(
                run_id=run_id,
                take=i,
                label=LABELS[v],
                voice_id=voices[v],
                slot=plan.slot if plan.mode == "sequential" else v,
                line=n,
                text=lines[n],
                created_at=now,
            )
            for i, (v, n) in enumerate(order)
        ]
        return cls(run_id, plan, takes, names=names)

    # -- reading ---------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(t.label for t in self.takes))

    def voice_of(self, label: str) -> str:
        return next(t.voice_id for t in self.takes if t.label == label)

    @property
    def all_rated(self) -> bool:
        return all(t.rating is not None for t in self.takes)

    @property
    def revealed(self) -> bool:
        """Which voice each label is may be shown: not blind, or every take rated, or the
        operator asked."""
        return not self.plan.blind or self._revealed or self.all_rated

    def shown_voice(self, take: AbTake) -> str:
        if not self.revealed:
            return "hidden until rated"
        name = self.names(take.voice_id)
        return name if name == take.voice_id else f"{name} ({take.voice_id})"

    def subscribe(self, listener: Callable[[AbRun], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:
                log.exception("An A/B listener failed")

    # -- the operator ----------------------------------------------------------------------

    def reveal(self) -> None:
        self._revealed = True
        self.changed()

    def set_take(self, take: AbTake) -> None:
        self.takes[take.take] = take
        self.changed()


def results(run: AbRun, rows: Callable[[int], Any]) -> list[AbResult]:
    """The results table: each take with its figures, read from its task row (``rows`` is
    the store's ``get``)."""
    out: list[AbResult] = []
    for take in run.takes:
        state, latency, speaking = "not said", None, None
        if take.row_id is not None:
            try:
                record = rows(take.row_id)
            except KeyError:
                record = None
            if record is not None:
                state = record.state.value
                latency = record.latency_ms
                speaking = record.duration_s
        elif run.current == take.take:
            state = "saying"
        out.append(AbResult(take, run.shown_voice(take), state, latency, speaking))
    return out


def summary(run: AbRun, table: Sequence[AbResult]) -> list[dict[str, Any]]:
    """Per label: the mean rating, the median start latency and the mean speaking time."""
    import statistics

    out = []
    for label in run.labels:
        mine = [r for r in table if r.take.label == label]
        ratings = [r.take.rating for r in mine if r.take.rating is not None]
        latencies = [r.start_latency_ms for r in mine if r.start_latency_ms is not None]
        speaking = [r.speaking_s for r in mine if r.speaking_s is not None]
        out.append(
            {
                "label": label,
                "voice": run.shown_voice(mine[0].take) if mine else "",
                "rating": statistics.fmean(ratings) if ratings else None,
                "rated": len(ratings),
                "takes": len(mine),
                "p50_latency_ms": statistics.median(latencies) if latencies else None,
                "mean_speaking_s": statistics.fmean(speaking) if speaking else None,
            }
        )
    return out


def export_csv(run: AbRun, table: Iterable[AbResult], out: TextIO) -> int:
    """The results as CSV (open ``out`` with ``newline=""``); the voices are written only once
    revealed. Returns the number of rows."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for row in table:
        take = row.take
        voice_id = take.voice_id if run.revealed else ""
        writer.writerow(
            (
                take.run_id,
                take.take,
                take.label,
                voice_id,
                run.names(take.voice_id) if run.revealed else "",
                "" if take.slot is None else take.slot,
                take.line + 1,
                _safe(take.text),
                "" if take.rating is None else take.rating,
                row.state,
                "" if row.start_latency_ms is None else f"{row.start_latency_ms:.1f}",
                "" if row.speaking_s is None else f"{row.speaking_s:.3f}",
                iso_utc(take.rated_at),
            )
        )
        count += 1
    return count


def _safe(text: str) -> str:
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


# -- running -----------------------------------------------------------------------------------


class AbRunner:
    """Runs an :class:`AbRun` on the runtime's slots and records it (see the module docs)."""

    def __init__(self, runtime: Runtime, run: AbRun) -> None:
        self._runtime = runtime
        self.run = run
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def prepare(
        cls, runtime: Runtime, plan: AbPlan, *, rng: random.Random | None = None
    ) -> AbRunner:
        plan.check(runtime.quota)
        run = AbRun.plan_takes(plan, names=runtime.voices.name_of, rng=rng)
        return cls(runtime, run)

    def start(self) -> asyncio.Task[None]:
        if self._task is not None:
            raise AbError("This comparison has already run; start a new one.")
        self._runtime.store.add_ab_takes(self.run.takes)
        self._task = asyncio.ensure_future(self._go())
        return self._task

    async def stop(self) -> None:
        """Stop after the line being said (it is cut off: the avatar stops at once)."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def rate(self, take: int, rating: int | None) -> None:
        self._runtime.store.rate_ab_take(self.run.run_id, take, rating)
        old = self.run.takes[take]
        self.run.set_take(
            replace(old, rating=rating, rated_at=None if rating is None else time.time())
        )

    async def _go(self) -> None:
        run = self.run
        run.state = "running"
        run.changed()
        try:
            if run.plan.mode == "sequential":
                await self._sequential()
            else:
                await self._side_by_side()
        except asyncio.CancelledError:
            run.state = "stopped"
            run.current = None
            for slot in self._slots():
                try:
                    await slot.queue.stop()
                except AppError:
                    log.warning("Could not stop %s after the comparison", slot.label)
            run.changed()
            raise
        except AppError as exc:
            run.state, run.error, run.current = "failed", exc.user_message, None
            run.changed()
            return
        run.state, run.current = "done", None
        run.changed()

    def _slots(self) -> list[AvatarSlot]:
        plan = self.run.plan
        if plan.mode == "sequential":
            return [self._runtime.slot(plan.slot)] if plan.slot < len(self._runtime.slots) else []
        return self._runtime.slots[: len(plan.voices)]

    async def _sequential(self) -> None:
        slot = self._runtime.ensure_slot(self.run.plan.slot)
        for label in self.run.labels:
            await with_voice(slot, self.run.voice_of(label))
            for take in [t for t in self.run.takes if t.label == label]:
                await self._say(slot, take)

    async def _side_by_side(self) -> None:
        slots: dict[str, AvatarSlot] = {}
        for index, label in enumerate(self.run.labels):
            slots[label] = self._runtime.ensure_slot(index)
        await asyncio.gather(
            *(with_voice(slot, self.run.voice_of(label)) for label, slot in slots.items())
        )
        for take in self.run.takes:
            await self._say(slots[take.label], take)

    async def _say(self, slot: AvatarSlot, take: AbTake) -> None:
        run = self.run
        await wait_idle(slot, LINE_TIMEOUT_S)  # lines sent from elsewhere meanwhile
        run.current = take.take
        run.changed()
        batch = slot.speaker.say(take.text)
        items = [i.item_id for i in batch.items]
        finished = await wait_items(slot, items, LINE_TIMEOUT_S)
        row_id = next((i.row_id for i in finished.values() if i.row_id is not None), None)
        if row_id is not None:
            self._runtime.store.link_ab_take(run.run_id, take.take, row_id)
            run.takes[take.take] = replace(run.takes[take.take], row_id=row_id)
        run.current = None
        run.changed()


async def wait_items(slot: AvatarSlot, item_ids: Sequence[int], timeout_s: float) -> dict[int, Any]:
    """Until every item of ``item_ids`` finished on ``slot``'s queue (or ``timeout_s``): the
    items as last seen."""
    queue = slot.queue
    seen: dict[int, QueueItem] = {i: item for i in item_ids if (item := queue.item(i)) is not None}
    wanted = set(item_ids)
    done = asyncio.Event()

    def check() -> None:
        if all(i in seen and seen[i].state.finished for i in wanted):
            done.set()

    def on_change(change: QueueChange) -> None:
        item = change.item
        if item is not None and item.item_id in wanted:
            seen[item.item_id] = item
            check()

    unsubscribe = queue.subscribe(on_change)
    try:
        check()
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        except TimeoutError:
            log.warning("A/B: a line was not finished within %.0f s", timeout_s)
    finally:
        unsubscribe()
    return seen


async def wait_idle(slot: AvatarSlot, timeout_s: float) -> None:
    """Until ``slot``'s queue has nothing waiting or on its way: a take must not wait behind
    other lines (its start latency would measure the queue), and a voice change would drop
    them."""
    queue = slot.queue
    if all(item.state.finished for item in queue.items):
        return
    idle = asyncio.Event()

    def on_change(_change: QueueChange) -> None:
        if all(item.state.finished for item in queue.items):
            idle.set()

    unsubscribe = queue.subscribe(on_change)
    try:
        await asyncio.wait_for(idle.wait(), timeout_s)
    except TimeoutError:
        raise AbError(
            f"{slot.label} still had lines to say after {timeout_s:g} s; stop it or wait, "
            "then run the comparison again."
        ) from None
    finally:
        unsubscribe()


async def with_voice(slot: AvatarSlot, voice_id: str) -> None:
    """``slot`` live and speaking with ``voice_id``: its session started with it, or the live
    session's voice changed once what it was saying is finished (a change drops what waits)."""
    if slot.controller.state is SessionState.LIVE:
        await wait_idle(slot, LINE_TIMEOUT_S)
        if slot.queue.voice_id != voice_id:
            await slot.queue.change_voice(voice_id)
        return
    if slot.controller.state.busy:
        await wait_state(slot, SessionState.LIVE, LIVE_TIMEOUT_S)
        await with_voice(slot, voice_id)
        return
    slot.start_session(slot.session_request({"voice_id": voice_id}))
    await wait_state(slot, SessionState.LIVE, LIVE_TIMEOUT_S)


async def wait_state(slot: AvatarSlot, state: SessionState, timeout_s: float) -> None:
    """Until ``slot``'s session is in ``state``; :class:`AbError` with the reason when it
    failed or ended instead, or took too long."""
    stops = {state, SessionState.FAILED, SessionState.ENDED}
    reached = asyncio.Event()

    def on_snapshot(snap: SessionSnapshot) -> None:
        if snap.state in stops:
            reached.set()

    unsubscribe = slot.controller.subscribe(on_snapshot)
    try:
        if slot.controller.state not in stops:
            try:
                await asyncio.wait_for(reached.wait(), timeout_s)
            except TimeoutError:
                raise AbError(f"{slot.label} did not go live within {timeout_s:g} s.") from None
    finally:
        unsubscribe()
    snap = slot.controller.snapshot
    if snap.state is not state:
        why = " ".join(p for p in (snap.reason, snap.detail) if p) or snap.state.value
        raise AbError(f"{slot.label}: the session is {snap.state.value}: {why}")


__all__ = [
    "AbPlan",
    "AbResult",
    "AbRun",
    "AbRunner",
    "export_csv",
    "results",
    "summary",
]
