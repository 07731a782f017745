"""``avaturn-desktop log export``: the same database the app writes, as CSV, JSONL or SRT."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avaturn_desktop.core.paths import data_dir
from avaturn_desktop.core.tasks import TaskRoute
from avaturn_desktop.services.tasklog import TaskLogStore


@pytest.fixture
def filled_home(_isolated_home: Path) -> Path:
    with TaskLogStore(data_dir() / "tasklog.sqlite3") as store:
        for session, text, start in (
            ("s-1", "Hello, world.", 100.0),
            ("s-1", 'She said "hi", then left.', 103.0),
            ("s-2", "Another session.", 200.0),
        ):
            row = store.add(session_id=session, text=text, voice_id="v", route=TaskRoute.REST)
            store.mark_sent(row.row_id, at=start - 0.5)
            store.mark_acked(row.row_id, f"t-{row.row_id}", at=start - 0.4)
            store.mark_speaking(row.row_id, at=start)
            store.mark_spoken(row.row_id, at=start + 2.0)
    return _isolated_home


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avaturn_desktop", "log", "export", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )


def test_csv_of_one_session_to_stdout(filled_home: Path) -> None:
    result = export("--session", "s-1", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["text"] for r in rows] == ["Hello, world.", 'She said "hi", then left.']
    assert {r["state"] for r in rows} == {"spoken"}
    assert rows[0]["latency_ms"] in ("500", "500.0")


def test_jsonl_and_srt_to_files(filled_home: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "log.jsonl"
    assert export("--format", "jsonl", "-o", str(jsonl)).returncode == 0
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["session_id"] for r in records] == ["s-1", "s-1", "s-2"]

    srt = tmp_path / "s1.srt"
    result = export("--session", "s-1", "--format", "srt", "-o", str(srt))
    assert result.returncode == 0, result.stderr
    text = srt.read_text(encoding="utf-8")
    assert "00:00:00,000 --> 00:00:02,000\nHello, world." in text
    assert "00:00:03,000 --> 00:00:05,000" in text


def test_a_fresh_install_exports_an_empty_log(_isolated_home: Path, tmp_path: Path) -> None:
    result = export("--format", "csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(",")[:2] == ["row_id", "session_id"]
    assert len(result.stdout.strip().splitlines()) == 1  # the header alone
    assert "no task log yet" in result.stderr
    for fmt in ("jsonl", "srt"):
        out = tmp_path / f"empty.{fmt}"
        result = export("--format", fmt, "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert out.read_text(encoding="utf-8") == ""
