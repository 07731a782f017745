"""4. Start-up: from the spawn of a process to its window shown, and to the avatar live.

Each run is a fresh process with its own empty ``AVATURN_DESKTOP_HOME``, timed in this process
from just before the spawn to the moment its marker line arrives on its stdout:

* app ``--headless --exit-after shown``: "window shown after ..." (the main window's first
  expose: its frame, menus, status bar and docks on screen, before the services are loaded),
  and "window filled after ..." (its panels and stage in place and painted; in ``detail``);
* app ``--headless --exit-after live``: "session live after ..." (a session created on the
  in-process simulator and its simulated avatar live on the page);
* the bare baseline (``bench.baseline``): "shown" (its window's first paint) and "loaded"
  (its local page's ``loadFinished``), from one process;
* the stack's floor (``bench.floor``): the same page, loaded after a painted window, pydantic
  and httpx, as any app on this stack must do before its avatar is live (in ``detail``: what
  the live and first-word goals leave for the app's own work).

The app's modules are byte-compiled first, as an installed app's are (pip compiles them; a
checkout run with ``PYTHONDONTWRITEBYTECODE`` would otherwise compile ~90 modules from source
in every run). One unmeasured run of each first (disk caches), then the three interleaved,
medians of N.
"""

from __future__ import annotations

import compileall
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.common import ROOT, Figure, child_env, median, rounded

APP = [sys.executable, "-m", "avaturn_desktop", "--headless", "--log-level", "ERROR"]
#: The text given on the command line for the time to the first word.
FIRST_WORDS = "Good evening, and welcome to the launch."


def time_markers(cmd: Sequence[str], markers: dict[str, str], timeout: float = 60.0
                 ) -> dict[str, float]:  # fmt: skip
    """Seconds from spawn to the first stdout line matching each marker's pattern."""
    patterns = {name: re.compile(p) for name, p in markers.items()}
    seen: dict[str, float] = {}
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            now = time.perf_counter() - start
            for name, pattern in patterns.items():
                if name not in seen and (m := pattern.search(line)):
                    seen[name] = now
                    if m.groups():
                        seen[name + "_reported"] = float(m.group(1))
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    missing = set(patterns) - set(seen)
    if missing:
        raise RuntimeError(f"{' '.join(cmd[2:])}: no {', '.join(sorted(missing))} line")
    return seen


def _once() -> dict[str, dict[str, float]]:
    return {
        "app_shown": time_markers(
            [*APP, "--exit-after", "shown"],
            {"t": r"window shown after ([\d.]+) s", "filled": r"window filled after ([\d.]+) s"},
        ),
        "baseline": time_markers(
            [sys.executable, "-m", "bench.baseline"], {"shown": r"^shown", "loaded": r"^loaded"}
        ),
        "floor": time_markers(
            [sys.executable, "-m", "bench.floor"], {"shown": r"^shown", "loaded": r"^loaded"}
        ),
        "app_live": time_markers(
            [*APP, "--exit-after", "live"], {"t": r"session live after ([\d.]+) s"}
        ),
        "app_first_word": time_markers(
            [*APP, "--say", FIRST_WORDS, "--exit-after", "first-word"],
            {"t": r"first word after ([\d.]+) s"},
        ),
    }


def run(quick: bool) -> list[Figure]:
    runs = 3 if quick else 5
    compileall.compile_dir(ROOT / "avaturn_desktop", quiet=1)  # as installed: no source compiles
    _once()  # warm the disk caches
    samples = [_once() for _ in range(runs)]
    shown = median([s["app_shown"]["t"] for s in samples])
    filled = median([s["app_shown"]["filled"] for s in samples])
    live = median([s["app_live"]["t"] for s in samples])
    first_word = median([s["app_first_word"]["t"] for s in samples])
    base_shown = median([s["baseline"]["shown"] for s in samples])
    base_loaded = median([s["baseline"]["loaded"] for s in samples])
    floor = median([s["floor"]["loaded"] for s in samples])
    detail: dict[str, Any] = {
        "runs": runs,
        "app_shown_s": shown,
        "app_filled_s": filled,
        "app_live_s": live,
        "app_first_word_s": first_word,
        "baseline_shown_s": base_shown,
        "baseline_loaded_s": base_loaded,
        "app_shown_vs_baseline_loaded": shown / base_loaded,
        # the page loaded after a painted window, pydantic and httpx (``bench.floor``)
        "floor_loaded_s": floor,
        "floor_vs_bare_page": floor / base_loaded,
        "app_shown_reported_by_app_s": median([s["app_shown"]["t_reported"] for s in samples]),
        "app_live_reported_by_app_s": median([s["app_live"]["t_reported"] for s in samples]),
        "samples": samples,
    }
    return [
        Figure(
            "startup_window_vs_bare_qt",
            rounded(shown / base_shown),
            "<= 1.5",
            "x",
            f"app {shown:.2f} s (panels in {filled:.2f} s), bare {base_shown:.2f} s (median of "
            f"{runs}; bare page loaded {base_loaded:.2f} s)",
            detail,
        ),
        Figure(
            "startup_live_vs_bare_page",
            rounded(live / base_loaded),
            "<= 2.5",
            "x",
            f"app live {live:.2f} s, bare page loaded {base_loaded:.2f} s (median of {runs}); "
            f"the stack's floor {floor:.2f} s ({floor / base_loaded:.2f}x)",
        ),
        Figure(
            "time_to_first_word_s",
            rounded(first_word),
            "-",
            "s",
            f"process start -> the first phrase of --say started speaking (median of {runs})",
        ),
        Figure(
            "first_word_vs_bare_page",
            rounded(first_word / base_loaded),
            "<= 3",
            "x",
            f"first word {first_word:.2f} s, bare page loaded {base_loaded:.2f} s",
        ),
    ]
