"""``python -m bench [--quick] [--json FILE] [--only NAME ...]``: run the benchmarks, print a
table, write JSON (default ``bench/results/latest.json``)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import dispatch, llm, startup, tasklog
from bench.common import ROOT, Figure, machine, rounded, run_child, simulator_process

KEYS = (
    "dispatch_ratio_vs_per_call_client",
    "dispatch_overhead_vs_bare_httpx",
    "ui_max_stall_ms",
    "log_write_vs_raw_sqlite",
    "app_rss_over_qt_baseline_mb",
    "startup_window_vs_bare_qt",
    "startup_live_vs_bare_page",
    "send_to_speaking_overhead_ms_p99",
    "control_say_overhead_ms_p99",
    "llm_sentence_to_task_ms_p99",
    "cues_max_stall_ms",
    "ui_two_avatars_max_stall_ms",
    "time_to_first_word_s",
    "first_word_vs_bare_page",
    "lookahead_extra_gap_ms_p99",
)


def ui_stall(quick: bool) -> list[Figure]:
    tasks = 200 if quick else 1000
    with simulator_process("--chars-per-second", "1500") as url:
        data = run_child(
            "bench.ui_stall",
            ["--api-base", url, "--tasks", str(tasks), "--settle-s", "20" if quick else "120"],
            timeout=900,
        )
    return [
        Figure(
            "ui_max_stall_ms",
            rounded(data["max_stall_ms"]),
            "< 16",
            "ms",
            f"{tasks} tasks ({data['spoken']} spoken) in {data['run_s']:.1f} s: queueing call "
            f"{data['queue_call_ms']:.0f} ms, worst stall while streaming "
            f"{data['max_stall_stream_ms']:.0f} ms, p99 {data['p99_stall_ms']:.1f} ms"
            + ("" if data["all_finished"] else f"; never finished: {data['unfinished_by_state']}"),
            data,
        )
    ]


def ui_stall_avatars(quick: bool) -> list[Figure]:
    lines = 100 if quick else 500
    # 1,200 chars/s keeps each page under the bridge's 100 messages a second (ui_stall_avatars)
    with simulator_process("--chars-per-second", "1200") as url:
        data = run_child(
            "bench.ui_stall_avatars",
            ["--api-base", url, "--lines", str(lines), "--settle-s", "60" if quick else "240"],
            timeout=900,
        )
    return [
        Figure(
            "ui_two_avatars_max_stall_ms",
            rounded(data["max_stall_ms"]),
            "< 16",
            "ms",
            f"2 live avatars x {lines} lines ({data['spoken']} spoken) in {data['run_s']:.1f} s, "
            f"plots drawn: queueing calls {data['queue_calls_ms']:.0f} ms, worst stall while "
            f"streaming {data['max_stall_stream_ms']:.0f} ms, p99 {data['p99_stall_ms']:.1f} ms"
            + ("" if data["all_finished"] else f"; never finished: {data['unfinished_by_state']}"),
            data,
        )
    ]


def send_to_speaking(quick: bool) -> list[Figure]:
    sends = 40 if quick else 200
    with simulator_process("--chars-per-second", "1000") as url:
        data = run_child(
            "bench.send_speaking", ["--api-base", url, "--sends", str(sends)], timeout=900
        )
    return [
        Figure(
            "send_to_speaking_overhead_ms_p99",
            rounded(data["overhead_p99_ms"]),
            "< 20",
            "ms",
            f"p50 {data['overhead_p50_ms']:.1f} ms; send->start p50 "
            f"{data['app_send_to_start_p50_ms']:.1f} / bare POST->start p50 "
            f"{data['bare_post_to_start_p50_ms']:.1f} ms; send->request left p50 "
            f"{data['app_send_to_request_p50_ms']:.1f} ms ({data['sends']} sends)",
            data,
        )
    ]


def control_say(quick: bool) -> list[Figure]:
    sends = 40 if quick else 200
    with simulator_process("--chars-per-second", "5000") as url:
        data = run_child("bench.control_say", ["--api-base", url, "--sends", str(sends)],
                         timeout=600)  # fmt: skip
    return [
        Figure(
            "control_say_overhead_ms_p99",
            rounded(data["p99_ms"]),
            "< 10",
            "ms",
            f"p50 {data['p50_ms']:.2f} ms, max {data['max_ms']:.2f} ms ({data['sends']} says; "
            "say request written -> its task POST leaving)",
            data,
        )
    ]


def cues(quick: bool) -> list[Figure]:
    count = 200  # the script: 200 cues, quick or not
    # a pace whose speech events stay under the page's ration of messages (100 a second)
    with simulator_process("--chars-per-second", "600") as url:
        data = run_child(
            "bench.cues",
            ["--api-base", url, "--cues", str(count), "--settle-s", "60" if quick else "120"],
            timeout=900,
        )
    return [
        Figure(
            "cues_max_stall_ms",
            rounded(data["max_stall_ms"]),
            "< 16",
            "ms",
            f"{count} cues ({data['spoken']} of {data['lines']} lines spoken): opening "
            f"{data['max_stall_opening_ms']:.0f} ms, 200 GOs {data['max_stall_firing_ms']:.0f} "
            f"ms, stream {data['max_stall_stream_ms']:.0f} ms, p99 {data['p99_stall_ms']:.1f} "
            f"ms; GUI thread CPU in one gap at most: opening "
            f"{data['max_gap_cpu_opening_ms']:.0f} ms, GOs {data['max_gap_cpu_firing_ms']:.0f} ms, "
            f"stream {data['max_gap_cpu_stream_ms']:.0f} ms; "
            f"audience mirror grab p50 {data['mirror_grab_p50_ms']:.1f} ms",
            data,
        )
    ]


def lookahead(quick: bool) -> list[Figure]:
    lines = 40 if quick else 150
    # short lines at a brisk pace: the next line must be with the service before one ends
    with simulator_process("--chars-per-second", "200") as url:
        data = run_child("bench.lookahead", ["--api-base", url, "--lines", str(lines)],
                         timeout=900)  # fmt: skip
    ours, floor = data["with_lookahead"], data["all_at_once"]
    return [
        Figure(
            "lookahead_extra_gap_ms_p99",
            rounded(data["extra_gap_p99_ms"]),
            "< 20",
            "ms",
            f"gap between lines p50 / p99 / max: look-ahead of {data['lookahead']} "
            f"{ours['gap_p50_ms']:.1f} / {ours['gap_p99_ms']:.1f} / {ours['gap_max_ms']:.1f} ms "
            f"(at most {ours['most_on_service']} lines on the service), every line at once "
            f"{floor['gap_p50_ms']:.1f} / {floor['gap_p99_ms']:.1f} / {floor['gap_max_ms']:.1f} "
            f"ms; {ours['spoken']} + {floor['spoken']} of {2 * data['lines']} lines spoken",
            data,
        )
    ]


BENCHMARKS: dict[str, tuple[Callable[[bool], list[Figure]], tuple[str, ...]]] = {
    "dispatch": (dispatch.run, KEYS[0:2]),
    "ui_stall": (ui_stall, KEYS[2:3]),
    "tasklog": (tasklog.run, KEYS[3:5]),
    "startup": (startup.run, (*KEYS[5:7], *KEYS[12:14])),
    "send_to_speaking": (send_to_speaking, KEYS[7:8]),
    "control_say": (control_say, KEYS[8:9]),
    "llm": (llm.run, KEYS[9:10]),
    "cues": (cues, KEYS[10:11]),
    "ui_stall_avatars": (ui_stall_avatars, KEYS[11:12]),
    "lookahead": (lookahead, KEYS[14:15]),
}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:+.1%}"
    return f"{value:g} {unit}".strip()


def table(figures: list[Figure]) -> str:
    rows = [("benchmark", "figure", "goal", "met", "absolute")]
    for f in figures:
        met = {True: "PASS", False: "FAIL", None: "ERROR"}[f.met]
        rows.append((f.key, _fmt(f.value, f.unit), f.goal, met, f.error or f.absolute))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=False)) + "  " + r[4]
             for r in rows]  # fmt: skip
    lines.insert(1, "-" * min(160, max(len(line) for line in lines)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes (under a minute)")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "results" / "latest.json", metavar="FILE"
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME")
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures: list[Figure] = []
    for name, (bench, keys) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        sys.stderr.write(f"bench: {name}...\n")
        t0 = time.monotonic()
        try:
            got = bench(args.quick)
        except Exception as exc:
            traceback.print_exc()
            got = [Figure(k, None, "-", error=f"{type(exc).__name__}: {exc}"[:300]) for k in keys]
        sys.stderr.write(f"bench: {name} took {time.monotonic() - t0:.1f} s\n")
        figures += got
    out: dict[str, Any] = {f.key: f.value for f in figures}
    out["goals"] = {f.key: {"goal": f.goal, "met": f.met, "unit": f.unit} for f in figures}
    out["absolute"] = {f.key: f.absolute for f in figures}
    out["errors"] = {f.key: f.error for f in figures if f.error}
    out["detail"] = {f.key: f.detail for f in figures if f.detail}
    out["machine"] = machine()
    out["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    out["quick"] = args.quick
    out["run_s"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(table(figures) + "\n")
    sys.stdout.write(f"\n{out['date']} · {out['run_s']} s · JSON: {args.json}\n")
    return 0 if all(f.met for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
