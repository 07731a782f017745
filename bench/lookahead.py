"""11. The look-ahead's gap: the silence between the end of one line and the start of the next.

The speech queue hands the service only the line speaking and the next; the rest waits in the
app, editable. This measures what that costs the audience, against posting every line at once.

Child process: the app's Shell over a simulator in its own process (``--api-base``), a live
session whose page is the viewer (its speaking events pace the look-ahead, as in use). Two
runs of ``--lines`` short lines each on the same session: first with the app's look-ahead,
then with the look-ahead off (every line posted the moment it is queued: the floor). The gaps
come from the simulator's own timestamps (``ended_at`` of line *n* to ``started_at`` of line
*n + 1*), so the figure is what the service did, not what the app believes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import API_KEY, emit_result, median, percentile
from bench.qtapp import app_shell, go_live, run_async, start_qt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--lines", type=int, default=100)
    args = parser.parse_args()
    app = start_qt()
    store_path = Path(tempfile.mkdtemp(prefix="avaturn-bench-lookahead-")) / "tasklog.sqlite3"

    async def body() -> dict[str, Any]:
        import httpx

        async with app_shell(args.api_base, store_path) as parts:
            session_id = await go_live(parts.shell)
            queue = parts.app.runtime.slot(0).queue
            lookahead = queue.lookahead
            results: dict[str, Any] = {"lookahead": lookahead, "lines": args.lines}
            async with httpx.AsyncClient(
                base_url=args.api_base, headers={"Authorization": f"Bearer {API_KEY}"}
            ) as http:
                for name, depth in (("with_lookahead", lookahead), ("all_at_once", None)):
                    queue.lookahead = depth
                    texts = [f"{name} line {n} of the gap run." for n in range(args.lines)]
                    await _say_all(queue, texts)
                    tasks = await _tasks(http, session_id, set(texts))
                    gaps = [
                        (b["started_at"] - a["ended_at"]) * 1000
                        for a, b in itertools.pairwise(tasks)
                    ]
                    # how long after a line ended the line after next reached the service
                    reply = [
                        (c["queued_at"] - a["ended_at"]) * 1000
                        for a, c in zip(tasks, tasks[2:], strict=False)
                    ]
                    results[name] = {
                        "spoken": sum(t["status"] == "spoken" for t in tasks),
                        "gap_p50_ms": median(gaps),
                        "gap_p99_ms": percentile(gaps, 99),
                        "gap_max_ms": max(gaps),
                        "most_on_service": _most_on_service(tasks),
                        "gaps_over_20ms": sum(g > 20 for g in gaps),
                        "end_to_next_post_p50_ms": median(reply),
                        "end_to_next_post_max_ms": max(reply),
                    }
            queue.lookahead = lookahead
            ours, floor = results["with_lookahead"], results["all_at_once"]
            results["extra_gap_p99_ms"] = ours["gap_p99_ms"] - floor["gap_p99_ms"]
            return results

    emit_result(run_async(app, body))
    return 0


async def _say_all(queue: Any, texts: list[str]) -> None:
    """Queue ``texts`` at once and wait until each has ended."""
    done = asyncio.Event()
    left = set()

    def on_change(change: Any) -> None:
        item = change.item
        if item is not None and item.item_id in left and item.state.finished:
            left.discard(item.item_id)
            if not left:
                done.set()

    unsubscribe = queue.subscribe(on_change)
    try:
        left.update(item.item_id for item in queue.enqueue(texts))
        await asyncio.wait_for(done.wait(), 300)
    finally:
        unsubscribe()


async def _tasks(http: Any, session_id: str, texts: set[str]) -> list[dict[str, Any]]:
    state = (await http.get("/_sim/state")).json()
    (session,) = [s for s in state["sessions"] if s["session_id"] == session_id]
    tasks = [t for t in session["tasks"] if t["text"] in texts]
    return sorted(tasks, key=lambda t: t["started_at"] or 0.0)


def _most_on_service(tasks: list[dict[str, Any]]) -> int:
    """The most lines the service held at once (queued or speaking), from its timestamps."""
    moments = sorted(
        [(t["queued_at"], 1) for t in tasks]
        + [(t["ended_at"], -1) for t in tasks if t["ended_at"] is not None],
        key=lambda m: (m[0], m[1]),
    )
    held = most = 0
    for _, change in moments:
        held += change
        most = max(most, held)
    return most


if __name__ == "__main__":
    sys.exit(main())
