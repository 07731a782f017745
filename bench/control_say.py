"""9. Control API say → task POST: the app's own time between a ``say`` request arriving over
the control API and its task POST leaving for the service.

Child process: the app as it builds itself (``app.assemble``) with the control API on a free
port, over a simulator in its own process, with a live session. One line at a time, on an
idle queue: a plain ``httpx`` client in a worker thread sends ``POST /api/v1/say`` (``A_i``,
taken by its request hook, as the request goes to the wire), and the runtime's request hook
notes when that line's task POST leaves (``L_i``). Both read ``time.perf_counter``.
``L_i - A_i`` counts the loopback hop too, so it is an upper bound of the app's own time.
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--sends", type=int, default=200)
    args = parser.parse_args()
    app = start_qt()
    store_path = Path(tempfile.mkdtemp(prefix="avaturn-bench-control-")) / "tasklog.sqlite3"
    left: dict[str, float] = {}

    async def on_request(request: Any) -> None:
        if request.method == "POST" and request.url.path.endswith("/tasks"):
            text = request.content.decode("utf-8", "replace")
            left.setdefault(text, time.perf_counter())

    async def body() -> dict[str, Any]:
        import httpx

        async with app_shell(
            args.api_base, store_path, on_request=on_request, control_port=0
        ) as parts:
            await go_live(parts.shell)
            control = parts.app.control
            token = control.token()
            queue = parts.speaking.queue
            loop = asyncio.get_running_loop()
            written: list[float] = []
            client = httpx.Client(
                base_url=control.url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
                # stamped as the request goes to the wire, after the client built it
                event_hooks={"request": [lambda _request: written.append(time.perf_counter())]},
            )
            overheads: list[float] = []

            def say(text: str) -> float:
                answer = client.post("/api/v1/say", json={"text": text})
                answer.raise_for_status()
                return written[-1]

            try:
                for i in range(args.sends + 5):
                    text = f"Line {i} from the control API."
                    sent = await loop.run_in_executor(None, say, text)
                    key = next(k for k in list(left) if text in k) if left else None
                    deadline = loop.time() + 10
                    while key is None:
                        if loop.time() > deadline:
                            raise RuntimeError(f"send {i}: no task POST left")
                        await asyncio.sleep(0.001)
                        key = next((k for k in list(left) if text in k), None)
                    if i >= 5:
                        overheads.append((left[key] - sent) * 1000)
                    deadline = loop.time() + 30
                    while any(not it.state.finished for it in queue.items):
                        if loop.time() > deadline:
                            raise RuntimeError(f"send {i}: the line did not finish")
                        await asyncio.sleep(0.005)
            finally:
                await loop.run_in_executor(None, client.close)
        return {
            "sends": len(overheads),
            "p50_ms": percentile(overheads, 50),
            "p99_ms": percentile(overheads, 99),
            "max_ms": max(overheads),
        }

    emit_result(run_async(app, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
