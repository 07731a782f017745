"""9. Control API say → task POST: the app's own time between a ``say`` request arriving over
the control API and its task POST leaving for the service.

Child process: the app as it builds itself (``app.assemble``) with the control API on a free
port, over a simulator in its own process, with a live session. The caller is a process of its
own (``bench.say_client``), as a Stream Deck plugin or a script is: it sends ``POST
/api/v1/say`` and notes when the request goes to the wire (``A_i``); the runtime's request
hook notes when that line's task POST leaves (``L_i``). Both read ``time.perf_counter``, the
system's monotonic clock, the same in both processes. ``L_i - A_i`` counts the loopback hop
too, so it is an upper bound of the app's own time. One line at a time, on an idle queue: the
next text goes to the caller once the line before has finished; the app waits for that on
events, never by polling its loop.

(Until 2026-11-30 the caller was a thread inside the app's process, and the app polled its own
loop every millisecond for the POST: the caller then took the interpreter lock from the GUI
thread at the very moment measured, and the polling woke the loop a thousand times a second.)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit_result, percentile
from bench.qtapp import app_shell, go_live, run_async, start_qt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--sends", type=int, default=200)
    args = parser.parse_args()
    app = start_qt()
    store_path = Path(tempfile.mkdtemp(prefix="avaturn-bench-control-")) / "tasklog.sqlite3"
    left: dict[str, float] = {}

    waiting: list[str] = []  # the text whose task POST is awaited
    posted = asyncio.Event()

    async def on_request(request: Any) -> None:
        if request.method == "POST" and request.url.path.endswith("/tasks"):
            text = request.content.decode("utf-8", "replace")
            left.setdefault(text, time.perf_counter())
            if waiting and waiting[0] in text:
                posted.set()

    async def body() -> dict[str, Any]:
        async with app_shell(
            args.api_base, store_path, on_request=on_request, control_port=0
        ) as parts:
            await go_live(parts.shell)
            control = parts.app.control
            queue = parts.speaking.queue
            idle = asyncio.Event()

            def on_change(_change: Any) -> None:
                if all(it.state.finished for it in queue.items):
                    idle.set()

            queue.subscribe(on_change)
            caller = subprocess.Popen(  # noqa: ASYNC220 (a spawn before the measurement)
                [sys.executable, "-m", "bench.say_client", control.url, control.token()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert caller.stdin is not None and caller.stdout is not None
            texts = [f"Line {i} from the control API." for i in range(args.sends + 5)]
            try:
                for i, text in enumerate(texts):
                    waiting[:] = [text]
                    posted.clear()
                    idle.clear()
                    caller.stdin.write(text + "\n")
                    caller.stdin.flush()
                    try:
                        await asyncio.wait_for(posted.wait(), 10)
                    except TimeoutError:
                        raise RuntimeError(f"send {i}: no task POST left") from None
                    try:
                        await asyncio.wait_for(idle.wait(), 30)
                    except TimeoutError:
                        raise RuntimeError(f"send {i}: the line did not finish") from None
            finally:
                out, _ = caller.communicate("\n", timeout=30)
            sent = [float(line) for line in out.split()]
            if len(sent) != len(texts):
                raise RuntimeError(f"the caller noted {len(sent)} of {len(texts)} says")
            stamps = {text: next(t for k, t in left.items() if text in k) for text in texts}
            timed = [((stamps[t] - a) * 1000, a) for t, a in zip(texts, sent, strict=True)][5:]
            overheads = [ms for ms, _ in timed]
        return {
            "sends": len(overheads),
            "caller": "a process of its own (bench.say_client)",
            "p50_ms": percentile(overheads, 50),
            "p99_ms": percentile(overheads, 99),
            "max_ms": max(overheads),
            # the slowest says, each with when it was written (the monotonic clock): what the
            # app did then shows in a sampler's or ``perf``'s record of the same run
            "worst_says_ms_at": [(round(ms, 2), round(at, 4)) for ms, at in sorted(timed)[-5:]],
        }

    emit_result(run_async(app, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
