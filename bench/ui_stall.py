"""2. UI stall: the longest event-loop stall while 1,000 tasks are queued, sent, logged and
spoken, measured by a 5 ms timer in the GUI loop (stall = gap between ticks - interval).

Child process: the app's Shell (stage page, session panel, composer, queue and log docks) over
a simulator in its own process (``--api-base``), a live session whose page is the viewer, so
every phrase's speaking events come back through the page and the bridge. The tasks are pasted
into the composer as one text of 1,000 sentences and queued (Ctrl+Enter); the run ends when
every item is spoken. Stalls are reported for the whole run and by phase: the queueing call
itself, and the sending / speaking stream after it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import emit_result, stall_figures
from bench.qtapp import app_shell, go_live, run_async, start_qt

INTERVAL_MS = 5


class StallMeter:
    """A precise Qt timer; each gap beyond its interval is a stall of the GUI thread."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self.ticks: list[float] = []
        #: The GUI thread's own CPU time at each tick: what it ran during a gap, to tell a
        #: long loop turn (CPU about the gap) from a thread waiting for a core (CPU near 0).
        self.cpu: list[float] = []

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        self.cpu.append(time.thread_time())

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.cpu = [time.thread_time()]
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self._tick()

    def _gaps(self) -> list[tuple[float, float, float]]:
        """Each gap between ticks: its stall beyond the interval and the GUI thread's CPU time
        in it (ms), and when it ended (``time.perf_counter()``)."""
        return [
            (max(0.0, (b - a) * 1000 - INTERVAL_MS), (cb - ca) * 1000, b)
            for a, b, ca, cb in zip(
                self.ticks, self.ticks[1:], self.cpu, self.cpu[1:], strict=False
            )
        ]

    def worst_ms(self, count: int = 5) -> list[tuple[float, float, float]]:
        """The ``count`` longest stalls: each its length and the GUI thread's CPU time in its
        gap (ms), and when the gap ended (``time.perf_counter()``, the system's monotonic
        clock: ``perf record -k CLOCK_MONOTONIC`` lines up with it)."""
        return [
            (round(s, 1), round(c, 1), round(t, 4)) for s, c, t in sorted(self._gaps())[-count:]
        ]

    def stalls_ms(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        """Stalls of the gaps that end within [start, end] (perf_counter seconds)."""
        return [stall for stall, _, ended in self._gaps() if start <= ended <= end]

    def cpu_ms(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        """The GUI thread's CPU time in each gap that ends within [start, end]."""
        return [cpu for _, cpu, ended in self._gaps() if start <= ended <= end]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--settle-s", type=float, default=120.0, help="give up waiting after")
    args = parser.parse_args()
    app = start_qt()
    store_path = Path(tempfile.mkdtemp(prefix="avaturn-bench-stall-")) / "tasklog.sqlite3"

    async def body() -> dict[str, Any]:
        from avaturn_desktop.core.queue import ItemState

        async with app_shell(args.api_base, store_path) as parts:
            await go_live(parts.shell)
            speaking = parts.speaking
            queue = speaking.queue
            done = asyncio.Event()
            finished: dict[int, ItemState] = {}
            reasons: dict[str, int] = {}

            def on_change(change: Any) -> None:
                item = change.item
                if item is not None and item.state.finished:
                    if item.item_id not in finished and item.state is not ItemState.SPOKEN:
                        why = f"{item.state.value}: {item.reason}"
                        reasons[why] = reasons.get(why, 0) + 1
                    finished[item.item_id] = item.state
                    if len(finished) >= args.tasks:
                        done.set()

            queue.subscribe(on_change)
            text = "\n".join(
                f"Line {i}: good evening, everyone, and welcome to the launch."
                for i in range(args.tasks)
            )
            composer = speaking.composer
            composer.editor.setPlainText(text)
            meter = StallMeter()
            meter.start()
            await asyncio.sleep(0.2)  # the idle loop first, for reference
            t_queue = time.perf_counter()
            if not composer.queue_text():
                raise RuntimeError("the composer did not queue the text")
            t_queued = time.perf_counter()
            finished_all = True
            try:
                await asyncio.wait_for(done.wait(), timeout=args.settle_s)
            except TimeoutError:  # reported: which items never finished
                finished_all = False
            t_done = time.perf_counter()
            stuck: dict[str, int] = {}
            for it in queue.items:
                if not it.state.finished:
                    stuck[it.state.value] = stuck.get(it.state.value, 0) + 1
            await asyncio.sleep(0.2)
            meter.stop()
            states = list(finished.values())
            stalls = meter.stalls_ms()
            idle = meter.stalls_ms(end=t_queue)
            first_after = next((t for t in meter.ticks if t >= t_queued), t_queued)
            queueing = meter.stalls_ms(t_queue, first_after)
            stream = meter.stalls_ms(first_after + 1e-9, t_done)
            return {
                "tasks": args.tasks,
                "spoken": states.count(ItemState.SPOKEN),
                "not_spoken": len(states) - states.count(ItemState.SPOKEN),
                "not_spoken_reasons": reasons,
                "all_finished": finished_all,
                "unfinished_by_state": stuck,
                "log_rows": parts.store.count(),
                "interval_ms": INTERVAL_MS,
                "ticks": len(meter.ticks),
                "run_s": t_done - t_queue,
                "queue_call_ms": (t_queued - t_queue) * 1000,
                **stall_figures(stalls, idle, queueing, stream),
                "worst_stalls_with_gui_cpu_ms": meter.worst_ms(),
                "gui_thread_id": threading.get_native_id(),
            }

    emit_result(run_async(app, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
