"""The counts the reliability suite reports: faults injected / survived, inputs tried /
crashes, places checked for the API key / secrets found.

Every test adds to one :class:`Tally` per pytest run; at the end of the run the tally is
written as JSON (``.cache/reliability/summary.json`` at the repo root, or the path in
``AVATURN_RELIABILITY_SUMMARY``). A fault counts as survived only when every check of the
test that injected it passed: tests record their faults as pending and settle them at the end.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SUMMARY_ENV = "AVATURN_RELIABILITY_SUMMARY"


def summary_path() -> Path:
    override = os.environ.get(SUMMARY_ENV)
    return Path(override) if override else REPO / ".cache" / "reliability" / "summary.json"


@dataclass
class Tally:
    faults_injected: Counter[str] = field(default_factory=Counter)
    faults_survived: Counter[str] = field(default_factory=Counter)
    inputs_tried: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    places_checked: Counter[str] = field(default_factory=Counter)
    secrets_found: Counter[str] = field(default_factory=Counter)
    tests: list[str] = field(default_factory=list)
    #: The longest GUI-loop gap per fault test (ms), and a stack sample of the worst one.
    max_stall_ms: dict[str, float] = field(default_factory=dict)
    stall_samples: dict[str, str] = field(default_factory=dict)
    #: The combined-fault runs (tests/reliability/combined.py): counts over every seed.
    combined_counts: Counter[str] = field(default_factory=Counter)
    combined_bad_seeds: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    # -- faults ------------------------------------------------------------------------------

    def faults(self, kind: str, count: int = 1) -> None:
        """``count`` faults of ``kind`` were injected (and not yet known to be survived)."""
        self.faults_injected[kind] += count

    def survived(self, kinds: Counter[str]) -> None:
        for kind, count in kinds.items():
            self.faults_survived[kind] += count

    def stall(self, test: str, max_gap_ms: float, samples: list[str]) -> None:
        self.max_stall_ms[test] = round(max_gap_ms, 1)
        if samples:
            self.stall_samples[test] = samples[-1]

    def combined(self, seed: int, found: Any, *, lost: int, stuck: bool, refused: int = 0) -> None:
        """One seed of the combined scenario and what ``check_invariants`` found."""
        c = self.combined_counts
        c["seeds"] += 1
        c["speak_now_refused_with_a_message"] += refused
        c["lines_received"] += found.received
        c["lines_doubled"] += len(found.doubled)
        c["spoken_not_received"] += len(found.spoken_unreceived)
        c["left_sending"] += len(found.left_sending)
        c["lost"] += lost
        c["stuck"] += int(stuck)
        if not found.ok or lost or stuck:
            self.combined_bad_seeds.append(seed)

    # -- inputs ------------------------------------------------------------------------------

    def tried(self, target: str, count: int = 1) -> None:
        self.inputs_tried[target] += count

    def crash(self, target: str) -> None:
        self.crashes[target] += 1

    # -- secrets -----------------------------------------------------------------------------

    def checked(self, place: str, found: bool) -> None:
        self.places_checked[place] += 1
        if found:
            self.secrets_found[place] += 1

    # -- the report --------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        def block(c: Counter[str]) -> dict[str, Any]:
            return {"total": sum(c.values()), "by_kind": dict(sorted(c.items()))}

        return {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started)),
            "duration_s": round(time.time() - self.started, 1),
            "machine": machine(),
            "fault_tests": sorted(self.tests),
            "max_gui_stall_ms": dict(sorted(self.max_stall_ms.items())),
            "combined": {
                "counts": dict(sorted(self.combined_counts.items())),
                "bad_seeds": sorted(self.combined_bad_seeds),
            },
            "stall_samples": self.stall_samples,
            "faults_injected": block(self.faults_injected),
            "faults_survived": block(self.faults_survived),
            "inputs_tried": block(self.inputs_tried),
            "crashes": block(self.crashes),
            "secret_places_checked": block(self.places_checked),
            "secrets_found": block(self.secrets_found),
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }
