"""What the benchmarks share: figures, statistics, the simulator process, child processes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The line a child process prints last: ``BENCH-RESULT {json}``.
RESULT_MARK = "BENCH-RESULT "
#: The simulator's API key for every benchmark (it accepts any non-empty bearer key).
API_KEY = "bench-key"


@dataclasses.dataclass
class Figure:
    """One row of the table and one key of the JSON."""

    key: str
    value: float | None
    goal: str  # e.g. ">= 3", "< 16"
    unit: str = ""  # "x", "ms", "MB", "ratio"
    absolute: str = ""  # the numbers beside a ratio, for people
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.goal.strip() in ("", "-"):  # a figure with no goal of its own
            return True
        op, _, bound = self.goal.partition(" ")
        limit = float(bound.rstrip("%")) / (100 if bound.endswith("%") else 1)
        return {
            ">=": self.value >= limit,
            ">": self.value > limit,
            "<=": self.value <= limit,
            "<": self.value < limit,
        }[op]


def stall_figures(
    stalls: Sequence[float],
    idle: Sequence[float],
    queueing: Sequence[float],
    stream: Sequence[float],
) -> dict[str, Any]:
    """The GUI loop's stalls (ms) as the stall benchmarks report them: over the whole run and
    by phase (before queueing, during the queueing calls, while the lines stream)."""
    return {
        "max_stall_ms": max(stalls),
        "p99_stall_ms": percentile(stalls, 99),
        "stalls_over_16ms": sum(s >= 16 for s in stalls),
        "max_stall_idle_ms": max(idle, default=0.0),
        "max_stall_queueing_ms": max(queueing, default=0.0),
        "max_stall_stream_ms": max(stream, default=0.0),
        "p99_stall_stream_ms": percentile(stream, 99),
        "worst_stream_stalls_ms": sorted(stream)[-5:],
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def rounded(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}") if math.isfinite(value) and value else value


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import PySide6
        from PySide6 import QtCore

        info["pyside6"] = PySide6.__version__
        info["qt"] = QtCore.qVersion()
    except ImportError:
        info["qt"] = None
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def child_env(home: Path | None = None) -> dict[str, str]:
    """The environment of a Qt child: offscreen, no GPU, sandbox off as root, its own home."""
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    flags = env.get("QTWEBENGINE_CHROMIUM_FLAGS", "").split()
    if "--disable-gpu" not in flags:
        flags.append("--disable-gpu")
    env["QTWEBENGINE_CHROMIUM_FLAGS"] = " ".join(flags)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    env["AVATURN_DESKTOP_HOME"] = str(home or tempfile.mkdtemp(prefix="avaturn-bench-"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_child(module: str, args: Sequence[str], *, timeout: float, home: Path | None = None
              ) -> dict[str, Any]:  # fmt: skip
    """Run ``python -m module args`` and return the JSON of its ``BENCH-RESULT`` line."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=child_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return result
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
    what = f"{module} {' '.join(args)}"
    raise RuntimeError(f"{what} exited {proc.returncode} with no result:\n{tail}")


def emit_result(result: dict[str, Any]) -> None:
    """The child's last line (the parent reads it)."""
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


# -- the simulator in its own process -------------------------------------------------------

_LISTENING = re.compile(r"listening on (http://\S+)")


@contextlib.contextmanager
def simulator_process(*extra: str, timeout: float = 20.0) -> Iterator[str]:
    """``python -m avaturn_desktop.simulator --port 0 ...``; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "avaturn_desktop.simulator", "--port", "0", *extra],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = _read_until(proc, _LISTENING, timeout).group(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_until(proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float
                ) -> re.Match[str]:  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"no line matching {pattern.pattern!r} in {timeout:g} s")
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the process exited ({proc.wait()}) before {pattern.pattern!r}")
            if match := pattern.search(line):
                return match


# -- memory (Linux /proc) -------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set (``ru_maxrss``), in MiB."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / (1024 * 1024)


def _status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_rss_mb(pid: int | None = None) -> dict[str, float]:
    """Current RSS of a process and all its descendants (Chromium's helpers), in MiB."""
    root = os.getpid() if pid is None else pid
    total = 0
    helpers = 0
    stack = [root]
    count = 0
    while stack:
        current = stack.pop()
        rss = _status_kib(current, "VmRSS")
        total += rss
        if current != root:
            helpers += rss
            count += 1
        stack += _children(current)
    return {
        "main_now_mb": _status_kib(root, "VmRSS") / 1024,
        "main_peak_mb": _status_kib(root, "VmHWM") / 1024,
        "children_now_mb": helpers / 1024,
        "tree_now_mb": total / 1024,
        "child_processes": count,
    }
