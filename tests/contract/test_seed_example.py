"""The product's starting point: the docs' "Backend example" runs to the end against the simulator.

The program is read from the shared docs at test time (it is not ours to copy); only its base
URL and its placeholder key are changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SEED = (Path(__file__).parents[2] / "../shared/docs/seed-text-echo.txt").resolve()
CLOUD_URL = '"https://api.avaturn.live"'
PLACEHOLDER_KEY = '"<AVATURN_API_KEY>"'


def backend_example(page: str) -> str:
    """The Python program between the "Backend example" and "Frontend example" headings."""
    start = page.index("\nBackend example\n") + len("\nBackend example\n")
    end = page.index("\nFrontend example\n", start)
    return page[start:end].strip() + "\n"


def test_seed_backend_example_runs_against_the_simulator(simulator: Any, tmp_path: Path) -> None:
    if not SEED.is_file():
        pytest.skip(f"the seed page is not beside the checkout: {SEED} is missing")
    program = backend_example(SEED.read_text(encoding="utf-8"))
    # If the page changes shape, say so rather than run something else.
    assert CLOUD_URL in program, "the example no longer names the cloud base URL"
    assert PLACEHOLDER_KEY in program, "the example no longer has the placeholder key"
    assert "asyncio.run(main())" in program

    program = program.replace(CLOUD_URL, repr(simulator.base_url)).replace(
        PLACEHOLDER_KEY, repr("seed-example-key")
    )
    script = tmp_path / "seed_backend_example.py"
    script.write_text(program, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "AVATURN_API_KEY"}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # It did what it says: one session, one task, then DELETE.
    (session,) = simulator.snapshot()["sessions"]
    assert [task["text"] for task in session["tasks"]] == ["Hello, world!"]
    assert (session["state"], session["end_reason"]) == ("ended", "terminated")
