"""1. Dispatch: task POSTs through ``AvaturnClient`` vs a new client per call vs bare httpx.

The simulator runs in its own process, so its CPU time is not in this process or its GIL.
Every variant sends its tasks one at a time (the speech queue keeps one request in flight),
each timed from the call to the parsed answer. The three variants are interleaved in blocks of
ten tasks and rounds rotate their order. The ratio compares tasks/s (median over rounds); the
overhead compares the median per-task latencies of ours and bare httpx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pydantic

from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.services.client import AvaturnClient
from bench.common import API_KEY, Figure, median, percentile, rounded, simulator_process

#: The text of every task (a typical sentence).
TEXT = "Welcome, everyone, to the launch of our new product line."


class _Answer(pydantic.BaseModel):
    task_id: str


class PerCallClient:
    """The backend example's pattern, written afresh: a new ``httpx.AsyncClient`` per call."""

    def __init__(self, api_key: str, base_url: str) -> None:
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.base_url = base_url

    async def say(self, session_id: str, text: str) -> str:
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{self.base_url}/api/v1/sessions/{session_id}/tasks",
                json={"text": text},
                headers=self.headers,
            )
            return _Answer.model_validate(r.json()).task_id


Sender = Callable[[str], Awaitable[Any]]


async def _timed(send: Sender, count: int, out: list[float]) -> float:
    """Send ``count`` tasks one after another; per-task seconds into ``out``; total seconds."""
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        await send(TEXT)
        out.append(time.perf_counter() - t0)
    return time.perf_counter() - start


async def _measure(base_url: str, tasks: int, rounds: int, block: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
    async with (
        httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10.0)) as app_http,
        httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10.0)) as bare_http,
    ):
        client = AvaturnClient(app_http, api_key=API_KEY, base_url=base_url)
        session = await client.create_session(
            SessionCreate(user_absent_timeout=86_400, max_duration=86_400)
        )
        sid = session.session_id
        per_call = PerCallClient(API_KEY, base_url)
        bare_url = f"{base_url}/api/v1/sessions/{sid}/tasks"
        bare_headers = {"Authorization": f"Bearer {API_KEY}"}

        async def bare(text: str) -> str:
            r = await bare_http.post(bare_url, json={"text": text}, headers=bare_headers)
            r.raise_for_status()
            task_id: str = r.json()["task_id"]
            return task_id

        senders: dict[str, Sender] = {
            "client": lambda text: client.add_task(sid, text),
            "per_call": lambda text: per_call.say(sid, text),
            "bare": bare,
        }
        # warm up every path (connections, imports, caches)
        for send in senders.values():
            await _timed(send, 20, [])

        names = list(senders)
        latencies: dict[str, list[float]] = {n: [] for n in names}
        totals: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % 3 :] + names[: r % 3]
            spent = dict.fromkeys(names, 0.0)
            for _ in range(0, tasks, block):
                for name in order:
                    spent[name] += await _timed(senders[name], block, latencies[name])
            for name in names:
                totals[name].append(spent[name])
        await client.terminate_session(sid)

    per_round_ratio = [p / c for p, c in zip(totals["per_call"], totals["client"], strict=True)]
    per_round_overhead = [c / b - 1 for c, b in zip(totals["client"], totals["bare"], strict=True)]
    variants = {
        name: {
            "tasks_per_s": tasks / median(totals[name]),
            "p50_ms": percentile(latencies[name], 50) * 1000,
            "p99_ms": percentile(latencies[name], 99) * 1000,
            "mean_ms": sum(latencies[name]) / len(latencies[name]) * 1000,
        }
        for name in names
    }
    return {
        "tasks_per_round": tasks,
        "rounds": rounds,
        "block": block,
        "variants": variants,
        "ratio_per_round": per_round_ratio,
        "overhead_per_round": per_round_overhead,
        "ratio": median(per_round_ratio),
        "overhead_total_time": median(per_round_overhead),
        # the key: per-task overhead from the median latencies (robust to scheduler outliers)
        "overhead": variants["client"]["p50_ms"] / variants["bare"]["p50_ms"] - 1,
    }


def run(quick: bool) -> list[Figure]:
    tasks, rounds = (100, 2) if quick else (500, 5)
    with simulator_process() as base_url:
        data = asyncio.run(_measure(base_url, tasks, rounds, block=10))
    v = data["variants"]

    def line(name: str) -> str:
        d = v[name]
        return f"{d['tasks_per_s']:.0f}/s p50 {d['p50_ms']:.2f} p99 {d['p99_ms']:.2f} ms"

    return [
        Figure(
            "dispatch_ratio_vs_per_call_client",
            rounded(data["ratio"]),
            ">= 3",
            "x",
            f"ours {line('client')}; per-call {line('per_call')}",
            data,
        ),
        Figure(
            "dispatch_overhead_vs_bare_httpx",
            rounded(data["overhead"]),
            "<= 10%",
            "ratio",
            f"bare {line('bare')}; total-time overhead {data['overhead_total_time']:+.1%}",
        ),
    ]
