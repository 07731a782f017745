"""Export the task log as CSV, JSONL or SRT subtitles.

* **CSV** (RFC 4180, ``\\r\\n`` line ends; open files with ``newline=""``): a header, then
  one row per task with every column, times as ISO-8601 UTC with milliseconds
  (``2024-05-01T12:00:00.250Z``), ``latency_ms`` (one decimal) and ``duration_s`` (three
  decimals); empty cells for missing values. Text cells that a spreadsheet would run as a
  formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) get a leading
  apostrophe; every other text reads back exactly with :mod:`csv`.
* **JSONL**: one JSON object per task, UTF-8, with every field of
  :class:`~avaturn_desktop.core.tasks.TaskRecord` (times as unix seconds, exact) plus
  ``latency_ms`` and ``duration_s``. Characters that some readers take for line ends
  (U+0085, U+2028, U+2029) are escaped, so each object is exactly one line.
* **SRT**: one cue per task that has both ``started_at`` and ``ended_at`` (spoken, or cancelled
  or failed while speaking), ordered by start, timed relative to the first cue of the export,
  so a one-session export starts at ``00:00:00,000``. An export of several sessions is one
  timeline relative to the first cue overall: gaps between sessions show as gaps. Cue text is
  the task's text with control characters dropped and blank lines removed (a blank line
  would end the cue); a task whose text is then empty gets no cue.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TextIO

from avaturn_desktop.core.tasks import TaskRecord
from avaturn_desktop.services.tasklog import TaskLogStore


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    SRT = "srt"


CSV_COLUMNS: Final = (
    "row_id",
    "session_id",
    "task_id",
    "route",
    "voice_id",
    "state",
    "reason",
    "text",
    "created_at",
    "sent_at",
    "acked_at",
    "started_at",
    "ended_at",
    "latency_ms",
    "duration_s",
)
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_JSONL_LINE_ENDS: Final = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f]")
_BATCH: Final = 1000


def iso_utc(t: float | None) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds, ``""`` for ``None``."""
    if t is None:
        return ""
    stamp = datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


def _safe_cell(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _csv(records: Iterable[TaskRecord], out: TextIO) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for r in records:
        writer.writerow(
            (
                r.row_id,
                _safe_cell(r.session_id),
                _safe_cell(r.task_id),
                r.route.value,
                _safe_cell(r.voice_id),
                r.state.value,
                _safe_cell(r.reason),
                _safe_cell(r.text),
                iso_utc(r.created_at),
                iso_utc(r.sent_at),
                iso_utc(r.acked_at),
                iso_utc(r.started_at),
                iso_utc(r.ended_at),
                _number(r.latency_ms, 1),
                _number(r.duration_s, 3),
            )
        )
        rows += 1
    return rows


def record_json(r: TaskRecord) -> dict[str, Any]:
    """One task as a JSONL row (and as the control API's ``/log`` rows)."""
    obj: dict[str, Any] = r.model_dump(mode="json")
    obj["latency_ms"] = r.latency_ms
    obj["duration_s"] = r.duration_s
    return obj


def _jsonl(records: Iterable[TaskRecord], out: TextIO) -> int:
    rows = 0
    for r in records:
        line = json.dumps(record_json(r), ensure_ascii=False)
        for char, escaped in _JSONL_LINE_ENDS.items():
            line = line.replace(char, escaped)
        out.write(line + "\n")
        rows += 1
    return rows


def srt_time(seconds: float) -> str:
    """``HH:MM:SS,mmm`` (hours grow past 99 if they must)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def _cue_text(text: str) -> str:
    lines = (_CONTROL.sub("", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _srt(records: Iterable[TaskRecord], out: TextIO) -> int:
    cues = sorted(
        (r for r in records if r.started_at is not None and r.ended_at is not None),
        key=lambda r: (r.started_at, r.row_id),
    )
    if not cues:
        return 0
    origin = cues[0].started_at
    assert origin is not None
    written = 0
    for r in cues:
        text = _cue_text(r.text)
        if not text:
            continue
        assert r.started_at is not None and r.ended_at is not None
        start = r.started_at - origin
        end = max(start, r.ended_at - origin)
        written += 1
        out.write(f"{written}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n\n")
    return written


def export_records(records: Iterable[TaskRecord], fmt: ExportFormat, out: TextIO) -> int:
    """Write ``records`` to ``out`` in ``fmt``; return how many rows (SRT: cues) were written."""
    fmt = ExportFormat(fmt)
    if fmt is ExportFormat.CSV:
        return _csv(records, out)
    if fmt is ExportFormat.JSONL:
        return _jsonl(records, out)
    return _srt(records, out)


def _stored(store: TaskLogStore, session_id: str | None) -> Iterator[TaskRecord]:
    ids = store.row_ids(session_id=session_id)
    for start in range(0, len(ids), _BATCH):
        yield from store.get_many(ids[start : start + _BATCH])


def export_log(
    store: TaskLogStore, fmt: ExportFormat, out: TextIO, *, session_id: str | None = None
) -> int:
    """Export the whole log, or one session, in log order (SRT: by start time)."""
    return export_records(_stored(store, session_id), fmt, out)
