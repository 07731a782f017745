"""The task log: every line of speech and every state change, durable in SQLite.

One connection, in WAL mode with ``synchronous=NORMAL``: each write is one small transaction,
committed before the method returns, so a crash of the app (or a kill) loses nothing that was
written; only a power cut or an OS crash can lose the last few commits. Writes happen on the GUI
thread and typically take a few tens of microseconds.

Checkpoints (copying the write-ahead log back into the database, with an fsync of each) run on
a thread of their own, with a connection of its own, about once a second when there was a
write: by default SQLite runs them in the writing connection whenever the log passes 1,000
pages, and on a busy disk such a commit held the GUI thread for tens of milliseconds. A
passive checkpoint never blocks the writer; the log is copied back when the store closes.

Transitions (see :mod:`avaturn_desktop.core.tasks`): ``mark_*`` checks the current state inside
the same UPDATE, so a late event cannot move a task backwards or out of a terminal state, e.g. a
late "started speaking" for a cancelled task raises :class:`IllegalTransitionError` (a
``ValueError``) and leaves the row alone; callers that expect late events check
``get(row_id).is_terminal`` first or catch the error. ``mark_acked`` records the service's
answer without changing the state, so it is also accepted after speaking started or the task
ended (the answer can arrive late), but not before ``mark_sent``.

Search is a case-insensitive substring match: the text is stored a second time, case-folded,
and matched with ``instr``, so ``%`` and ``_`` in a search are plain characters (no LIKE
wildcards to escape) and non-ASCII letters fold too (SQLite's LIKE folds ASCII only).

A line said again after its session died (see :mod:`avaturn_desktop.services.resume`) is a new
row whose ``resumed_from`` names the row it continues; the old row must have ended cancelled or
failed, and a unique index lets each row be continued once, so the links form chains in which
a line is spoken at most once. Schema 2 added the column; older files are migrated on opening.

Ask mode's questions have their own table: what was asked, in which session, and how the answer
ended (answered, stopped, replaced by a newer question, failed) with a reason that says what
was not said. The answer's lines are ordinary task rows, route ``llm``, with the question's id
(schema 3).

Schema 4 (avatars side by side, the voice bench): a session remembers which avatar slot ran it
and when each phase of connecting happened (create sent, SDK ready, live, first frame); the
task rows say which slot through their session. A/B comparisons keep their takes (which voice
said which line, as which task row) and the operator's ratings in ``ab_takes``.

The session registry remembers every avatar session the app created and whether it was ended,
so after a crash the app can find and terminate the sessions it left open. Task rows do not
reference it with a foreign key: a task may be logged for a session the registry never saw.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from avaturn_desktop.core.paths import data_dir
from avaturn_desktop.core.tasks import (
    ALLOWED_FROM,
    QuestionRecord,
    QuestionState,
    SessionRecord,
    TaskRecord,
    TaskRoute,
    TaskState,
)

log = logging.getLogger("avaturn.tasklog")

DEFAULT_FILE_NAME: Final = "tasklog.sqlite3"
#: How often the checkpoint thread looks whether the write-ahead log grew (seconds).
CHECKPOINT_EVERY_S: Final = 1.0
SCHEMA_VERSION: Final = 4

_MIGRATIONS: Final[dict[int, str]] = {
    1: """
        CREATE TABLE tasks (
            row_id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            text TEXT NOT NULL,
            text_fold TEXT NOT NULL,
            voice_id TEXT,
            route TEXT NOT NULL CHECK (route IN ('rest', 'sdk')),
            state TEXT NOT NULL CHECK (
                state IN ('queued', 'sent', 'speaking', 'spoken', 'cancelled', 'failed')),
            reason TEXT,
            task_id TEXT,
            created_at REAL NOT NULL,
            sent_at REAL,
            acked_at REAL,
            started_at REAL,
            ended_at REAL
        );
        CREATE INDEX tasks_by_session ON tasks (session_id, row_id);
        CREATE INDEX tasks_by_state ON tasks (state, row_id);
        CREATE INDEX tasks_by_task_id ON tasks (task_id) WHERE task_id IS NOT NULL;
        CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            backend TEXT NOT NULL,
            avatar_id TEXT NOT NULL,
            voice_id TEXT,
            created_at REAL NOT NULL,
            ended_at REAL,
            end_reason TEXT,
            max_duration INTEGER NOT NULL
        );
        CREATE INDEX sessions_open ON sessions (backend, created_at) WHERE ended_at IS NULL;
    """,
    # A line said again in a later session (after its session died) points at the row it
    # continues; a row is continued at most once, so a line cannot be carried over twice.
    2: """
        ALTER TABLE tasks ADD COLUMN resumed_from INTEGER REFERENCES tasks (row_id);
        CREATE UNIQUE INDEX tasks_resumed_once ON tasks (resumed_from)
            WHERE resumed_from IS NOT NULL;
    """,
    # Ask mode: route 'llm' and each answer's lines linked to their question. SQLite cannot
    # change a CHECK in place, so the table is rebuilt (SQLite's own recipe: foreign keys off
    # during migrations, checked before the commit, see _migrate).
    3: """
        CREATE TABLE tasks_v3 (
            row_id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            text TEXT NOT NULL,
            text_fold TEXT NOT NULL,
            voice_id TEXT,
            route TEXT NOT NULL CHECK (route IN ('rest', 'sdk', 'llm')),
            state TEXT NOT NULL CHECK (
                state IN ('queued', 'sent', 'speaking', 'spoken', 'cancelled', 'failed')),
            reason TEXT,
            task_id TEXT,
            created_at REAL NOT NULL,
            sent_at REAL,
            acked_at REAL,
            started_at REAL,
            ended_at REAL,
            resumed_from INTEGER REFERENCES tasks (row_id),
            question_id TEXT
        );
        INSERT INTO tasks_v3 (row_id, session_id, text, text_fold, voice_id, route, state,
            reason, task_id, created_at, sent_at, acked_at, started_at, ended_at, resumed_from)
            SELECT row_id, session_id, text, text_fold, voice_id, route, state, reason, task_id,
                created_at, sent_at, acked_at, started_at, ended_at, resumed_from FROM tasks;
        DROP TABLE tasks;
        ALTER TABLE tasks_v3 RENAME TO tasks;
        CREATE INDEX tasks_by_session ON tasks (session_id, row_id);
        CREATE INDEX tasks_by_state ON tasks (state, row_id);
        CREATE INDEX tasks_by_task_id ON tasks (task_id) WHERE task_id IS NOT NULL;
        CREATE UNIQUE INDEX tasks_resumed_once ON tasks (resumed_from)
            WHERE resumed_from IS NOT NULL;
        CREATE INDEX tasks_by_question ON tasks (question_id, row_id)
            WHERE question_id IS NOT NULL;
        CREATE TABLE questions (
            question_id TEXT PRIMARY KEY,
            session_id TEXT,
            text TEXT NOT NULL,
            state TEXT NOT NULL CHECK (
                state IN ('answering', 'answered', 'stopped', 'replaced', 'failed')),
            reason TEXT,
            asked_at REAL NOT NULL,
            ended_at REAL
        );
    """,
    # Avatars side by side: the slot that ran a session, and its phases of connecting; A/B
    # takes with their ratings (a take is one line said by one voice, as one task row).
    4: """
        ALTER TABLE sessions ADD COLUMN slot INTEGER;
        ALTER TABLE sessions ADD COLUMN requested_at REAL;
        ALTER TABLE sessions ADD COLUMN sdk_ready_at REAL;
        ALTER TABLE sessions ADD COLUMN live_at REAL;
        ALTER TABLE sessions ADD COLUMN first_frame_at REAL;
        CREATE TABLE ab_takes (
            run_id TEXT NOT NULL,
            take INTEGER NOT NULL,
            label TEXT NOT NULL,
            voice_id TEXT NOT NULL,
            slot INTEGER,
            line INTEGER NOT NULL,
            text TEXT NOT NULL,
            row_id INTEGER REFERENCES tasks (row_id),
            rating INTEGER CHECK (rating BETWEEN 1 AND 5),
            rated_at REAL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, take)
        );
    """,
}

_TASK_COLUMNS: Final = (
    "row_id, session_id, text, voice_id, route, state, reason, task_id, "
    "created_at, sent_at, acked_at, started_at, ended_at, resumed_from, question_id"
)
_TASK_FIELDS: Final = tuple(_TASK_COLUMNS.split(", "))
_QUESTION_COLUMNS: Final = "question_id, session_id, text, state, reason, asked_at, ended_at"
_QUESTION_FIELDS: Final = tuple(_QUESTION_COLUMNS.split(", "))
_SESSION_COLUMNS: Final = (
    "session_id, backend, avatar_id, voice_id, created_at, ended_at, end_reason, max_duration, "
    "slot, requested_at, sdk_ready_at, live_at, first_frame_at"
)
_SESSION_FIELDS: Final = tuple(_SESSION_COLUMNS.split(", "))
#: The phases of connecting a session may have recorded (see :meth:`TaskLogStore.record_phases`).
PHASE_COLUMNS: Final = ("requested_at", "sdk_ready_at", "live_at", "first_frame_at")
_AB_COLUMNS: Final = (
    "run_id, take, label, voice_id, slot, line, text, row_id, rating, rated_at, created_at"
)
_AB_FIELDS: Final = tuple(_AB_COLUMNS.split(", "))
_IN_CHUNK: Final = 500  # ids per "IN (...)" query, well under SQLite's variable limit


class IllegalTransitionError(ValueError):
    """A ``mark_*`` call that the task's current state does not allow; the row is unchanged."""

    def __init__(self, row_id: int, current: TaskState, target: TaskState | str) -> None:
        super().__init__(f"task {row_id} is {current}; it cannot become {target}")
        self.row_id = row_id
        self.current = current
        self.target = target


