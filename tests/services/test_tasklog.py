"""The task log store: transitions, queries, restart, crash durability, session registry."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from avaturn_desktop.core.tasks import (
    TERMINAL_STATES,
    SessionRecord,
    TaskRecord,
    TaskRoute,
    TaskState,
)
from avaturn_desktop.services.tasklog import (
    DEFAULT_FILE_NAME,
    SCHEMA_VERSION,
    IllegalTransitionError,
    TaskLogStore,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "log" / "tasks.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[TaskLogStore]:
    with TaskLogStore(db_path) as s:
        yield s


def add(store: TaskLogStore, text: str = "Hello.", session: str = "s1", at: float = 100.0) -> int:
    return store.add(
        session_id=session, text=text, voice_id="v1", route=TaskRoute.REST, at=at
    ).row_id


def test_schema_and_pragmas(db_path: Path) -> None:
    TaskLogStore(db_path).close()
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    TaskLogStore(db_path).close()  # reopening an up-to-date file migrates nothing


def test_newer_schema_is_refused(db_path: Path) -> None:
    TaskLogStore(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(RuntimeError, match="newer version"):
        TaskLogStore(db_path)


def test_open_default_lives_in_the_data_dir(_isolated_home: Path) -> None:
    with TaskLogStore.open_default() as store:
        assert store.path == _isolated_home / DEFAULT_FILE_NAME
        add(store)
    assert (_isolated_home / DEFAULT_FILE_NAME).is_file()


def test_full_life_of_a_task(store: TaskLogStore) -> None:
    rec = store.add(session_id="s1", text="Hi there.", voice_id=None, route=TaskRoute.SDK, at=10)
    assert rec.state is TaskState.QUEUED and rec.created_at == 10.0 and rec.route is TaskRoute.SDK
    assert store.get(rec.row_id) == rec
    rec = store.mark_sent(rec.row_id, at=11.0)
    assert rec.state is TaskState.SENT and rec.sent_at == 11.0
    rec = store.mark_acked(rec.row_id, "t-1", at=11.1)
    assert rec.state is TaskState.SENT and rec.task_id == "t-1" and rec.acked_at == 11.1
    rec = store.mark_speaking(rec.row_id, at=11.25)
    assert rec.state is TaskState.SPEAKING and rec.started_at == 11.25
    rec = store.mark_spoken(rec.row_id, at=13.75)
    assert rec.state is TaskState.SPOKEN and rec.ended_at == 13.75
    assert rec.latency_ms == pytest.approx(250.0)
    assert rec.duration_s == pytest.approx(2.5)
    assert rec.is_terminal and rec.reason is None
    assert store.find_by_task_id("t-1") == rec
    assert store.find_by_task_id("nope") is None


def test_times_default_to_now(store: TaskLogStore) -> None:
    before = time.time()
    row = store.add(session_id="s", text="x", voice_id=None, route=TaskRoute("rest")).row_id
    rec = store.mark_sent(row)
    assert before <= rec.created_at <= (rec.sent_at or 0) <= time.time()


def test_cancel_and_fail_need_a_reason(store: TaskLogStore) -> None:
    a, b = add(store), add(store)
    rec = store.mark_cancelled(a, "stopped by the presenter", at=5)
    assert rec.state is TaskState.CANCELLED and rec.reason == "stopped by the presenter"
    assert rec.ended_at == 5.0 and rec.duration_s is None and rec.latency_ms is None
    with pytest.raises(ValueError, match="reason"):
        store.mark_failed(b, "  ")
    store.mark_sent(b)
    rec = store.mark_failed(b, "HTTP 500")
    assert rec.state is TaskState.FAILED and rec.reason == "HTTP 500"


def test_spoken_without_a_start_event(store: TaskLogStore) -> None:
    row = add(store)
    store.mark_sent(row, at=1)
    rec = store.mark_spoken(row, at=2)
    assert rec.state is TaskState.SPOKEN and rec.started_at is None and rec.duration_s is None


def test_cancel_while_speaking_keeps_the_partial_duration(store: TaskLogStore) -> None:
    row = add(store)
    store.mark_sent(row, at=1)
    store.mark_speaking(row, at=2)
    assert store.mark_cancelled(row, "stop", at=3.5).duration_s == pytest.approx(1.5)


ILLEGAL = [
    ([], "speaking"),
    ([], "spoken"),
    (["sent"], "sent"),
    (["sent", "speaking"], "sent"),
    (["sent", "speaking"], "speaking"),
    (["sent", "speaking", "spoken"], "sent"),
    (["sent", "speaking", "spoken"], "speaking"),
    (["sent", "speaking", "spoken"], "cancelled"),
    (["sent", "speaking", "spoken"], "spoken"),
    (["cancelled"], "speaking"),  # a late start event must not resurrect a cancelled task
    (["sent", "cancelled"], "spoken"),
    (["sent", "failed"], "failed"),
    (["failed"], "sent"),
    (["cancelled"], "failed"),
]


def _apply(store: TaskLogStore, row: int, step: str) -> TaskRecord:
    if step == "sent":
        return store.mark_sent(row)
    if step == "speaking":
        return store.mark_speaking(row)
    if step == "spoken":
        return store.mark_spoken(row)
    if step == "cancelled":
        return store.mark_cancelled(row, "why")
    return store.mark_failed(row, "why")


@pytest.mark.parametrize(("path", "step"), ILLEGAL)
def test_illegal_transitions_raise_and_change_nothing(
    store: TaskLogStore, path: list[str], step: str
) -> None:
    row = add(store)
    for done in path:
        _apply(store, row, done)
    before = store.get(row)
    with pytest.raises(IllegalTransitionError, match=f"task {row} is {before.state}") as info:
        _apply(store, row, step)
    assert isinstance(info.value, ValueError)
    assert info.value.current is before.state
    assert store.get(row) == before


def test_acks(store: TaskLogStore) -> None:
    row = add(store)
    with pytest.raises(ValueError, match="not sent"):
        store.mark_acked(row, "t")
    store.mark_sent(row)
    store.mark_speaking(row)
    store.mark_spoken(row)
    # the answer may arrive after the task was spoken: recorded, state unchanged
    rec = store.mark_acked(row, "t", at=9)
    assert rec.state is TaskState.SPOKEN and rec.task_id == "t" and rec.acked_at == 9
    assert store.mark_acked(row, "t", at=10) == rec  # same id again: nothing changes
    with pytest.raises(ValueError, match="already acknowledged as 't'"):
        store.mark_acked(row, "other")
    with pytest.raises(ValueError, match="empty"):
        store.mark_acked(row, "")


def test_unknown_rows(store: TaskLogStore) -> None:
    with pytest.raises(KeyError, match="no task 42"):
        store.get(42)
    with pytest.raises(KeyError):
        store.mark_sent(42)
    with pytest.raises(KeyError):
        store.mark_acked(42, "t")
    with pytest.raises(KeyError, match="no task 42"):
        store.get_many([42])


def test_terminal_states() -> None:
    assert {TaskState.SPOKEN, TaskState.CANCELLED, TaskState.FAILED} == TERMINAL_STATES


def _populate(store: TaskLogStore) -> dict[str, int]:
    rows = {
        "a": add(store, "Hello World", "s1", 1),
        "b": add(store, "100% sure, under_score", "s1", 2),
        "c": add(store, "Straße and ÄRGER", "s2", 3),
        "d": add(store, "hello again", "s2", 4),
        "e": add(store, "plain", "s3", 5),
    }
    store.mark_sent(rows["a"])
    store.mark_sent(rows["c"])
    store.mark_speaking(rows["c"])
    store.mark_spoken(rows["c"])
    store.mark_cancelled(rows["d"], "stop")
    return rows


def test_filters_search_count_row_ids(store: TaskLogStore) -> None:
    r = _populate(store)

    def ids(**kw: object) -> list[int]:
        return [rec.row_id for rec in store.query(**kw)]  # type: ignore[arg-type]

    assert ids() == [r["a"], r["b"], r["c"], r["d"], r["e"]]
    assert ids(newest_first=True) == [r["e"], r["d"], r["c"], r["b"], r["a"]]
    assert ids(session_id="s2") == [r["c"], r["d"]]
    assert ids(states=[TaskState.QUEUED]) == [r["b"], r["e"]]
    assert ids(states={TaskState.SPOKEN, TaskState.CANCELLED}) == [r["c"], r["d"]]
    assert ids(states=[]) == []
    assert ids(search="hello") == [r["a"], r["d"]]
    assert ids(search="HELLO", session_id="s2") == [r["d"]]
    assert ids(search="%") == [r["b"]]  # wildcards are plain characters
    assert ids(search="_") == [r["b"]]
    assert ids(search="a%b") == []
    assert ids(search="strasse") == [r["c"]]  # case folding beyond ASCII
    assert ids(search="ärger") == [r["c"]]
    assert ids(search="") == ids()
    assert ids(offset=1, limit=2) == [r["b"], r["c"]]
    assert ids(limit=0) == []
    assert ids(newest_first=True, limit=1, session_id="s1") == [r["b"]]
    assert store.count() == 5
    assert store.count(session_id="s1", states=[TaskState.SENT]) == 1
    assert store.count(search="hello", states=[TaskState.CANCELLED]) == 1
    assert store.row_ids(search="hello") == [r["a"], r["d"]]
    assert store.row_ids(session_id="nope") == []
    got = store.get_many([r["d"], r["a"], r["d"]])
    assert [rec.row_id for rec in got] == [r["d"], r["a"], r["d"]]
    assert store.get_many([]) == []
    assert store.session_ids() == ["s1", "s2", "s3"]


def test_get_many_large(store: TaskLogStore) -> None:
    rows = [add(store, f"line {i}") for i in range(1200)]
    wanted = list(reversed(rows))
    assert [rec.row_id for rec in store.get_many(wanted)] == wanted


def test_restart_keeps_everything(db_path: Path) -> None:
    with TaskLogStore(db_path) as store:
        _populate(store)
        store.record_session(session("s1", created=1))
        before = store.query()
        sessions = store.sessions()
    with TaskLogStore(db_path) as store:
        assert store.query() == before
        assert store.sessions() == sessions


def test_text_round_trips(store: TaskLogStore) -> None:
    texts = [
        "line\nbreak",
        "quotes \"' ,",
        "emoji 😀👍🏽",
        "RTL שלום עולם",
        "ctl \x00\x01\x7f\t",
        "",
    ]
    rows = [add(store, t) for t in texts]
    assert [store.get(r).text for r in rows] == texts


def session(sid: str, backend: str = "http://127.0.0.1:1", created: float = 1.0) -> SessionRecord:
    return SessionRecord(
        session_id=sid, backend=backend, avatar_id="jane", created_at=created, max_duration=600
    )


def test_session_registry(store: TaskLogStore) -> None:
    store.record_session(session("a", created=1))
    store.record_session(session("b", backend="https://api.avaturn.live", created=2))
    store.record_session(session("c", created=3))
    assert [s.session_id for s in store.open_sessions()] == ["a", "b", "c"]
    assert [s.session_id for s in store.open_sessions("http://127.0.0.1:1")] == ["a", "c"]
    store.end_session("a", "terminated", at=10)
    store.end_session("a", "later reason", at=11)  # first end wins
    ended = store.get_session("a")
    assert ended is not None and ended.ended_at == 10 and ended.end_reason == "terminated"
    assert not ended.is_open
    assert [s.session_id for s in store.open_sessions()] == ["b", "c"]
    assert [s.session_id for s in store.sessions()] == ["a", "b", "c"]
    with pytest.raises(KeyError):
        store.end_session("zzz", "x")
    store.record_session(session("c", created=3).model_copy(update={"voice_id": "v9"}))
    again = store.get_session("c")
    assert again is not None and again.voice_id == "v9"
    assert store.get_session("nope") is None


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from avaturn_desktop.core.tasks import SessionRecord, TaskRoute
    from avaturn_desktop.services.tasklog import TaskLogStore

    store = TaskLogStore(Path(sys.argv[1]))
    store.record_session(SessionRecord(session_id="orphan", backend="http://sim",
        avatar_id="jane", created_at=1.0, max_duration=600))
    store.record_session(SessionRecord(session_id="done", backend="http://sim",
        avatar_id="jane", created_at=2.0, max_duration=600))
    store.end_session("done", "terminated")
    for i in range(50):
        row = store.add(session_id="orphan", text=f"line {i}", voice_id=None, route=TaskRoute.REST)
        store.mark_sent(row.row_id)
        if i % 2:
            store.mark_acked(row.row_id, f"t{i}")
            store.mark_speaking(row.row_id)
        if i % 4 == 3:
            store.mark_spoken(row.row_id)
    sys.stdout.write("committed\\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_writes_survive_a_killed_process(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout == "committed\n"
    with TaskLogStore(db_path) as store:
        rows = store.query()
        assert [r.text for r in rows] == [f"line {i}" for i in range(50)]
        for i, rec in enumerate(rows):
            expected = TaskState.SENT
            if i % 2:
                expected = TaskState.SPOKEN if i % 4 == 3 else TaskState.SPEAKING
                assert rec.task_id == f"t{i}"
            assert rec.state is expected
        assert [s.session_id for s in store.open_sessions("http://sim")] == ["orphan"]
        done = store.get_session("done")
        assert done is not None and done.end_reason == "terminated"


def test_stays_fast_with_many_rows(store: TaskLogStore) -> None:
    # 20,000 rows through add() (about a second here; 100,000 would take about six) ...
    timings = []
    for i in range(20_000):
        start = time.perf_counter()
        add(store, f"Sentence {i} of the long test.", f"s{i // 1000}", float(i))
        timings.append(time.perf_counter() - start)
    timings.sort()
    assert timings[len(timings) // 2] < 0.001  # a typical write: well under a millisecond
    # ... and 80,000 more straight into the table, to query a 100,000-row log
    raw = sqlite3.connect(store.path)
    with raw:
        raw.executemany(
            "INSERT INTO tasks (session_id, text, text_fold, route, state, created_at)"
            " VALUES (?, ?, ?, 'rest', 'spoken', ?)",
            ((f"b{i // 1000}", f"Bulk {i}", f"bulk {i}", float(i)) for i in range(80_000)),
        )
    raw.close()
    start = time.perf_counter()
    assert store.count() == 100_000
    assert store.count(states=[TaskState.QUEUED]) == 20_000
    assert len(store.row_ids(session_id="b7")) == 1000
    assert store.count(search="BULK 7999") == 11  # 7999, 79990..79999
    assert len(store.query(session_id="s3", newest_first=True, limit=100)) == 100
    assert len(store.get_many(store.row_ids()[50_000:50_200])) == 200
    row = add(store, "one more")
    store.mark_sent(row)
    assert time.perf_counter() - start < 2.0


def test_add_many_logs_every_line_in_order_in_one_go(store: TaskLogStore, db_path: Path) -> None:
    texts = ["One.", "Two, with a comma.", "Three 🎤."]
    records = store.add_many(texts, session_id="s", voice_id="v", route=TaskRoute.REST, at=5.0)
    assert [r.text for r in records] == texts
    assert [r.state for r in records] == [TaskState.QUEUED] * 3
    assert [r.row_id for r in records] == sorted(r.row_id for r in records)
    assert store.get(records[1].row_id) == records[1]
    assert store.add_many([], session_id="s", voice_id=None, route=TaskRoute.REST) == []
    with sqlite3.connect(db_path) as other:  # committed: another connection sees them
        assert other.execute("SELECT COUNT(*) FROM tasks").fetchone() == (3,)


V1_TASKS = """
    CREATE TABLE tasks (
        row_id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, text TEXT NOT NULL,
        text_fold TEXT NOT NULL, voice_id TEXT,
        route TEXT NOT NULL CHECK (route IN ('rest', 'sdk')),
        state TEXT NOT NULL CHECK (
            state IN ('queued', 'sent', 'speaking', 'spoken', 'cancelled', 'failed')),
        reason TEXT, task_id TEXT, created_at REAL NOT NULL, sent_at REAL, acked_at REAL,
        started_at REAL, ended_at REAL);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY, backend TEXT NOT NULL, avatar_id TEXT NOT NULL,
        voice_id TEXT, created_at REAL NOT NULL, ended_at REAL, end_reason TEXT,
        max_duration INTEGER NOT NULL);
    INSERT INTO tasks VALUES (1, 's1', 'Old line.', 'old line.', 'v1', 'sdk', 'spoken', NULL,
        't1', 1.0, 2.0, 2.5, 3.0, 4.0);
    INSERT INTO tasks VALUES (2, 's1', 'Cut.', 'cut.', NULL, 'rest', 'cancelled', 'stopped',
        NULL, 5.0, NULL, NULL, NULL, 6.0);
    INSERT INTO sessions VALUES ('s1', 'http://sim', 'jane', 'v1', 1.0, NULL, NULL, 600);
    PRAGMA user_version = 1;
