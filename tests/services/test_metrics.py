"""Prometheus metrics, fed by the real speech queue and task log, read back from the text
exposition the way Prometheus reads it."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from fakes import FakeClient, FakeController, FakeStage, until
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from avaturn_desktop.core.errors import InvalidRequestError, UnclearOutcomeError
from avaturn_desktop.core.events import AvatarEndedSpeakingPhrase, AvatarStartedSpeakingPhrase
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.session_state import EndReason
from avaturn_desktop.core.tasks import TaskRoute
from avaturn_desktop.services.metrics import AppMetrics
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.supervisor import SupervisorState, SupervisorStatus
from avaturn_desktop.services.tasklog import TaskLogStore


def samples(metrics: AppMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by name and sorted labels."""
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: AppMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskLogStore]:
    with TaskLogStore(tmp_path / "log.sqlite3") as s:
        yield s


def test_lines_by_outcome_and_latency_from_a_real_queue(store: TaskLogStore) -> None:
    metrics = AppMetrics(process=False)

    async def scenario() -> None:
        client, controller, clock = FakeClient(), FakeController(), Clock()
        late: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        client.script = [
            "t1",
            "t2",
            InvalidRequestError("refused", status=400),
            UnclearOutcomeError("may or may not"),
            late,
        ]
        queue = SpeechQueue(
            client, store, controller, stage=FakeStage(), clock=clock, lookahead=None
        )
        metrics.watch_session(controller)
        metrics.watch_rows(queue, store)
        controller.go_live()
        queue.enqueue(["One.", "Two.", "Refused.", "Unclear.", "Late answer."])
        await until(lambda: len(client.calls) == 5)
        clock.now = 1000.25
        queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t1"))
        clock.now = 1001.0
        queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t1"))
        clock.now = 1002.5
        queue.handle_page_event(AvatarStartedSpeakingPhrase(phrase_id="t2"))
        queue.handle_page_event(AvatarEndedSpeakingPhrase(phrase_id="t2"))
        # Stop while "Late answer." is on its way: cancelled now, its answer comes after
        await queue.stop()
        late.set_result("t5")
        await until(lambda: queue.items[-1].acknowledged)
        assert [i.state for i in queue.items][-1] is ItemState.CANCELLED
        controller.end(EndReason.USER_ABSENT.value)
        await queue.shutdown()

    asyncio.run(scenario())
    got = samples(metrics)
    lines = {o: got[("avaturn_lines_total", (("outcome", o),))] for o in ("spoken", "failed")}
    lines |= {o: got[("avaturn_lines_total", (("outcome", o),))] for o in ("unclear", "cancelled")}
    assert lines == {"spoken": 2, "failed": 1, "unclear": 1, "cancelled": 1}  # each once
    assert got[("avaturn_send_to_speaking_seconds_count", ())] == 2
    # latencies 0.25 s and 2.5 s: from the log's timestamps (both sent at 1000.0)
    assert got[("avaturn_send_to_speaking_seconds_sum", ())] == pytest.approx(2.75)
    assert got[("avaturn_send_to_speaking_seconds_bucket", (("le", "0.3"),))] == 1
    assert got[("avaturn_send_to_speaking_seconds_bucket", (("le", "3.0"),))] == 2
    assert got[("avaturn_sessions_live_total", ())] == 1
    assert got[("avaturn_session_endings_total", (("reason", "user_absent"),))] == 1
    assert got[("avaturn_session_state", (("avaturn_session_state", "ended"),))] == 1
    assert got[("avaturn_session_state", (("avaturn_session_state", "live"),))] == 0


def test_every_outcome_is_there_from_the_start_and_nothing_in_the_global_registry() -> None:
    first, second = AppMetrics(process=False), AppMetrics(process=False)
    first.lines.labels("spoken").inc()
    assert value(first, "avaturn_lines_total", outcome="spoken") == 1
    assert value(second, "avaturn_lines_total", outcome="spoken") == 0  # its own registry
    for outcome in ("failed", "unclear", "cancelled"):
        assert value(second, "avaturn_lines_total", outcome=outcome) == 0
    assert b"avaturn_" not in generate_latest(REGISTRY)
    assert math.isnan(value(first, "avaturn_page_heartbeat_age_seconds"))