def _task(row: tuple[Any, ...]) -> TaskRecord:
    # pydantic-core validates a dict faster than model_construct builds one, so validate
    return TaskRecord.model_validate(dict(zip(_TASK_FIELDS, row, strict=True)))


def _session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord.model_validate(dict(zip(_SESSION_FIELDS, row, strict=True)))


@dataclass(frozen=True)
class Timing:
    """One line that was sent, as the latency figures read it (:meth:`TaskLogStore.timings`)."""

    row_id: int
    session_id: str
    voice_id: str | None
    slot: int | None
    chars: int
    state: TaskState
    sent_at: float
    started_at: float | None
    ended_at: float | None

    @property
    def latency_ms(self) -> float | None:
        return None if self.started_at is None else (self.started_at - self.sent_at) * 1000.0

    @property
    def speaking_s(self) -> float | None:
        """How long the avatar spoke it, for a line it finished (None otherwise)."""
        if self.state is not TaskState.SPOKEN or self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class AbTake:
    """One line said by one voice in an A/B comparison, and what the operator made of it."""

    run_id: str
    take: int
    label: str
    voice_id: str
    slot: int | None
    line: int
    text: str
    row_id: int | None = None
    rating: int | None = None
    rated_at: float | None = None
    created_at: float = 0.0


