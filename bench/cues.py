"""7. The show: the GUI loop's longest stall while a 200-cue script is opened in the cue list
and fired cue by cue, measured by a 5 ms timer in the GUI loop (as ``ui_stall``).

Child process: the app's Shell over a simulator in its own process (``--api-base``), a live
session whose page is the viewer. Phases: opening the script (parse, the cue list's rows), 200
GOs (one a loop turn, as fast as a presenter or a Stream Deck could ever press), and the stream
until every line was spoken; then the audience output is opened and the console's mirror is
refreshed (its grab of the stage is timed).

Beside each phase's longest stall, the most CPU time the GUI thread spent in one gap of the
timer (its work, where a stall also counts the time it waited for one of the shared cores).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit_result, percentile
from bench.qtapp import app_shell, go_live, run_async, start_qt
from bench.ui_stall import INTERVAL_MS, StallMeter


def script_text(cues: int) -> str:
    parts: list[str] = []
    for n in range(cues):
        if n % 10 == 0:
            parts.append(f"# Part {n // 10 + 1}\n")
        parts.append(
            f"// note for cue {n + 1}\n"
            f"Cue {n + 1}: good evening, everyone.\n"
            f"Welcome to part {n // 10 + 1} of the launch.\n"
        )
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--cues", type=int, default=200)
    parser.add_argument("--settle-s", type=float, default=120.0)
    args = parser.parse_args()
    app = start_qt()
    folder = Path(tempfile.mkdtemp(prefix="avaturn-bench-cues-"))
    store_path = folder / "tasklog.sqlite3"
    script = folder / "keynote.md"
    script.write_text(script_text(args.cues), encoding="utf-8")

    async def body() -> dict[str, Any]:
        from avaturn_desktop.core.queue import ItemState

        async with app_shell(args.api_base, store_path) as parts:
            await go_live(parts.shell)
            show = parts.shell.show_ui
            slot = parts.app.runtime.slot(0)
            lines = 2 * args.cues
            done = asyncio.Event()
            spoken: set[int] = set()
            finished: set[int] = set()

            def on_change(change: Any) -> None:
                item = change.item
                if item is not None and item.state.finished:
                    finished.add(item.item_id)
                    if item.state is ItemState.SPOKEN:
                        spoken.add(item.item_id)
                    if len(finished) >= lines:
                        done.set()

            slot.queue.subscribe(on_change)
            meter = StallMeter()
            meter.start()
            await asyncio.sleep(0.2)  # the idle loop first, for reference
            t_open = time.perf_counter()
            if not show.presenter.open_path(script):
                raise RuntimeError("the script did not open")
            t_opened = time.perf_counter()
            await asyncio.sleep(0.1)  # the cue list redraws (gathered)
            t_go = time.perf_counter()
            for _ in range(args.cues):
                if not show.presenter.go():
                    raise RuntimeError("GO was refused")
                await asyncio.sleep(0)
            t_fired = time.perf_counter()
            finished_all = True
            try:
                await asyncio.wait_for(done.wait(), timeout=args.settle_s)
            except TimeoutError:
                finished_all = False
            t_done = time.perf_counter()
            await asyncio.sleep(0.2)

            # the audience output: the stage moves, the console mirrors it
            slot.outputs.set_audience(open=True, screen=0, fullscreen=True)
            await asyncio.sleep(0.3)
            grabs: list[float] = []
            for _ in range(20):
                t = time.perf_counter()
                show.audience.update_mirror()
                grabs.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.01)
            slot.outputs.set_audience(open=False)
            await asyncio.sleep(0.2)
            meter.stop()
            stalls = meter.stalls_ms(end=t_done)
            opening = meter.stalls_ms(t_open, t_go)
            firing = meter.stalls_ms(t_go, t_fired + 0.05)
            stream = meter.stalls_ms(t_fired + 0.05, t_done)
            cpu = {
                "opening": meter.cpu_ms(t_open, t_go),
                "firing": meter.cpu_ms(t_go, t_fired + 0.05),
                "stream": meter.cpu_ms(t_fired + 0.05, t_done),
            }
            states = [c.state.value for c in slot.cues.cues()]
            return {
                "cues": args.cues,
                "lines": lines,
                "spoken": len(spoken),
                "all_finished": finished_all,
                "cue_states": {s: states.count(s) for s in set(states)},
                "interval_ms": INTERVAL_MS,
                "open_call_ms": (t_opened - t_open) * 1000,
                "fire_s": t_fired - t_go,
                "run_s": t_done - t_go,
                "max_stall_ms": max(stalls),
                "p99_stall_ms": percentile(stalls, 99),
                "stalls_over_16ms": sum(s >= 16 for s in stalls),
                "max_stall_opening_ms": max(opening, default=0.0),
                "max_stall_firing_ms": max(firing, default=0.0),
                "max_stall_stream_ms": max(stream, default=0.0),
                "worst_stalls_ms": sorted(stalls)[-5:],
                "worst_stalls_with_gui_cpu_ms": meter.worst_ms(),
                # the GUI thread's own work in a gap (a stall also counts waiting for a core)
                **{f"max_gap_cpu_{phase}_ms": max(ms, default=0.0) for phase, ms in cpu.items()},
                "gaps_over_8ms_cpu": sum(m > 8 for ms in cpu.values() for m in ms),
                "mirror_grab_p50_ms": percentile(grabs, 50),
                "mirror_grab_max_ms": max(grabs),
            }

    emit_result(run_async(app, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
