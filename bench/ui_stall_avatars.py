"""UI stall with two avatars side by side: the longest event-loop stall while two live sessions
say 500 lines each, measured as ``bench/ui_stall.py`` measures it (a 5 ms precise timer in the
GUI loop; a stall is the gap between two ticks minus the interval).

The simulator speaks 1,200 characters a second (a line of ~60 characters in 50 ms, about 80
times faster than a person), which keeps each page's events under the bridge's limit of 100
messages a second (``ui/web/bridge.py``): faster, and the bridge drops speech events by design,
so lines are never seen spoken.

Child process: the app as it builds itself (``app.assemble``) over a simulator in its own
process, the second avatar made as the window's "Add avatar" makes it (its own page, session
and dock), both sessions live with different voices. Each avatar's queue gets one text of N
sentences (queued through each slot's speaker, as the composer's "All avatars" does), with the
Metrics dock in front so its plots are drawn while the lines stream. The run ends when every
item of both queues is finished. Stalls are reported for the whole run and by phase: the two
queueing calls, and the sending / speaking stream after them.
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
from bench.ui_stall import INTERVAL_MS, StallMeter


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--lines", type=int, default=500, help="per avatar")
    parser.add_argument("--settle-s", type=float, default=180.0, help="give up waiting after")
    parser.add_argument(
        "--no-plots", action="store_true", help="leave the log dock in front (plots not drawn)"
    )
    args = parser.parse_args()
    app = start_qt()
    store_path = Path(tempfile.mkdtemp(prefix="avaturn-bench-avatars-")) / "tasklog.sqlite3"

    async def body() -> dict[str, Any]:
        from avaturn_desktop.core.catalog import VOICES
        from avaturn_desktop.core.queue import ItemState
        from avaturn_desktop.core.session_state import SessionState

        async with app_shell(args.api_base, store_path) as parts:
            shell = parts.shell
            runtime = parts.app.runtime
            await go_live(shell)
            second = shell.bench.add_avatar()
            if second is None:
                raise RuntimeError("the second avatar could not be added")
            second.start_session(second.session_request({"voice_id": VOICES[3].id}))
            done_live = asyncio.Event()
            second.controller.subscribe(
                lambda s: s.state in (SessionState.LIVE, SessionState.FAILED) and done_live.set()
            )
            if second.controller.state is not SessionState.LIVE:
                await asyncio.wait_for(done_live.wait(), 60)
            if second.controller.state is not SessionState.LIVE:
                raise RuntimeError(
                    f"the second session did not go live: {second.controller.snapshot}"
                )
            if args.no_plots:
                shell.window.docks["metrics"].hide()
            else:
                shell.window.docks["metrics"].raise_()
            slots = list(runtime.slots)
            total = args.lines * len(slots)
            done = asyncio.Event()
            finished: dict[tuple[int, int], ItemState] = {}
            reasons: dict[str, int] = {}

            def watcher(index: int) -> Any:
                def on_change(change: Any) -> None:
                    item = change.item
                    if item is not None and item.state.finished:
                        key = (index, item.item_id)
                        if key not in finished and item.state is not ItemState.SPOKEN:
                            why = f"{item.state.value}: {item.reason}"
                            reasons[why] = reasons.get(why, 0) + 1
                        finished[key] = item.state
                        if len(finished) >= total:
                            done.set()

                return on_change

            for slot in slots:
                slot.queue.subscribe(watcher(slot.index))
            text = "\n".join(
                f"Line {i}: good evening, everyone, and welcome to the launch."
                for i in range(args.lines)
            )
            meter = StallMeter()
            meter.start()
            await asyncio.sleep(0.2)  # the idle loop first, for reference
            t_queue = time.perf_counter()
            for slot in slots:
                slot.speaker.say(text)
            t_queued = time.perf_counter()
            finished_all = True
            try:
                await asyncio.wait_for(done.wait(), timeout=args.settle_s)
            except TimeoutError:
                finished_all = False
            t_done = time.perf_counter()
            stuck: dict[str, int] = {}
            for slot in slots:
                for it in slot.queue.items:
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
            metrics = shell.bench.metrics
            pages = [shell.bench.stages.view_of(slot.index) for slot in slots]
            return {
                "bridge_dropped": sum(getattr(v.bridge, "dropped", 0) for v in pages),
                "sessions": [
                    {
                        "slot": slot.index,
                        "state": slot.controller.state.value,
                        "reason": slot.controller.snapshot.reason,
                        "detail": slot.controller.snapshot.detail,
                    }
                    for slot in slots
                ],
                "avatars": len(slots),
                "lines_per_avatar": args.lines,
                "spoken": states.count(ItemState.SPOKEN),
                "not_spoken": len(states) - states.count(ItemState.SPOKEN),
                "not_spoken_reasons": dict(reasons),
                "all_finished": finished_all,
                "unfinished_by_state": stuck,
                "log_rows": parts.store.count(),
                "plotted_latencies": sum(len(v) for v in metrics.latencies.values()),
                "metrics_visible": metrics.isVisible(),
                "interval_ms": INTERVAL_MS,
                "ticks": len(meter.ticks),
                "run_s": t_done - t_queue,
                "queue_calls_ms": (t_queued - t_queue) * 1000,
                **stall_figures(stalls, idle, queueing, stream),
                "worst_stalls_with_gui_cpu_ms": meter.worst_ms(),
                "gui_thread_id": threading.get_native_id(),
            }

    emit_result(run_async(app, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
