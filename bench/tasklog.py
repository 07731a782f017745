"""3. Task log scale: writes through ``TaskLogStore`` vs raw ``sqlite3``; then the log table's
memory in the app vs a bare Qt + WebEngine window (both in child processes, same run).

Writes: each row is logged as the app logs a spoken line (add, mark_sent, mark_acked,
mark_speaking, mark_spoken: five transactions, each committed before the call returns). The raw
side opens a database made with the store's own schema (same indexes), sets the same pragmas
(WAL, ``synchronous=NORMAL``, autocommit) and runs the same five statements per row, state
guards included, without the store's Python around them (no read-back, no records). The two
alternate in chunks, each into its own file in the same directory.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from avaturn_desktop.core.tasks import TaskRoute
from avaturn_desktop.services.tasklog import DEFAULT_FILE_NAME, TaskLogStore
from bench.common import Figure, rounded, run_child, simulator_process

SENTENCES = (
    "Good evening, everyone, and welcome to the launch.",
    "Let me show you what is new this season.",
    "Our next guest needs no introduction.",
    "Questions are welcome at the end of the talk.",
    "Thank you all for coming tonight; enjoy the rest of the evening!",
)
VOICE = "EXAVITQu4vr4xnSDxMaL"


def text_of(i: int) -> str:
    return f"{SENTENCES[i % len(SENTENCES)]} (line {i})"


def _store_rows(store: TaskLogStore, session_id: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        now = time.time()
        row = store.add(
            session_id=session_id, text=text_of(i), voice_id=VOICE, route=TaskRoute.REST, at=now
        ).row_id
        store.mark_sent(row, at=now)
        store.mark_acked(row, f"task-{i}", at=now)
        store.mark_speaking(row, at=now)
        store.mark_spoken(row, at=now)


def _raw_connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def _raw_rows(db: sqlite3.Connection, session_id: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        now = time.time()
        text = text_of(i)
        cur = db.execute(
            "INSERT INTO tasks (session_id, text, text_fold, voice_id, route, state, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'queued', ?)",
            (session_id, text, text.casefold(), VOICE, "rest", now),
        )
        row = cur.lastrowid
        db.execute(
            "UPDATE tasks SET state = 'sent', sent_at = ? WHERE row_id = ? AND state IN ('queued')",
            (now, row),
        )
        db.execute(
            "UPDATE tasks SET task_id = ?, acked_at = ?"
            " WHERE row_id = ? AND state != 'queued' AND task_id IS NULL",
            (f"task-{i}", now, row),
        )
        db.execute(
            "UPDATE tasks SET state = 'speaking', started_at = ? WHERE row_id = ? AND state IN"
            " ('sent')",
            (now, row),
        )
        db.execute(
            "UPDATE tasks SET state = 'spoken', ended_at = ? WHERE row_id = ? AND state IN"
            " ('sent', 'speaking')",
            (now, row),
        )


def measure_writes(rows: int, chunks: int, where: Path) -> dict[str, Any]:
    """Write ``rows`` both ways into ``where``; the store's file is the app's default name."""
    store_path = where / DEFAULT_FILE_NAME
    raw_path = where / "raw.sqlite3"
    TaskLogStore(raw_path).close()  # the same schema and indexes, made by the store
    store = TaskLogStore(store_path)
    raw = _raw_connect(raw_path)
    session_id = str(uuid.uuid4())
    per_chunk = rows // chunks
    spent = {"store": 0.0, "raw": 0.0}
    ratios: list[float] = []
    try:
        for c in range(chunks):
            start = c * per_chunk
            order = ("store", "raw") if c % 2 == 0 else ("raw", "store")
            took: dict[str, float] = {}
            for name in order:
                t0 = time.perf_counter()
                if name == "store":
                    _store_rows(store, session_id, start, per_chunk)
                else:
                    _raw_rows(raw, session_id, start, per_chunk)
                took[name] = time.perf_counter() - t0
                spent[name] += took[name]
            ratios.append(took["store"] / took["raw"])
        assert store.count() == raw.execute("SELECT count(*) FROM tasks").fetchone()[0]
    finally:
        store.close()
        raw.close()
    written = per_chunk * chunks
    return {
        "rows": written,
        "transactions_per_row": 5,
        "chunks": chunks,
        "store_s": spent["store"],
        "raw_s": spent["raw"],
        "store_us_per_row": spent["store"] / written * 1e6,
        "raw_us_per_row": spent["raw"] / written * 1e6,
        "ratio_per_chunk": ratios,
        "ratio": spent["store"] / spent["raw"],
        "store_file_mb": store_path.stat().st_size / 2**20,
    }


def run(quick: bool) -> list[Figure]:
    rows = 5_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="avaturn-bench-log-") as tmp:
        where = Path(tmp)
        writes = measure_writes(rows, 10, where)
        figures = [
            Figure(
                "log_write_vs_raw_sqlite",
                rounded(writes["ratio"]),
                "<= 1.5",
                "x",
                f"{rows:,} rows x 5 commits: store {writes['store_s']:.1f} s "
                f"({writes['store_us_per_row']:.0f} us/row), raw {writes['raw_s']:.1f} s "
                f"({writes['raw_us_per_row']:.0f} us/row)",
                writes,
            )
        ]
        figures.append(_memory(where, quick))
    return figures


def _memory(where: Path, quick: bool) -> Figure:
    """The app with the log table over the rows just written, vs the bare Qt window.

    The key is the app as it runs with a cloud key (the service, here the simulator, in another
    process); the app with its in-process simulator (its default with no key) is measured too.
    """
    database = ["--database", str(where / DEFAULT_FILE_NAME), *(["--quick"] if quick else [])]
    try:
        with simulator_process() as base_url:
            app = run_child("bench.table_memory", [*database, "--api-base", base_url], timeout=300)
        app_sim = run_child("bench.table_memory", database, timeout=300)
        base = run_child("bench.baseline", ["--hold-ms", "1000"], timeout=120)
    except Exception as exc:  # a child failed: the row says why, the other figures stand
        return Figure("app_rss_over_qt_baseline_mb", None, "< 60", "MB", error=str(exc))
    over = app["main_peak_mb"] - base["main_peak_mb"]
    over_sim = app_sim["main_peak_mb"] - base["main_peak_mb"]
    return Figure(
        "app_rss_over_qt_baseline_mb",
        rounded(over),
        "< 60",
        "MB",
        f"main process peak: app {app['main_peak_mb']:.0f} MB with {app['rows']:,} rows, "
        f"bare {base['main_peak_mb']:.0f} MB; with the in-process simulator +{over_sim:.0f} MB; "
        f"whole tree: app {app['tree_now_mb']:.0f} MB, bare {base['tree_now_mb']:.0f} MB",
        {
            "app": app,
            "app_with_in_process_simulator": app_sim,
            "baseline": base,
            "over_with_in_process_simulator_mb": over_sim,
            "tree_over_mb": app["tree_now_mb"] - base["tree_now_mb"],
        },
    )