"""


def test_a_version_1_log_keeps_every_row_and_learns_route_llm(db_path: Path) -> None:
    from avaturn_desktop.core.tasks import QuestionState

    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    raw.executescript(V1_TASKS)
    raw.close()
    with TaskLogStore(db_path) as store:
        old = store.query()
        assert [(r.row_id, r.route, r.state, r.reason, r.task_id, r.question_id) for r in old] == [
            (1, TaskRoute.SDK, TaskState.SPOKEN, None, "t1", None),
            (2, TaskRoute.REST, TaskState.CANCELLED, "stopped", None, None),
        ]
        assert old[0].latency_ms == 1000.0 and store.count(search="OLD") == 1
        assert [s.session_id for s in store.open_sessions()] == ["s1"]
        assert store.find_by_task_id("t1") == old[0]
        store.add_question("q1", session_id="s1", text="Why?", at=7.0)
        row = store.add(session_id="s1", text="Because.", voice_id=None, route=TaskRoute.LLM,
                        question_id="q1")  # fmt: skip
        assert store.get(row.row_id) == row and row.route is TaskRoute.LLM
        assert store.answer_rows("q1") == [row] and store.answer_rows("q2") == []
        ended = store.end_question("q1", QuestionState.FAILED, "broke off", at=8.0)
        assert (ended.state, ended.reason, ended.ended_at) == (
            QuestionState.FAILED,
            "broke off",
            8.0,
        )
        again = store.end_question("q1", QuestionState.ANSWERED, None, at=9.0)
        assert again == ended  # a question that ended stays as it ended
        with pytest.raises(ValueError, match="ends answered"):
            store.end_question("q1", QuestionState.ANSWERING)
        with pytest.raises(KeyError):
            store.get_question("nope")
    with TaskLogStore(db_path) as store:  # and it is all there after a restart
        assert [q.question_id for q in store.questions("s1")] == ["q1"]
        assert store.questions("other") == []
        assert len(store.query()) == 3


def test_a_version_2_log_keeps_its_resumed_links(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    raw.executescript(V1_TASKS.replace("PRAGMA user_version = 1;", ""))
    raw.executescript(
        """
        ALTER TABLE tasks ADD COLUMN resumed_from INTEGER REFERENCES tasks (row_id);
        CREATE UNIQUE INDEX tasks_resumed_once ON tasks (resumed_from)
            WHERE resumed_from IS NOT NULL;
        INSERT INTO tasks (row_id, session_id, text, text_fold, route, state, created_at,
            resumed_from) VALUES (3, 's2', 'Cut.', 'cut.', 'rest', 'queued', 7.0, 2);
        PRAGMA user_version = 2;
        """
    )
    raw.close()
    with TaskLogStore(db_path) as store:
        assert [(r.row_id, r.resumed_from) for r in store.query()] == [(1, None), (2, None), (3, 2)]
        with pytest.raises(ValueError, match="already said again"):
            store.add(session_id="s3", text="Cut.", voice_id=None, route=TaskRoute.REST,
                      resumed_from=2)  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError):  # the link still points into the table
            store._db.execute("UPDATE tasks SET resumed_from = 99 WHERE row_id = 3")
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {row[1] for row in raw.execute("PRAGMA index_list(tasks)")}
        assert {"tasks_resumed_once", "tasks_by_question", "tasks_by_session"} <= indexes
    finally:
        raw.close()


def test_add_many_links_an_answers_lines_to_its_question(store: TaskLogStore) -> None:
    records = store.add_many(["One.", "Two."], session_id="s", voice_id=None,
                             route=TaskRoute.LLM, question_id="q7")  # fmt: skip
    assert [r.question_id for r in records] == ["q7", "q7"]
    assert store.answer_rows("q7") == records == [store.get(r.row_id) for r in records]


# -- checkpoints on their own thread ---------------------------------------------------------


def test_the_writing_connection_never_checkpoints(store: TaskLogStore) -> None:
    """Checkpoints (with their fsyncs) are not run inside the GUI thread's commits."""
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0


def test_the_log_is_copied_back_while_the_app_runs_and_all_of_it_at_close(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avaturn_desktop.services import tasklog

    monkeypatch.setattr(tasklog, "CHECKPOINT_EVERY_S", 0.02)
    store = TaskLogStore(db_path)
    try:
        before = db_path.stat().st_size
        for n in range(300):
            store.add(session_id="s1", text=f"Line {n}.", voice_id="v", route=TaskRoute.REST)
        # the rows reach the database file itself (not only its write-ahead log) while the
        # store is open: only a checkpoint writes there, and the writer runs none
        assert store._checkpoints.checkpointed.wait(20), "no checkpoint while the store was open"
        assert db_path.stat().st_size > before
        thread = store._checkpoints._thread
        assert thread.is_alive()
    finally:
        store.close()
    assert not thread.is_alive()
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 300
