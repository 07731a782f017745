"""5. Send -> speaking: what the app adds between the user's send and the avatar starting.

Child process: the app's Shell over a simulator in its own process, a live session whose page
is the viewer. One line at a time, on an idle queue:

* app send i: ``U_i`` = just before the composer's queue call (Ctrl+Enter); the line is then
  chunked, logged, queued and posted by the app; ``S_i`` = the simulator's start of that phrase.
* bare send j, interleaved: ``P_j`` = just before a bare pooled ``httpx`` POST of the same body
  from the same event loop; ``S_j`` its phrase's start.

``S`` comes from the simulator's snapshot (``started_at``, relative to session creation), put
on this process's clock: both use the machine's monotonic clock, and the session's origin is
pinned by bracketing snapshot requests (``t0 <= now <= t1`` with ``now = origin + age_s``).
The network and simulator part is ``B = median_j(S_j - P_j)``; the app overhead of send i is
``(S_i - U_i) - B``, reported at p50 / p99 / max. Each send waits for its phrase to end first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import API_KEY, emit_result, median, percentile
from bench.qtapp import app_shell, go_live, run_async, start_qt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--sends", type=int, default=200)
    args = parser.parse_args()
    app = start_qt()
    store_path = Path(tempfile.mkdtemp(prefix="avaturn-bench-speak-")) / "tasklog.sqlite3"
    left: dict[str, float] = {}  # request hook: when each task POST left (by send number)
    current = {"send": -1}

    async def on_request(request: Any) -> None:
        if request.method == "POST" and request.url.path.endswith("/tasks"):
            left.setdefault(str(current["send"]), time.monotonic())

    async def body() -> dict[str, Any]:
        import httpx

        from avaturn_desktop.core.events import AvatarEndedSpeakingPhrase
        from avaturn_desktop.core.queue import ItemState

        async with app_shell(args.api_base, store_path, on_request=on_request) as parts:
            session_id = await go_live(parts.shell)
            speaking = parts.speaking
            composer = speaking.composer
            ended: set[str] = set()
            wake = asyncio.Event()

            def on_event(event: object) -> None:
                if isinstance(event, AvatarEndedSpeakingPhrase) and event.phrase_id:
                    ended.add(event.phrase_id)
                    wake.set()

            parts.shell.stage.event.connect(on_event)
            done_items: dict[int, Any] = {}

            def on_change(change: Any) -> None:
                item = change.item
                if item is not None and item.state.finished:
                    done_items[item.item_id] = item
                    wake.set()

            speaking.queue.subscribe(on_change)

            async def until(predicate: Any) -> None:
                async with asyncio.timeout(30):
                    while not predicate():
                        wake.clear()
                        await wake.wait()

            app_sends: list[tuple[float, str, str]] = []  # (U, task_id, send number)
            spoken_before_ack = 0
            queue_calls: list[float] = []  # how long the composer's queue call itself took
            bare_sends: list[tuple[float, str]] = []  # (P, task_id)
            url = f"{parts.base_url}/api/v1/sessions/{session_id}/tasks"
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                timeout=httpx.Timeout(10.0),
            ) as bare:
                for i in range(args.sends + 5):
                    text = f"Line {i}: thank you all for coming."
                    current["send"] = i
                    composer.editor.setPlainText(text)
                    u = time.monotonic()
                    if not composer.queue_text():
                        raise RuntimeError(f"send {i} was not queued")
                    queue_calls.append((time.monotonic() - u) * 1000)
                    (item,) = [it for it in speaking.queue.items if it.text == text][-1:]
                    await until(lambda item=item: item.item_id in done_items)
                    final = done_items[item.item_id]
                    if final.state is not ItemState.SPOKEN:
                        raise RuntimeError(f"send {i}: {final.state} ({final.reason})")
                    if final.task_id is None:  # its phrase ended before its answer came
                        spoken_before_ack += 1
                    row_id = final.row_id
                    await until(lambda row_id=row_id: parts.store.get(row_id).task_id is not None)
                    await until(lambda: not composer.pending)
                    if i >= 5:  # the first five warm up
                        app_sends.append((u, parts.store.get(row_id).task_id, str(i)))
                    p = time.monotonic()
                    r = await bare.post(url, json={"text": text}, headers=headers)
                    r.raise_for_status()
                    task_id = r.json()["task_id"]
                    await until(lambda task_id=task_id: task_id in ended)
                    if i >= 5:
                        bare_sends.append((p, task_id))
                origin, uncertainty = await _origin(bare, parts.base_url, session_id)
                snap = (await bare.get(f"{parts.base_url}/_sim/state")).json()
            (session,) = [s for s in snap["sessions"] if s["session_id"] == session_id]
            tasks = {t["task_id"]: t for t in session["tasks"]}

        def start_of(task_id: str) -> float:
            return origin + float(tasks[task_id]["started_at"])

        app_total = [(start_of(t) - u) * 1000 for u, t, _ in app_sends]
        bare_total = [(start_of(t) - p) * 1000 for p, t in bare_sends]
        network = median(bare_total)
        overhead = [a - network for a in app_total]
        before_wire = [(left[n] - u) * 1000 for u, _, n in app_sends if n in left]
        return {
            "sends": len(app_sends),
            "overhead_p50_ms": percentile(overhead, 50),
            "overhead_p99_ms": percentile(overhead, 99),
            "overhead_max_ms": max(overhead),
            "app_send_to_start_p50_ms": percentile(app_total, 50),
            "app_send_to_start_p99_ms": percentile(app_total, 99),
            "bare_post_to_start_p50_ms": network,
            "bare_post_to_start_p99_ms": percentile(bare_total, 99),
            "app_send_to_request_p50_ms": percentile(before_wire, 50),
            "app_send_to_request_p99_ms": percentile(before_wire, 99),
            "queue_call_p50_ms": percentile(queue_calls[5:], 50),
            "queue_call_p99_ms": percentile(queue_calls[5:], 99),
            "clock_uncertainty_ms": uncertainty * 1000,
            "spoken_before_ack": spoken_before_ack,
        }

    emit_result(run_async(app, body))
    return 0


async def _origin(http: Any, base_url: str, session_id: str) -> tuple[float, float]:
    """The session's creation on this process's monotonic clock, and its +/- uncertainty."""
    low, high = -float("inf"), float("inf")
    for _ in range(40):
        t0 = time.monotonic()
        snap = (await http.get(f"{base_url}/_sim/state")).json()
        t1 = time.monotonic()
        (session,) = [s for s in snap["sessions"] if s["session_id"] == session_id]
        age = float(session["age_s"])
        low = max(low, t0 - age - 5e-5)  # age_s is rounded to 0.1 ms
        high = min(high, t1 - age + 5e-5)
    if low > high:
        raise RuntimeError("the simulator's clock is not this machine's monotonic clock")
    return (low + high) / 2, (high - low) / 2


if __name__ == "__main__":
    sys.exit(main())
