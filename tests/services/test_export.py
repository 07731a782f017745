"""Exports of the task log: CSV and JSONL read back exactly, SRT cues timed from the first."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avaturn_desktop.core.tasks import TaskRecord, TaskRoute, TaskState
from avaturn_desktop.services.export import (
    CSV_COLUMNS,
    ExportFormat,
    export_log,
    export_records,
    iso_utc,
    srt_time,
)
from avaturn_desktop.services.tasklog import TaskLogStore

NASTY = [
    "plain",
    "line\nbreak\r\nand\rcr",
    "quotes \"double\" and 'single', commas, ; semis",
    "emoji 😀👍🏽 and flags 🇺🇦",
    "RTL שלום עולם and مرحبا",
    "controls \x00\x01\x07\x1b\x7f\x85\u2028\u2029 end",
    "=SUM(A1:A9)",
    "+1 555",
    "-rf",
    "@cmd",
    "",
    "   spaces   ",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskLogStore]:
    with TaskLogStore(tmp_path / "log.sqlite3") as s:
        yield s


def fill(store: TaskLogStore) -> list[TaskRecord]:
    """Two sessions; every nasty text; spoken, cancelled mid-speech, queued and failed rows."""
    t = 1_700_000_000.0
    for i, text in enumerate(NASTY):
        session = "s1" if i % 2 == 0 else "s2"
        row = store.add(session_id=session, text=text, voice_id="v", route=TaskRoute.REST, at=t)
        base = t + 10 * i
        if i % 4 != 3:
            store.mark_sent(row.row_id, at=base)
            store.mark_acked(row.row_id, f"task-{i}", at=base + 0.05)
            store.mark_speaking(row.row_id, at=base + 0.25)
            if i == 5:
                store.mark_cancelled(row.row_id, '=stopped, by "user"', at=base + 1)
            else:
                store.mark_spoken(row.row_id, at=base + 2.5)
        elif i == 3:
            store.mark_failed(row.row_id, "HTTP 500\nserver error")
    return store.query()


def unsafe(text: str) -> bool:
    return text.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_csv_reads_back(store: TaskLogStore) -> None:
    records = fill(store)
    out = io.StringIO(newline="")
    assert export_log(store, ExportFormat.CSV, out) == len(records)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        expected_text = "'" + rec.text if unsafe(rec.text) else rec.text
        assert row["text"] == expected_text
        assert row["row_id"] == str(rec.row_id)
        assert row["state"] == rec.state.value
        assert row["task_id"] == (rec.task_id or "")
        reason = rec.reason or ""
        assert row["reason"] == ("'" + reason if unsafe(reason) else reason)
        assert datetime.fromisoformat(row["created_at"]).timestamp() == pytest.approx(
            rec.created_at, abs=0.001
        )
        assert row["created_at"].endswith("Z")
        if rec.latency_ms is None:
            assert row["latency_ms"] == "" and row["started_at"] == ""
        else:
            assert float(row["latency_ms"]) == pytest.approx(250.0)
        if rec.duration_s is not None:
            assert float(row["duration_s"]) == pytest.approx(rec.duration_s, abs=0.001)


def test_csv_header_only_when_empty(store: TaskLogStore) -> None:
    out = io.StringIO(newline="")
    assert export_log(store, ExportFormat.CSV, out) == 0
    assert out.getvalue() == ",".join(CSV_COLUMNS) + "\r\n"


def test_jsonl_reads_back(store: TaskLogStore) -> None:
    records = fill(store)
    out = io.StringIO()
    assert export_log(store, ExportFormat.JSONL, out) == len(records)
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == len(records) + 1
    # one object per line even for a reader that splits on every Unicode line end
    assert len(out.getvalue().splitlines()) == len(records)
    for line, rec in zip(lines[:-1], records, strict=True):
        obj = json.loads(line)
        assert obj.pop("latency_ms") == rec.latency_ms
        assert obj.pop("duration_s") == rec.duration_s
        assert TaskRecord.model_validate(obj) == rec


def test_one_session(store: TaskLogStore) -> None:
    records = fill(store)
    out = io.StringIO()
    n = export_log(store, ExportFormat.JSONL, out, session_id="s2")
    assert n == sum(r.session_id == "s2" for r in records)
    assert {json.loads(line)["session_id"] for line in out.getvalue().splitlines()} == {"s2"}


SRT_CUE = re.compile(
    r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n((?:.+\n)+)\n"
)


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    cues = []
    pos = 0
    while pos < len(text):
        m = SRT_CUE.match(text, pos)
        assert m, text[pos : pos + 200]
        g = m.groups()
        start = int(g[1]) * 3600 + int(g[2]) * 60 + int(g[3]) + int(g[4]) / 1000
        end = int(g[5]) * 3600 + int(g[6]) * 60 + int(g[7]) + int(g[8]) / 1000
        cues.append((int(g[0]), start, end, g[9].rstrip("\n")))
        pos = m.end()
    return cues


def test_srt_one_session(store: TaskLogStore) -> None:
    fill(store)
    out = io.StringIO()
    n = export_log(store, ExportFormat.SRT, out, session_id="s2")
    cues = parse_srt(out.getvalue())
    assert len(cues) == n
    # s2 holds NASTY[1], [5] (cancelled mid-speech), [9]; [3], [7] never started
    assert [c[0] for c in cues] == [1, 2, 3]
    assert cues[0][1:3] == (0.0, 2.25)
    assert cues[1][1:3] == (40.0, 40.75)  # cancelled after 0.75 s of speech
    assert cues[2][1:3] == (80.0, 82.25)
    assert cues[0][3] == "line\nbreak\nand\ncr"
    assert cues[1][3] == "controls\nend"  # control characters dropped, line ends kept
    assert cues[2][3] == "@cmd"


def test_srt_all_sessions_one_timeline(store: TaskLogStore) -> None:
    records = fill(store)
    out = io.StringIO()
    n = export_log(store, ExportFormat.SRT, out)
    cues = parse_srt(out.getvalue())
    started = [r for r in records if r.started_at is not None and r.text.strip()]
    assert n == len(cues) == len(started)
    starts = [c[1] for c in cues]
    assert starts == sorted(starts) and starts[0] == 0.0
    origin = min(r.started_at for r in started if r.started_at is not None)
    for cue, rec in zip(cues, sorted(started, key=lambda r: r.started_at or 0), strict=True):
        assert rec.started_at is not None
        assert cue[1] == pytest.approx(rec.started_at - origin, abs=0.001)


def test_srt_edge_cases() -> None:
    def rec(row_id: int, text: str, start: float | None, end: float | None) -> TaskRecord:
        return TaskRecord(
            row_id=row_id, session_id="s", text=text, voice_id=None, route=TaskRoute.SDK,
            state=TaskState.SPOKEN, reason=None, task_id=None, created_at=0.0, sent_at=None,
            acked_at=None, started_at=start, ended_at=end,
        )  # fmt: skip

    out = io.StringIO()
    records = [
        rec(3, "third", 5000.0, 5001.0),
        rec(1, "first", 1000.0, 999.0),  # end before start: clamped
        rec(2, " \n\x00 ", 1001.0, 1002.0),  # nothing left to show: no cue
        rec(4, "never started", None, 7000.0),
    ]
    assert export_records(records, ExportFormat.SRT, out) == 2
    assert out.getvalue() == (
        "1\n00:00:00,000 --> 00:00:00,000\nfirst\n\n2\n01:06:40,000 --> 01:06:41,000\nthird\n\n"
    )
    assert export_records([], ExportFormat.SRT, io.StringIO()) == 0
    assert srt_time(0.0004) == "00:00:00,000"
    assert srt_time(3661.2346) == "01:01:01,235"
    assert srt_time(100 * 3600) == "100:00:00,000"


def test_iso_utc() -> None:
    assert iso_utc(None) == ""
    assert iso_utc(0.25) == "1970-01-01T00:00:00.250Z"


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))
def test_any_text_round_trips(text: str) -> None:
    rec = TaskRecord(
        row_id=1, session_id="s", text=text, voice_id=None, route=TaskRoute.REST,
        state=TaskState.QUEUED, reason=None, task_id=None, created_at=1.5, sent_at=None,
        acked_at=None, started_at=None, ended_at=None,
    )  # fmt: skip
    out = io.StringIO(newline="")
    export_records([rec], ExportFormat.CSV, out)
    (row,) = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert row["text"] == ("'" + text if unsafe(text) else text)
    out = io.StringIO()
    export_records([rec], ExportFormat.JSONL, out)
    assert out.getvalue().count("\n") == 1
    assert json.loads(out.getvalue())["text"] == text


def test_to_a_real_file(store: TaskLogStore, tmp_path: Path) -> None:
    records = fill(store)
    path = tmp_path / "out.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        assert export_log(store, ExportFormat.CSV, f) == len(records)
    with path.open(encoding="utf-8", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    assert texts == [("'" + r.text if unsafe(r.text) else r.text) for r in records]
