"""Run the whole reliability and security suite (the slow runs included, more fuzz examples)
and print the counts that ``docs/reliability.md`` reports.

    python -m tests.reliability.report [--quick] [--json FILE]

``--quick`` runs what CI runs (no slow tests, the default fuzz budget). The figures come from
the tally the tests write (``tests/reliability/tally.py``), never from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.reliability.tally import REPO, SUMMARY_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report")
    parser.add_argument("--quick", action="store_true", help="only what CI runs")
    parser.add_argument("--examples", type=int, default=1000, help="fuzz examples per target")
    parser.add_argument("--json", metavar="FILE", help="also copy the summary here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        env = {**os.environ, SUMMARY_ENV: str(summary)}
        command = [sys.executable, "-m", "pytest", "-q", "tests/reliability"]
        if not args.quick:
            env["AVATURN_FUZZ_EXAMPLES"] = str(args.examples)
            command += ["-m", ""]  # the slow runs too
        code = subprocess.call(command, cwd=REPO, env=env)
        if not summary.exists():
            print("no summary was written", file=sys.stderr)
            return code or 1
        data = json.loads(summary.read_text())
        if args.json:
            shutil.copy(summary, args.json)
    print()
    tests = len(data["fault_tests"])
    print(f"date: {data['date']}  run: {data['duration_s']} s  fault tests: {tests}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in data["machine"].items()))
    for key in ("faults_injected", "faults_survived", "inputs_tried", "crashes",
                "secret_places_checked", "secrets_found"):  # fmt: skip
        block = data[key]
        kinds = ", ".join(f"{k} {v}" for k, v in block["by_kind"].items())
        print(f"{key:>22}: {block['total']:>7}  ({kinds})")
    combined = data.get("combined", {})
    if combined.get("counts"):
        counts = ", ".join(f"{k} {v}" for k, v in combined["counts"].items())
        print(f"{'combined_faults':>22}: {counts}; bad seeds {combined['bad_seeds'] or 'none'}")
    worst = max(data["max_gui_stall_ms"].items(), key=lambda kv: kv[1], default=("-", 0))
    print(f"{'max_gui_stall_ms':>22}: {worst[1]:>7}  ({worst[0]})")
    return code


if __name__ == "__main__":
    sys.exit(main())