def _now(at: float | None) -> float:
    return time.time() if at is None else float(at)


def _reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise ValueError("a cancelled or failed task needs a reason")
    return reason


def _where(
    session_id: str | None, states: Collection[TaskState] | None, search: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if session_id is not None:
        clauses.append("session_id = ?")
        params.append(session_id)
    if states is not None:
        wanted = sorted({TaskState(s).value for s in states})
        if not wanted:
            clauses.append("0")
        else:
            clauses.append(f"state IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
    if search:
        clauses.append("instr(text_fold, ?) > 0")
        params.append(search.casefold())
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class TaskLogStore:
    """The task log and session registry in one SQLite file (see the module docs)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: every statement commits on its own unless we BEGIN ourselves
        self._db = sqlite3.connect(str(path), isolation_level=None)
        try:
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            # checkpoints on their own thread (see the module docs), not in the GUI's commits
            self._db.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            self._db.close()
            raise
        self._checkpoints = _Checkpointer(path)

    @classmethod
    def open_default(cls) -> TaskLogStore:
        """The app's log, in its data dir (``AVATURN_DESKTOP_HOME`` wins)."""
        return cls(data_dir() / DEFAULT_FILE_NAME)

    def _migrate(self) -> None:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the task log {self.path} was written by a newer version of the app "
                f"(schema {version}, this app knows {SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return
        # SQLite's recipe for schema changes: foreign keys off (a table rebuild drops a table
        # others point at), then checked before each migration commits.
        self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                with self._transaction():
                    for statement in _MIGRATIONS[target].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    if self._db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                        raise RuntimeError(
                            f"the task log {self.path} has broken links after migrating to "
                            f"schema {target}; it was left as it was"
                        )
                    self._db.execute(f"PRAGMA user_version = {target:d}")
        finally:
            self._db.execute("PRAGMA foreign_keys = ON")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._checkpoints.stop()
        self._db.close()  # the last connection to close copies the log back

    def __enter__(self) -> TaskLogStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- tasks -----------------------------------------------------------------------------

    def add(
        self,
        *,
        session_id: str,
        text: str,
        voice_id: str | None,
        route: TaskRoute,
        at: float | None = None,
        resumed_from: int | None = None,
        question_id: str | None = None,
    ) -> TaskRecord:
        """Log a new line of speech, ``queued`` (``resumed_from``, ``question_id``: see
        :meth:`add_many`)."""
        return self._insert(
            session_id, text, voice_id, TaskRoute(route), _now(at), resumed_from, question_id
        )

    def add_many(
        self,
        texts: Sequence[str],
        *,
        session_id: str,
        voice_id: str | None,
        route: TaskRoute,
        at: float | None = None,
        resumed_from: Sequence[int | None] | None = None,
        question_id: str | None = None,
    ) -> list[TaskRecord]:
        """Log several new lines (a pasted script) in one transaction: all of them or none.

        ``resumed_from`` (one entry per text, ``None`` for a fresh line) names the row each
        line continues: the same line, said again in this session because the session it was
        queued for ended before the avatar finished it. That row must have ended cancelled or
        failed (a line that was spoken is never said again) and may be continued only once;
        otherwise ``ValueError`` (``KeyError`` for a row that does not exist) and nothing is
        written. ``question_id``: the lines are a language model's answer to that question.
        """
        route = TaskRoute(route)
        created = _now(at)
        links = [None] * len(texts) if resumed_from is None else list(resumed_from)
        if len(links) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(links)} resumed_from entries")
        with self._transaction():
            return [
                self._insert(session_id, text, voice_id, route, created, link, question_id)
                for text, link in zip(texts, links, strict=True)
            ]

    def _insert(
        self,
        session_id: str,
        text: str,
        voice_id: str | None,
        route: TaskRoute,
        created: float,
        resumed_from: int | None,
        question_id: str | None = None,
    ) -> TaskRecord:
        if resumed_from is not None:
            self._check_resumable(resumed_from)
        try:
            cur = self._db.execute(
                "INSERT INTO tasks (session_id, text, text_fold, voice_id, route, state,"
                " created_at, resumed_from, question_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    text,
                    text.casefold(),
                    voice_id,
                    route.value,
                    "queued",
                    created,
                    resumed_from,
                    question_id,
                ),
            )
        except sqlite3.IntegrityError as exc:  # the unique index: someone continued it first
            raise ValueError(f"task {resumed_from} was already said again") from exc
        row_id = cur.lastrowid
        assert row_id is not None
        return _task(
            (row_id, session_id, text, voice_id, route.value, "queued", None, None, created)
            + (None,) * 4
            + (resumed_from, question_id)
        )

    def _check_resumable(self, row_id: int) -> None:
        old = self.get(row_id)
        if old.state not in (TaskState.CANCELLED, TaskState.FAILED):
            raise ValueError(
                f"task {row_id} is {old.state}; only a line that was cut off or never spoken "
                "(cancelled or failed) can be said again in a later session"
            )
        if (successor := self.successor(row_id)) is not None:
            raise ValueError(f"task {row_id} was already said again as task {successor.row_id}")

    def _move(self, row_id: int, target: TaskState, **sets: Any) -> TaskRecord:
        allowed = sorted(s.value for s in ALLOWED_FROM[target])
        assignments = "".join(f", {column} = ?" for column in sets)
        cur = self._db.execute(
            f"UPDATE tasks SET state = ?{assignments}"
            f" WHERE row_id = ? AND state IN ({', '.join('?' * len(allowed))})",
            (target.value, *sets.values(), row_id, *allowed),
        )
        record = self.get(row_id)
        if cur.rowcount != 1:
            raise IllegalTransitionError(row_id, record.state, target)
        return record

    def mark_sent(self, row_id: int, *, at: float | None = None) -> TaskRecord:
        """The request is leaving: ``queued → sent``."""
        return self._move(row_id, TaskState.SENT, sent_at=_now(at))

    def mark_acked(self, row_id: int, task_id: str, *, at: float | None = None) -> TaskRecord:
        """The service answered with ``task_id``; the state does not change.

        Accepted in any state after ``sent`` (the answer may come after the speaking events
        or a cancel). Acknowledging again with the same id changes nothing; another id raises.
        """
        if not task_id:
            raise ValueError("a task id cannot be empty")
        cur = self._db.execute(
            "UPDATE tasks SET task_id = ?, acked_at = ?"
            " WHERE row_id = ? AND state != 'queued' AND task_id IS NULL",
            (task_id, _now(at), row_id),
        )
        record = self.get(row_id)
        if cur.rowcount == 1 or record.task_id == task_id:
            return record
        if record.state is TaskState.QUEUED:
            raise IllegalTransitionError(row_id, record.state, "acknowledged (it was not sent)")
        raise ValueError(f"task {row_id} was already acknowledged as {record.task_id!r}")

    def mark_speaking(self, row_id: int, *, at: float | None = None) -> TaskRecord:
        """The avatar started speaking it: ``sent → speaking``."""
        return self._move(row_id, TaskState.SPEAKING, started_at=_now(at))

    def mark_spoken(self, row_id: int, *, at: float | None = None) -> TaskRecord:
        """The avatar finished it: ``speaking → spoken`` (or ``sent → spoken``, no start seen)."""
        return self._move(row_id, TaskState.SPOKEN, ended_at=_now(at))

    def mark_cancelled(self, row_id: int, reason: str, *, at: float | None = None) -> TaskRecord:
        """Stopped before it finished (queued, sent or speaking)."""
        return self._move(row_id, TaskState.CANCELLED, reason=_reason(reason), ended_at=_now(at))

    def mark_failed(self, row_id: int, reason: str, *, at: float | None = None) -> TaskRecord:
        """It could not be sent or spoken (queued, sent or speaking)."""
        return self._move(row_id, TaskState.FAILED, reason=_reason(reason), ended_at=_now(at))

    def get(self, row_id: int) -> TaskRecord:
        """The row; ``KeyError`` if there is none."""
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE row_id = ?", (row_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no task {row_id} in the log")
        return _task(row)

    def find_by_task_id(self, task_id: str) -> TaskRecord | None:
        """The row the service knows as ``task_id`` (the newest, should ids ever repeat)."""
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ? ORDER BY row_id DESC LIMIT 1",
            (task_id,),
        ).fetchone()
        return None if row is None else _task(row)

    def query(
        self,
        *,
        session_id: str | None = None,
        states: Collection[TaskState] | None = None,
        search: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[TaskRecord]:
        """Rows in log order (or newest first), filtered; ``states=()`` matches nothing."""
        where, params = _where(session_id, states, search)
        order = "DESC" if newest_first else "ASC"
        rows = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks{where} ORDER BY row_id {order} LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset),
        )
        return [_task(row) for row in rows]

    def count(
        self,
        *,
        session_id: str | None = None,
        states: Collection[TaskState] | None = None,
        search: str | None = None,
    ) -> int:
        where, params = _where(session_id, states, search)
        result: int = self._db.execute(f"SELECT count(*) FROM tasks{where}", params).fetchone()[0]
        return result

    def row_ids(
        self,
        *,
        session_id: str | None = None,
        states: Collection[TaskState] | None = None,
        search: str | None = None,
    ) -> list[int]:
        """The matching row ids in log order: cheap, for a table model that loads lazily."""
        where, params = _where(session_id, states, search)
        return [
            row[0]
            for row in self._db.execute(f"SELECT row_id FROM tasks{where} ORDER BY row_id", params)
        ]

    def get_many(self, row_ids: Sequence[int]) -> list[TaskRecord]:
        """The rows for ``row_ids``, in that order; ``KeyError`` if any is missing."""
        found: dict[int, TaskRecord] = {}
        wanted = list(dict.fromkeys(row_ids))
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE row_id IN ({marks})", chunk
            )
            for row in rows:
                found[row[0]] = _task(row)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"no task {missing[0]} in the log ({len(missing)} missing)")
        return [found[i] for i in row_ids]

    def speaking_rate(
        self, voice_id: str | None, *, recent: int = 200, min_lines: int = 3, min_s: float = 5.0
    ) -> float | None:
        """The voice's measured pace in characters per second, from its ``recent`` lines
        spoken to the end (start to end of speaking); None until at least ``min_lines`` lines
        and ``min_s`` seconds of speech were measured (the script's estimates then use a
        default)."""
        row = self._db.execute(
            "SELECT count(*), sum(length(text)), sum(ended_at - started_at) FROM ("
            "  SELECT text, started_at, ended_at FROM tasks"
            "  WHERE state = 'spoken' AND voice_id IS ? AND started_at IS NOT NULL"
            "    AND ended_at > started_at"
            "  ORDER BY row_id DESC LIMIT ?)",
            (voice_id, recent),
        ).fetchone()
        lines, chars, seconds = row
        if lines < min_lines or not seconds or seconds < min_s:
            return None
        return float(chars) / float(seconds)

    def session_ids(self) -> list[str]:
        """Every session that has tasks in the log, oldest first (for browsing past sessions)."""
        rows = self._db.execute(
            "SELECT session_id FROM tasks GROUP BY session_id ORDER BY min(row_id)"
        )
        return [row[0] for row in rows]

    def successor(self, row_id: int) -> TaskRecord | None:
        """The row that says ``row_id``'s line again in a later session, if there is one."""
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE resumed_from = ?", (row_id,)
        ).fetchone()
        return None if row is None else _task(row)

    def resume_chain(self, row_id: int) -> list[TaskRecord]:
        """Every row of the line ``row_id`` belongs to, first try first: the row it continues,
        that row's own predecessor and so on, then the rows that continue it.

        One line is spoken at most once across its chain; ``KeyError`` if ``row_id`` is not in
        the log.
        """
        self.get(row_id)
        rows = self._db.execute(
            f"""
            WITH RECURSIVE
                back(id, depth) AS (
                    SELECT ?, 0
                    UNION ALL
                    SELECT t.resumed_from, back.depth - 1
                    FROM tasks t JOIN back ON t.row_id = back.id
                    WHERE t.resumed_from IS NOT NULL
                ),
                fwd(id, depth) AS (
                    SELECT ?, 0
                    UNION ALL
                    SELECT t.row_id, fwd.depth + 1
                    FROM tasks t JOIN fwd ON t.resumed_from = fwd.id
                )
            SELECT {_TASK_COLUMNS} FROM tasks JOIN (
                SELECT id, depth FROM back UNION SELECT id, depth FROM fwd
            ) AS chain ON tasks.row_id = chain.id
            ORDER BY chain.depth
            """,
            (row_id, row_id),
        )
        return [_task(row) for row in rows]

    def answer_rows(self, question_id: str) -> list[TaskRecord]:
        """The lines of one question's answer, in order."""
        rows = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE question_id = ? ORDER BY row_id",
            (question_id,),
        )
        return [_task(row) for row in rows]

    # -- questions (Ask mode) --------------------------------------------------------------

    def add_question(
        self, question_id: str, *, session_id: str | None, text: str, at: float | None = None
    ) -> QuestionRecord:
        """Log a question put to the language model, ``answering``."""
        asked = _now(at)
        self._db.execute(
            f"INSERT INTO questions ({_QUESTION_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?, NULL)",
            (question_id, session_id, text, QuestionState.ANSWERING.value, asked),
        )
        return self.get_question(question_id)

    def end_question(
        self,
        question_id: str,
        state: QuestionState,
        reason: str | None = None,
        *,
        at: float | None = None,
    ) -> QuestionRecord:
        """How the answer ended; only once (a question that ended stays as it ended)."""
        state = QuestionState(state)
        if state is QuestionState.ANSWERING:
            raise ValueError("a question ends answered, stopped, replaced or failed")
        self._db.execute(
            "UPDATE questions SET state = ?, reason = ?, ended_at = ?"
            " WHERE question_id = ? AND state = 'answering'",
            (state.value, reason, _now(at), question_id),
        )
        return self.get_question(question_id)

    def get_question(self, question_id: str) -> QuestionRecord:
        """The question; ``KeyError`` if there is none."""
        row = self._db.execute(
            f"SELECT {_QUESTION_COLUMNS} FROM questions WHERE question_id = ?", (question_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no question {question_id!r} in the log")
        return QuestionRecord.model_validate(dict(zip(_QUESTION_FIELDS, row, strict=True)))

    def questions(self, session_id: str | None = None) -> list[QuestionRecord]:
        """Questions in the order they were asked (of one session, when given)."""
        where, params = ("", ()) if session_id is None else (" WHERE session_id = ?", (session_id,))
        rows = self._db.execute(
            f"SELECT {_QUESTION_COLUMNS} FROM questions{where} ORDER BY asked_at, rowid", params
        )
        return [
            QuestionRecord.model_validate(dict(zip(_QUESTION_FIELDS, row, strict=True)))
            for row in rows
        ]

    # -- session registry ------------------------------------------------------------------

    def record_session(self, record: SessionRecord) -> None:
        """Remember a session the app created (recording the same id again updates it; the
        slot and the phases already recorded are kept when the new record has none)."""
        self._db.execute(
            f"INSERT INTO sessions ({_SESSION_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (session_id) DO UPDATE SET backend = excluded.backend,"
            " avatar_id = excluded.avatar_id, voice_id = excluded.voice_id,"
            " created_at = excluded.created_at, ended_at = excluded.ended_at,"
            " end_reason = excluded.end_reason, max_duration = excluded.max_duration,"
            " slot = coalesce(excluded.slot, slot),"
            " requested_at = coalesce(excluded.requested_at, requested_at),"
            " sdk_ready_at = coalesce(excluded.sdk_ready_at, sdk_ready_at),"
            " live_at = coalesce(excluded.live_at, live_at),"
            " first_frame_at = coalesce(excluded.first_frame_at, first_frame_at)",
            tuple(getattr(record, name) for name in _SESSION_FIELDS),
        )

    def record_phases(self, session_id: str, **phases: float | None) -> None:
        """Record when phases of connecting happened (names from :data:`PHASE_COLUMNS`);
        the first time recorded for a phase stays. A session never recorded is ignored."""
        given = {name: at for name, at in phases.items() if at is not None}
        unknown = set(given) - set(PHASE_COLUMNS)
        if unknown:
            raise ValueError(f"no such phase: {', '.join(sorted(unknown))}")
        if not given:
            return
        assignments = ", ".join(f"{name} = coalesce({name}, ?)" for name in given)
        self._db.execute(
            f"UPDATE sessions SET {assignments} WHERE session_id = ?",
            (*given.values(), session_id),
        )

    def end_session(self, session_id: str, reason: str, *, at: float | None = None) -> None:
        """Mark a session ended. Ending it again keeps the first time and reason.

        ``KeyError`` for a session that was never recorded.
        """
        cur = self._db.execute(
            "UPDATE sessions SET ended_at = ?, end_reason = ?"
            " WHERE session_id = ? AND ended_at IS NULL",
            (_now(at), reason, session_id),
        )
        if cur.rowcount == 0 and self.get_session(session_id) is None:
            raise KeyError(f"no session {session_id!r} in the registry")

    def get_session(self, session_id: str) -> SessionRecord | None:
        row = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else _session(row)

    def open_sessions(self, backend: str | None = None) -> list[SessionRecord]:
        """Sessions created and never ended (after a crash: the orphans), oldest first."""
        if backend is None:
            rows = self._db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE ended_at IS NULL"
                " ORDER BY created_at, session_id"
            )
        else:
            rows = self._db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions"
                " WHERE ended_at IS NULL AND backend = ? ORDER BY created_at, session_id",
                (backend,),
            )
        return [_session(row) for row in rows]

    def sessions(self) -> list[SessionRecord]:
        """Every recorded session, oldest first."""
        rows = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY created_at, session_id"
        )
        return [_session(row) for row in rows]

    def slots_by_session(self) -> dict[str, tuple[int | None, str]]:
        """``session_id -> (slot, avatar_id)`` of every recorded session (for the log's
        Avatar column and the control API's rows)."""
        rows = self._db.execute("SELECT session_id, slot, avatar_id FROM sessions")
        return {row[0]: (row[1], row[2]) for row in rows}

    # -- what the latency figures read -----------------------------------------------------

    def timings(self, *, after_row: int = 0, since: float | None = None) -> list[Timing]:
        """Every line that was sent (row id above ``after_row``, sent at or after ``since``),
        in log order, with its session's slot: cheap enough to read whole for the figures."""
        clauses = ["t.sent_at IS NOT NULL", "t.row_id > ?"]
        params: list[Any] = [after_row]
        if since is not None:
            clauses.append("t.sent_at >= ?")
            params.append(since)
        rows = self._db.execute(
            "SELECT t.row_id, t.session_id, t.voice_id, s.slot, length(t.text), t.state,"
            " t.sent_at, t.started_at, t.ended_at"
            " FROM tasks t LEFT JOIN sessions s ON s.session_id = t.session_id"
            f" WHERE {' AND '.join(clauses)} ORDER BY t.row_id",
            params,
        )
        return [
            Timing(r[0], r[1], r[2], r[3], r[4], TaskState(r[5]), r[6], r[7], r[8]) for r in rows
        ]

    # -- A/B takes -------------------------------------------------------------------------

    def add_ab_takes(self, takes: Sequence[AbTake]) -> None:
        """Record the takes of a comparison (all or none)."""
        marks = ", ".join("?" * len(_AB_FIELDS))
        with self._transaction():
            for take in takes:
                self._db.execute(
                    f"INSERT INTO ab_takes ({_AB_COLUMNS}) VALUES ({marks})", astuple(take)
                )

    def link_ab_take(self, run_id: str, take: int, row_id: int) -> None:
        """The task row that said ``take`` (once it was queued for a session)."""
        self._db.execute(
            "UPDATE ab_takes SET row_id = ? WHERE run_id = ? AND take = ?", (row_id, run_id, take)
        )

    def rate_ab_take(
        self, run_id: str, take: int, rating: int | None, *, at: float | None = None
    ) -> None:
        """The operator's rating of a take, 1 to 5 (None takes it back)."""
        if rating is not None and not 1 <= rating <= 5:
            raise ValueError("a rating is 1 to 5")
        cur = self._db.execute(
            "UPDATE ab_takes SET rating = ?, rated_at = ? WHERE run_id = ? AND take = ?",
            (rating, None if rating is None else _now(at), run_id, take),
        )
        if cur.rowcount != 1:
            raise KeyError(f"no take {take} in comparison {run_id!r}")

    def ab_takes(self, run_id: str) -> list[AbTake]:
        rows = self._db.execute(
            f"SELECT {_AB_COLUMNS} FROM ab_takes WHERE run_id = ? ORDER BY take", (run_id,)
        )
        return [AbTake(*row) for row in rows]

    def ab_runs(self) -> list[str]:
        """Every comparison recorded, oldest first."""
        rows = self._db.execute(
            "SELECT run_id FROM ab_takes GROUP BY run_id ORDER BY min(created_at), run_id"
        )
        return [row[0] for row in rows]


class _Checkpointer:
    """Copies the write-ahead log back into the database on a thread of its own.

    Every :data:`CHECKPOINT_EVERY_S` it runs a passive checkpoint over its own connection if
    the log grew: it never waits for the writer or blocks it, and what a reader still needs
    is left for the next round. Its fsyncs release the interpreter lock (SQLite runs without
    it), so the GUI thread goes on meanwhile.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wal = path.with_name(path.name + "-wal")
        self._stopping = threading.Event()
        #: Set after each checkpoint (for tests and the curious: there is no other sign).
        self.checkpointed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tasklog-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _wal_mark(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self._wal)
        except OSError:
            return None
        return info.st_size, info.st_mtime_ns

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        seen = self._wal_mark()
        try:
            while not self._stopping.wait(CHECKPOINT_EVERY_S):
                mark = self._wal_mark()
                if mark is None or mark == seen:
                    continue
                if db is None:
                    db = sqlite3.connect(str(self._path), isolation_level=None)
                    db.execute("PRAGMA busy_timeout = 1000")
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # busy or locked: the next round tries again
                    log.debug("Task log checkpoint put off: %s", exc)
                else:
                    self.checkpointed.set()
                seen = self._wal_mark()
        finally:
            if db is not None:
                db.close()