def test_session_state_follows_the_controller_and_endings_by_reason() -> None:
    metrics, controller = AppMetrics(process=False), FakeController()
    metrics.watch_session(controller)
    assert value(metrics, "avaturn_session_state", avaturn_session_state="idle") == 1
    controller.go_live("s1")
    controller.end(EndReason.MAX_DURATION.value)
    controller.go_live("s2")
    assert value(metrics, "avaturn_session_state", avaturn_session_state="live") == 1
    controller.end("something new")
    assert value(metrics, "avaturn_sessions_live_total") == 2
    assert value(metrics, "avaturn_session_endings_total", reason="max_duration") == 1
    assert value(metrics, "avaturn_session_endings_total", reason="other") == 1
    metrics.close()
    controller.go_live("s3")  # no longer listening
    assert value(metrics, "avaturn_sessions_live_total") == 2


class FakeSupervisor:
    def __init__(self) -> None:
        self.state = SupervisorState()
        self.age: float | None = None

    def heartbeat_age(self) -> float | None:
        return self.age


def test_supervisor_restarts_by_reason_and_heartbeat_age_are_read_at_scrape_time() -> None:
    metrics, supervisor = AppMetrics(process=False), FakeSupervisor()
    metrics.watch_supervisor(supervisor)
    assert value(metrics, "avaturn_supervisor_restarts_total", reason="quota") == 0
    assert math.isnan(value(metrics, "avaturn_page_heartbeat_age_seconds"))
    supervisor.state = SupervisorState(
        status=SupervisorStatus.WAITING,
        restarts=3,
        restarts_by_reason=MappingProxyType({"quota": 1, "connection_lost": 2}),
        next_try_in_s=12.5,
        paused_reason=None,
    )
    supervisor.age = 1.5
    assert value(metrics, "avaturn_supervisor_restarts_total", reason="quota") == 1
    assert value(metrics, "avaturn_supervisor_restarts_total", reason="connection_lost") == 2
    assert value(metrics, "avaturn_supervisor_restarts_total", reason="page_crashed") == 0
    assert value(metrics, "avaturn_supervisor_next_try_seconds") == 12.5
    assert value(metrics, "avaturn_supervisor_paused") == 0
    assert value(metrics, "avaturn_page_heartbeat_age_seconds") == 1.5


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    metrics = AppMetrics(process=False)
    metrics.lines.labels("spoken").inc()
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    spoken = {
        s.name: s.value
        for s in families["avaturn_lines"].samples
        if s.labels == {"outcome": "spoken"}
    }
    assert spoken["avaturn_lines_total"] == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memory_of_the_app_and_of_its_child_processes() -> None:
    metrics = AppMetrics()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        got = samples(metrics)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    assert got[("process_resident_memory_bytes", ())] > 10_000_000
    children = {
        dict(labels)["name"]: v
        for (name, labels), v in got.items()
        if name == "avaturn_child_processes_resident_memory_bytes"
    }
    name = Path(sys.executable).name[:15]  # the name it was started by, 15 characters kept
    assert children.get(name, 0) > 1_000_000, children


def test_a_broken_proc_tree_yields_no_children(tmp_path: Path) -> None:
    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "stat").write_text("garbage")
    (tmp_path / "456").mkdir()  # no files at all
    metrics = AppMetrics(proc_root=tmp_path)
    got = samples(metrics)
    assert not [k for k in got if k[0] == "avaturn_child_processes_resident_memory_bytes"]


class Rows:
    """A row source that announces what the test says, as the queue would."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[int, bool], None]] = []

    def subscribe_rows(self, listener: Callable[[int, bool], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def emit(self, row_id: int, new: bool = False) -> None:
        for listener in self.listeners:
            listener(row_id, new)


def test_a_row_is_counted_once_however_often_it_is_announced(store: TaskLogStore) -> None:
    metrics, rows = AppMetrics(process=False), Rows()
    before = store.add(session_id="s0", text="Older.", voice_id=None, route=TaskRoute.REST)
    metrics.watch_rows(rows, store)
    row = store.add(session_id="s1", text="Hi.", voice_id=None, route=TaskRoute.REST, at=1.0)
    rows.emit(row.row_id, new=True)
    store.mark_sent(row.row_id, at=2.0)
    rows.emit(row.row_id)
    store.mark_cancelled(row.row_id, "stopped", at=3.0)
    rows.emit(row.row_id)
    store.mark_acked(row.row_id, "t1", at=4.0)  # the service's answer, after the cancel
    rows.emit(row.row_id)
    rows.emit(row.row_id)
    store.mark_failed(before.row_id, "refused")  # a row from before it listened
    rows.emit(before.row_id)
    rows.emit(999)  # not in the log: logged, never raised into the queue
    assert value(metrics, "avaturn_lines_total", outcome="cancelled") == 1
    assert value(metrics, "avaturn_lines_total", outcome="failed") == 0
