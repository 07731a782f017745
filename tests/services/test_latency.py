"""Per-voice start latency and speaking rate, from the task log itself; and the log's schema 4
(a session's slot and phases, A/B takes), migrated from older files without losing a row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from avaturn_desktop.core.tasks import SessionRecord, TaskRoute
from avaturn_desktop.services.latency import figures, latency_json, percentile
from avaturn_desktop.services.tasklog import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    AbTake,
    TaskLogStore,
)


@pytest.fixture
def store(tmp_path: Path) -> TaskLogStore:
    return TaskLogStore(tmp_path / "log.sqlite3")


def session(store: TaskLogStore, session_id: str, slot: int | None) -> None:
    store.record_session(
        SessionRecord(
            session_id=session_id,
            backend="b",
            avatar_id="jane",
            created_at=1.0,
            max_duration=60,
            slot=slot,
        )
    )


def line(
    store: TaskLogStore,
    session_id: str,
    voice: str | None,
    text: str,
    *,
    sent: float,
    latency_ms: float | None = None,
    speaking_s: float | None = None,
    cancel: bool = False,
) -> int:
    row = store.add(session_id=session_id, text=text, voice_id=voice, route=TaskRoute.REST).row_id
    store.mark_sent(row, at=sent)
    if latency_ms is not None:
        started = sent + latency_ms / 1000
        store.mark_speaking(row, at=started)
        if speaking_s is not None:
            store.mark_spoken(row, at=started + speaking_s)
        elif cancel:
            store.mark_cancelled(row, "stopped", at=started + 0.5)
    elif cancel:
        store.mark_cancelled(row, "stopped", at=sent + 0.5)
    return row


def test_figures_per_voice_from_the_log(store: TaskLogStore) -> None:
    session(store, "s0", 0)
    session(store, "s1", 1)
    for n, ms in enumerate((100, 200, 300, 400, 1000)):
        line(store, "s0", "A", "x" * 20, sent=10.0 + 5 * n, latency_ms=ms, speaking_s=2.0)
    line(store, "s1", "B", "y" * 30, sent=40.0, latency_ms=250, speaking_s=1.5)
    line(store, "s1", "B", "never started", sent=41.0)  # sent, not started: counted as sent
    line(store, "s1", "B", "cut off", sent=42.0, latency_ms=150, cancel=True)  # no rate
    store.add(session_id="s1", text="queued only", voice_id="B", route=TaskRoute.REST)
    line(store, "s9", None, "z" * 10, sent=50.0, latency_ms=50, speaking_s=1.0)  # no registry

    result = latency_json(store)["voices"]
    assert list(result) == ["A", "B", ""]
    a = result["A"]
    assert (a["count"], a["sent"], a["p50_ms"], a["mean_ms"]) == (5, 5, 300.0, 400.0)
    assert a["p95_ms"] == pytest.approx(880.0)  # between the two highest, inclusive method
    assert a["speaking_rate_cps"] == 10.0 and a["slots"] == [0]
    b = result["B"]
    assert (b["count"], b["sent"], b["p50_ms"], b["p95_ms"]) == (2, 3, 200.0, 245.0)
    assert b["speaking_rate_cps"] == 20.0 and b["slots"] == [1]
    assert result[""]["slots"] == []
    assert a["send_to_speaking"] == {"p50_ms": 300.0, "p95_ms": pytest.approx(880.0)}
    assert set(latency_json(store, slot=1)["voices"]) == {"B"}
    assert set(latency_json(store, since=30.5)["voices"]) == {"B", ""}
    assert latency_json(store, since=1e12) == {"voices": {}}


def test_lines_queued_back_to_back_count_from_the_end_of_the_line_before(
    store: TaskLogStore,
) -> None:
    """Three lines sent at once: the second and third wait while the first is said. Their
    start latency counts from the end of the line before; the raw figure keeps the wait."""
    rows = [
        store.add(session_id="s", text=t, voice_id="A", route=TaskRoute.REST).row_id
        for t in ("one", "two", "three")
    ]
    for row in rows:
        store.mark_sent(row, at=10.0)
    for row, (start, end) in zip(rows, ((10.2, 12.0), (12.3, 14.0), (14.1, 15.0)), strict=True):
        store.mark_speaking(row, at=start)
        store.mark_spoken(row, at=end)
    other = store.add(session_id="t", text="elsewhere", voice_id="A", route=TaskRoute.REST)
    store.mark_sent(other.row_id, at=11.0)  # another session: not behind these lines
    store.mark_speaking(other.row_id, at=11.4)
    figures_a = latency_json(store)["voices"]["A"]
    assert figures_a["count"] == 4
    assert figures_a["p50_ms"] == pytest.approx(250.0)  # of 200, 300, 100, 400
    assert figures_a["mean_ms"] == pytest.approx(250.0)
    assert figures_a["send_to_speaking"]["p50_ms"] == pytest.approx(1350.0)  # 200 400 2300 4100


def test_one_line_gives_its_own_figure_and_none_gives_none() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0, 3.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0], 100) == 3.0
    assert figures([]) == {}


def test_a_clock_step_backwards_is_not_a_negative_latency(store: TaskLogStore) -> None:
    row = store.add(session_id="s", text="t", voice_id="A", route=TaskRoute.REST).row_id
    store.mark_sent(row, at=10.0)
    store.mark_speaking(row, at=9.5)
    assert latency_json(store)["voices"]["A"]["p50_ms"] == 0.0


# -- schema 4 ----------------------------------------------------------------------------------


def test_phases_are_recorded_once_each_and_kept_when_recorded_again(store: TaskLogStore) -> None:
    session(store, "s1", 1)
    store.record_phases("s1", requested_at=1.0, sdk_ready_at=2.0)
    store.record_phases("s1", sdk_ready_at=9.0, live_at=3.0)  # the first time stays
    store.record_phases("unknown", live_at=1.0)  # ignored
    store.record_phases("s1")
    with pytest.raises(ValueError, match="no such phase"):
        store.record_phases("s1", bogus=1.0)
    session(store, "s1", None)  # recorded again (e.g. its end): slot and phases stay
    record = store.get_session("s1")
    assert record is not None
    assert (record.slot, record.requested_at, record.sdk_ready_at, record.live_at) == (
        1,
        1.0,
        2.0,
        3.0,
    )
    assert record.first_frame_at is None
    assert store.slots_by_session() == {"s1": (1, "jane")}


def test_ab_takes_are_kept_with_their_rows_and_ratings(store: TaskLogStore) -> None:
    takes = [
        AbTake("r1", n, label, voice, None, 0, "Hello.", created_at=5.0)
        for n, (label, voice) in enumerate((("A", "v1"), ("B", "v2")))
    ]
    store.add_ab_takes(takes)
    row = line(store, "s", "v1", "Hello.", sent=1.0, latency_ms=100, speaking_s=1.0)
    store.link_ab_take("r1", 0, row)
    store.rate_ab_take("r1", 1, 4, at=7.0)
    stored = store.ab_takes("r1")
    assert (stored[0].row_id, stored[0].rating) == (row, None)
    assert (stored[1].rating, stored[1].rated_at) == (4, 7.0)
    store.rate_ab_take("r1", 1, None)
    assert store.ab_takes("r1")[1].rating is None
    for bad in (0, 6):
        with pytest.raises(ValueError):
            store.rate_ab_take("r1", 0, bad)
    with pytest.raises(KeyError):
        store.rate_ab_take("r1", 9, 3)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_ab_takes(takes)  # the same takes twice: all or none
    assert store.ab_runs() == ["r1"]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_log_is_migrated_and_keeps_its_rows(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite3"
    raw = sqlite3.connect(path)
    for step in range(1, version + 1):
        raw.executescript(_MIGRATIONS[step])
    raw.execute(
        "INSERT INTO tasks (session_id, text, text_fold, voice_id, route, state,"
        " created_at, sent_at, started_at, ended_at) VALUES"
        " ('s1', 'Old line.', 'old line.', 'v', 'rest', 'spoken', 1, 2, 2.25, 4.25)"
    )
    raw.execute(
        "INSERT INTO sessions (session_id, backend, avatar_id, voice_id, created_at,"
        " max_duration) VALUES ('s1', 'b', 'jane', 'v', 1, 60)"
    )
    raw.execute(f"PRAGMA user_version = {version}")
    raw.commit()
    raw.close()
    with TaskLogStore(path) as store:
        (old,) = store.query()
        assert old.text == "Old line." and old.latency_ms == 250.0
        (record,) = store.sessions()
        assert record.slot is None and record.requested_at is None
        assert latency_json(store)["voices"]["v"]["p50_ms"] == 250.0
        assert store.ab_runs() == []
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    finally:
        raw.close()
