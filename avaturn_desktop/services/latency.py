"""How fast each voice starts and how fast it speaks, from the task log (Qt-free).

Operators compare voices by two numbers the log already holds for every line that was sent:

* **start latency**: how long the avatar took to start a line once it could: from the request
  leaving (``sent_at``), or, when the avatar was still saying the line before (lines queued
  back to back), from the end of that line, to the avatar starting to speak it
  (``started_at``); summarised per voice as the count, the median (p50), the 95th percentile
  (p95) and the mean, in milliseconds. For a line sent to an idle avatar this is exactly the
  send → speaking latency the log panel shows per row; for a line that waited behind others,
  the raw send → speaking figure measures the queue, not the voice, and is given apart
  (``send_to_speaking``);
* **speaking rate**: characters per second of speech, over the lines the avatar finished
  (``spoken``): the characters of those lines over the seconds spent saying them.

The figures are computed from the log itself, never from a second record kept elsewhere, so
the window, ``GET /api/v1/metrics/latency`` and an exported log always agree. Percentiles are
the "inclusive" method of :func:`statistics.quantiles` (linear between the closest ranks), so
one line gives that line's latency for both p50 and p95.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from avaturn_desktop.services.tasklog import Timing


class TimingSource(Protocol):
    def timings(self, *, after_row: int = 0, since: float | None = None) -> list[Timing]: ...


def percentile(values: list[float], pct: float) -> float | None:
    """The ``pct``-th percentile of ``values`` (sorted or not); None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    if pct <= 0:
        return min(values)
    if pct >= 100:
        return max(values)
    return cuts[int(pct) - 1] if float(pct).is_integer() else cuts[round(pct) - 1]


def start_latencies_ms(timings: Iterable[Timing]) -> dict[int, float]:
    """Each started line's start latency (see the module docs), by row id: per session, in
    the order the lines started, from the later of its send and the previous line's end."""
    by_session: dict[str, list[Timing]] = {}
    for timing in timings:
        if timing.started_at is not None:
            by_session.setdefault(timing.session_id, []).append(timing)
    out: dict[int, float] = {}
    for rows in by_session.values():
        rows.sort(key=lambda t: (t.started_at, t.row_id))
        previous_end: float | None = None
        for timing in rows:
            started = timing.started_at
            assert started is not None
            free = timing.sent_at
            if previous_end is not None:
                free = max(free, min(previous_end, started))
            out[timing.row_id] = max(0.0, (started - free) * 1000.0)
            if timing.ended_at is not None:
                previous_end = timing.ended_at
    return out


@dataclass
class VoiceFigures:
    """One voice's figures (see the module docs); built up by :meth:`add`."""

    voice_id: str
    #: Start latencies (from when the avatar could start the line).
    latencies_ms: list[float] = field(default_factory=list)
    #: Raw send → speaking latencies (queue waits included).
    send_latencies_ms: list[float] = field(default_factory=list)
    #: Lines sent with this voice (started or not).
    sent: int = 0
    spoken_chars: int = 0
    spoken_s: float = 0.0
    slots: set[int] = field(default_factory=set)
    last_sent_at: float | None = None

    def add(self, timing: Timing, start_latency_ms: float | None = None) -> None:
        self.sent += 1
        latency = timing.latency_ms
        if latency is not None:
            self.send_latencies_ms.append(max(0.0, latency))
            self.latencies_ms.append(
                max(0.0, latency) if start_latency_ms is None else start_latency_ms
            )
        speaking = timing.speaking_s
        if speaking is not None and speaking > 0:
            self.spoken_chars += timing.chars
            self.spoken_s += speaking
        if timing.slot is not None:
            self.slots.add(timing.slot)
        self.last_sent_at = timing.sent_at

    @property
    def count(self) -> int:
        """Lines with a measured start latency."""
        return len(self.latencies_ms)

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies_ms, 50)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies_ms, 95)

    @property
    def mean_ms(self) -> float | None:
        return statistics.fmean(self.latencies_ms) if self.latencies_ms else None

    @property
    def speaking_rate_cps(self) -> float | None:
        """Characters per second over the lines finished; None before the first."""
        return self.spoken_chars / self.spoken_s if self.spoken_s > 0 else None

    def as_json(self) -> dict[str, Any]:
        """The per-voice object of ``GET /api/v1/metrics/latency``."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        rate = self.speaking_rate_cps
        return {
            "count": self.count,
            "sent": self.sent,
            "p50_ms": ms(self.p50_ms),
            "p95_ms": ms(self.p95_ms),
            "mean_ms": ms(self.mean_ms),
            "speaking_rate_cps": None if rate is None else round(rate, 2),
            "slots": sorted(self.slots),
            "send_to_speaking": {
                "p50_ms": ms(percentile(self.send_latencies_ms, 50)),
                "p95_ms": ms(percentile(self.send_latencies_ms, 95)),
            },
        }


def figures(timings: Iterable[Timing], *, slot: int | None = None) -> dict[str, VoiceFigures]:
    """Per voice id (lines logged without a voice count as ``""``), in first-seen order;
    only ``slot``'s lines when given."""
    rows = list(timings)
    starts = start_latencies_ms(rows)
    out: dict[str, VoiceFigures] = {}
    for timing in rows:
        if slot is not None and timing.slot != slot:
            continue
        voice = timing.voice_id or ""
        entry = out.get(voice)
        if entry is None:
            entry = out[voice] = VoiceFigures(voice)
        entry.add(timing, starts.get(timing.row_id))
    return out


def latency_json(
    store: TimingSource, *, slot: int | None = None, since: float | None = None
) -> dict[str, Any]:
    """``GET /api/v1/metrics/latency``: ``{"voices": {voice_id: {...}}}`` from the log (the
    lines sent at or after ``since``, of ``slot`` when given)."""
    per_voice = figures(store.timings(since=since), slot=slot)
    return {"voices": {voice: entry.as_json() for voice, entry in per_voice.items()}}
