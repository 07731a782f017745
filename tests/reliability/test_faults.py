"""Faults: the assembled app (real page, session controller, speech queue, composer, real
client) against the simulator's fault injection over loopback.

Every scenario checks the same promises:

* the GUI loop never stalls more than 100 ms (a 5 ms QTimer measures the gaps);
* no composer text is lost: each sentence is either taken by the service (it is in the
  simulator's task list) or back in the composer box, or visibly held in the queue;
* no line reaches the service twice because of a retry (the simulator's tasks per text);
* each failure is shown with its reason (task-log reason, composer status, session reason);
* the session recovers, or ends with a clear reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from avaturn_desktop.core.errors import RETRY_AFTER_CEILING_S
from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.core.queue import (
    ChangeKind,
    ItemState,
    QueueChange,
    StopUnconfirmedError,
    UnclearRetryError,
)
from avaturn_desktop.core.session_state import EndReason, SessionState
from avaturn_desktop.core.tasks import TaskState
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.simulator.faults import AFTER_ACCEPT_KINDS
from avaturn_desktop.simulator.server import FaultConfig, SimulatorServer
from tests.reliability.conftest import FaultLedger
from tests.reliability.flood_child import NoPage
from tests.reliability.rig import Rig, check_invariants, until
from tests.reliability.tally import Tally

pytestmark = [pytest.mark.web, pytest.mark.timeout(90)]

SimFactory = Callable[..., SimulatorServer]


def sentences(prefix: str, n: int) -> list[str]:
    return [f"{prefix} line number {i} is here." for i in range(1, n + 1)]


async def settled(rig: Rig) -> None:
    """Until nothing is on its way: every item finished or held (a batch with lines held for
    the next session stays pending in the composer until they are sent)."""
    await until(
        lambda: (
            all(i.state.finished or i.held for i in rig.queue.items)
            and (not rig.composer.pending or any(i.held for i in rig.queue.items))
        ),
        20,
        "the queue to settle",
    )


async def check_promises(rig: Rig, composed: list[str]) -> Counter[str]:
    """The promises every scenario keeps; returns the simulator's tasks per text."""
    tasks = await rig.sim_tasks()
    per_text = Counter(t["text"] for t in tasks)
    twice = {text: n for text, n in per_text.items() if n > 1}
    assert not twice, f"sent twice: {twice}"
    box = rig.composer_text()
    held = {i.text for i in rig.queue.items if i.state is ItemState.WAITING}
    lost = [s for s in composed if s not in per_text and s not in box and s not in held]
    assert not lost, f"composer text lost: {lost}"
    rows = rig.rows()
    for row in rows:
        if row.state in (TaskState.FAILED, TaskState.CANCELLED):
            assert row.reason and row.reason.strip(), row
    sim_ids = {t["task_id"] for t in tasks}
    logged_ids = {r.task_id for r in rows if r.task_id}
    assert logged_ids <= sim_ids, "the log names task ids the service never gave"
    assert sim_ids <= logged_ids, "a task the service acknowledged is missing from the log"
    stalled = rig.watchdog.max_gap_ms
    assert stalled < rig.stall_budget_ms, f"GUI stalled {stalled:.0f} ms; samples:\n" + "\n".join(
        rig.watchdog.stalls[-3:]
    )
    snap = rig.controller.snapshot
    if snap.state in (SessionState.ENDED, SessionState.FAILED):
        assert snap.reason, snap
    return per_text


@pytest.fixture
def rig_factory(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, tally: Tally, request: pytest.FixtureRequest
) -> Callable[..., Any]:
    """``run(sim, scenario, **rig_options)``: build a rig, run ``scenario(rig)``, check the
    invariants (``rig.check_invariants``: no text twice at the service, nothing logged as
    spoken that it never received, nothing left sending), close it."""

    def run(sim: SimulatorServer, scenario: Callable[[Rig], Any], **options: Any) -> None:
        async def main() -> None:
            rig = Rig(sim, tmp_path / "log.sqlite3", **options)
            try:
                await rig.open()
                await scenario(rig)
                await until(
                    lambda: not any(i.state is ItemState.SENDING for i in rig.queue.items),
                    10,
                    "nothing sending",
                )
                live = rig.controller.state is SessionState.LIVE
                found = await check_invariants(rig, session_ended=not live)
                assert found.ok, found.explain()
            finally:
                tally.stall(request.node.name, rig.watchdog.max_gap_ms, rig.watchdog.stalls)
                await rig.close()

        loop.run_until_complete(main())

    return run


def test_5xx_burst_fails_the_line_keeps_the_text_and_recovers(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    sim = make_sim()
    lines = sentences("Burst", 3)

    async def scenario(rig: Rig) -> None:
        session_id = await rig.start()
        rig.watchdog.start()
        rig.set_faults(error_rate=1.0, error_status=503)
        assert rig.type_and_queue(" ".join(lines))
        await until(lambda: rig.composer.failed, 10, "the composer to show the failure")
        await settled(rig)
        ledger.inject("5xx", rig.transport.seen["503"])
        # shown with its reason, the text back in the box, nothing reached the service
        assert "503" in rig.composer.status_label.text()
        assert rig.composer_text() == "\n".join(lines)
        failed = [r for r in rig.rows() if r.state is TaskState.FAILED]
        assert failed and all("503" in (r.reason or "") for r in failed)
        assert await rig.sim_tasks(session_id) == []
        await check_promises(rig, lines)

        # the service is back: the same text goes out once, and is spoken
        rig.set_faults()
        assert rig.composer.queue_text()
        await until(lambda: not rig.composer.pending, 10, "every sentence acknowledged")
        await until(lambda: sum(r.state is TaskState.SPOKEN for r in rig.rows()) == len(lines), 15)
        per_text = await check_promises(rig, lines)
        assert all(per_text[line] == 1 for line in lines)
        assert rig.controller.state is SessionState.LIVE

    rig_factory(sim, scenario)


def test_429_with_retry_after_waits_and_sends_once(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    sim = make_sim()
    lines = sentences("Busy", 2)

    async def scenario(rig: Rig) -> None:
        session_id = await rig.start()
        rig.watchdog.start()
        # 3 refusals: a task's 429 goes straight to the queue, which shows "busy" with the
        # time it sends again, waits Retry-After (where the person can skip it), and sends again.
        rig.set_faults(rate_limit_burst=3, retry_after_s=1)
        started = time.monotonic()
        assert rig.type_and_queue(" ".join(lines))
        await until(lambda: not rig.composer.pending, 15, "every sentence acknowledged")
        took = time.monotonic() - started
        ledger.inject("429", rig.transport.seen["429"])
        assert rig.transport.seen["429"] == 3
        assert took >= 2.7, f"Retry-After not honoured: all acknowledged after {took:.2f} s"
        busy = [c.item for c in rig.changes if c.item and "busy" in (c.item.reason or "")]
        assert busy, "the wait after a 429 was not shown on the item"
        assert "sending again in 1 s" in (busy[0].reason or "")
        await until(lambda: sum(r.state is TaskState.SPOKEN for r in rig.rows()) == len(lines), 15)
        per_text = await check_promises(rig, lines)
        assert [per_text[line] for line in lines] == [1, 1]
        tasks = await rig.sim_tasks(session_id)
        assert [t["text"] for t in tasks] == lines  # in order

    rig_factory(sim, scenario, max_retries=1)


def test_2s_latency_spikes_do_not_stall_the_gui(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    sim = make_sim()
    lines = sentences("Slow", 2)

    async def scenario(rig: Rig) -> None:
        await rig.start()
        rig.watchdog.start()
        rig.set_faults(latency_ms=2000)
        started = time.monotonic()
        assert rig.type_and_queue(" ".join(lines))
        # the text is in the queue at once: the box is free for the next line, never locked
        assert rig.composer_text() == "" and not rig.composer.editor.isReadOnly()
        await until(lambda: rig.queue.items[0].state is ItemState.SENDING, 2)
        assert rig.composer.pending
        await until(lambda: not rig.composer.pending, 10, "every sentence acknowledged")
        assert time.monotonic() - started >= 3.9  # two calls, each 2 s late
        rig.set_faults()
        await until(lambda: sum(r.state is TaskState.SPOKEN for r in rig.rows()) == len(lines), 15)
        ledger.inject("latency_2s", rig.transport.seen["latency>=1.9s"])
        assert rig.transport.seen["latency>=1.9s"] >= 2
        per_text = await check_promises(rig, lines)
        assert [per_text[line] for line in lines] == [1, 1]
        assert not rig.composer.editor.isReadOnly()

    rig_factory(sim, scenario)


def test_connection_resets_are_never_resent_and_the_session_lives_on(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    sim = make_sim()
    first = ["Reset me once."]
    flood = sentences("Flaky", 12)

    async def scenario(rig: Rig) -> None:
        session_id = await rig.start()
        rig.watchdog.start()
        rig.set_faults(reset_rate=1.0)
        assert rig.type_and_queue(first[0])
        await until(lambda: rig.composer.failed, 10, "the composer to show the failure")
        # the request may have reached the service: never sent again, the user decides
        status = rig.composer.status_label.text()
        assert "may or may not have been spoken" in status, status
        assert rig.composer_text() == first[0]
        (row,) = rig.rows()
        assert row.state is TaskState.FAILED and "may or may not" in (row.reason or "")
        assert await rig.sim_tasks(session_id) == []

        # a flood under 30 % resets: each line is taken once or failed as unclear, never twice
        rig.set_faults(reset_rate=0.3)
        rig.queue.enqueue(flood)
        await settled(rig)
        ledger.inject("connection_reset", sum(
            n for k, n in rig.transport.seen.items() if k.startswith("transport:")
        ))  # fmt: skip
        # the flood went in through the queue, not the composer: failed lines stay visible
        per_text = await check_promises(rig, first)
        items = {i.text: i for i in rig.queue.items}
        for line in flood:
            if items[line].state is ItemState.FAILED:
                assert per_text[line] == 0 and "may or may not" in (items[line].reason or "")
            else:
                assert per_text[line] == 1
        assert rig.controller.state is SessionState.LIVE

        # the service heals: the user sends the kept text again; it goes out once
        rig.set_faults()
        assert rig.composer.queue_text()
        await until(lambda: not rig.composer.pending, 10)
        per_text = await check_promises(rig, first)
        assert per_text[first[0]] == 1

    rig_factory(sim, scenario)


def test_dropped_event_channel_reconnects_and_speech_goes_on(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    sim = make_sim(chars_per_second=60.0)
    lines = sentences("Channel", 4)

    async def scenario(rig: Rig) -> None:
        session_id = await rig.start()
        rig.watchdog.start()
        assert rig.type_and_queue(" ".join(lines))
        await until(lambda: any(r.state is TaskState.SPEAKING for r in rig.rows()), 10)
        for _ in range(2):  # twice: mid-phrase, then again once it is back
            rig.set_faults(drop_event_channels=True)
            ledger.inject("event_channel_drop")
            await until(lambda: sim.snapshot()["viewers"] == 0, 5, "the drop")
            await until(lambda: sim.snapshot()["viewers"] == 1, 10, "the page to reconnect")
        await until(
            lambda: (
                all(r.state.value in ("spoken", "cancelled", "failed") for r in rig.rows())
                and len(rig.rows()) == len(lines)
            ),
            20,
            "every line to finish",
        )
        per_text = await check_promises(rig, lines)
        assert [per_text[line] for line in lines] == [1] * len(lines)
        assert [r.state for r in rig.rows()] == [TaskState.SPOKEN] * len(lines)
        assert rig.controller.state is SessionState.LIVE
        assert SessionState.ENDED not in rig.controller.snapshot.history
        session = await rig.sim_session(session_id)
        assert session["viewers_seen"] == 3

    rig_factory(sim, scenario)


def test_session_killed_mid_send_ends_clearly_and_the_rest_is_kept(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    sim = make_sim()
    lines = sentences("Killed", 12)

    async def scenario(rig: Rig) -> None:
        session_id = await rig.start()
        rig.watchdog.start()
        rig.set_faults(latency_ms=60)  # so the flood is still going when the kill lands
        assert rig.type_and_queue(" ".join(lines))
        await until(lambda: sum(i.acknowledged for i in rig.queue.items) >= 3, 10)
        killed = await rig.http.post(f"{sim.base_url}/_sim/sessions/{session_id}/kill")
        assert killed.status_code == 200
        ledger.inject("session_killed")
        await until(lambda: rig.controller.state in (SessionState.ENDED, SessionState.FAILED), 10)
        await settled(rig)
        snap = rig.controller.snapshot
        assert snap.state is SessionState.ENDED, snap
        assert snap.reason in (EndReason.SERVER.value, EndReason.CONNECTION_LOST.value), snap
        await check_promises(rig, lines)
        taken = {t["text"] for t in await rig.sim_tasks(session_id)}
        assert 3 <= len(taken) < len(lines)
        kept = [line for line in lines if line not in taken]
        box = rig.composer_text()
        held = [i.text for i in rig.queue.items if i.held]
        assert sorted(kept) == sorted(
            [ln for ln in lines if ln in box] + [t for t in held if t not in box]
        )
        if box:
            assert rig.composer.failed and "Not sent" in rig.composer.status_label.text()

        # recover: a new session; the kept text goes out, once
        rig.set_faults()
        second = await rig.start()
        if box:
            assert rig.composer.queue_text()
        await until(lambda: rig.composer_text() == "" and not rig.composer.pending, 15)
        await settled(rig)
        again = [t["text"] for t in await rig.sim_tasks(second)]
        assert sorted(again) == sorted(kept)
        await check_promises(rig, lines)

    rig_factory(sim, scenario)


def test_max_duration_mid_send_ends_with_its_reason(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    # time_scale 30: a 60 s max_duration ends after 2 s of real time
    sim = make_sim(time_scale=30.0, chars_per_second=40.0)
    lines = sentences("Timed", 6)

    async def scenario(rig: Rig) -> None:
        request = SessionCreate.model_validate(
            {**rig.settings.session.to_request().model_dump(), "max_duration": 60}
        )
        session_id = await rig.start(request)
        rig.watchdog.start()
        assert rig.type_and_queue(" ".join(lines))
        ledger.inject("max_duration")
        await until(lambda: rig.controller.state in (SessionState.ENDED, SessionState.FAILED), 10)
        snap = rig.controller.snapshot
        assert snap.state is SessionState.ENDED, snap
        assert snap.reason == EndReason.MAX_DURATION.value, snap
        session = await rig.sim_session(session_id)
        assert session["end_reason"] == "max_duration"
        await settled(rig)
        await check_promises(rig, lines)
        # what was taken but not spoken is not left "sent" or "speaking"
        open_rows = [r for r in rig.rows() if r.state in (TaskState.SENT, TaskState.SPEAKING)]
        assert open_rows == []
        cut = [r for r in rig.rows() if r.state is TaskState.CANCELLED]
        assert cut and all(r.reason for r in cut)

    rig_factory(sim, scenario)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_mixed_faults_every_line_once(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    """Batches through the composer under mixed faults; what comes back is sent again until
    every line was taken exactly once."""
    sim = make_sim(chars_per_second=2000.0)
    batches = [sentences(f"Soak {b}", 8) for b in range(10)]

    async def scenario(rig: Rig) -> None:
        await rig.start()
        rig.watchdog.start()
        for n, batch in enumerate(batches):
            rig.set_faults(
                error_rate=0.15,
                reset_rate=0.1,
                rate_limit_burst=n % 3,
                retry_after_s=0,
                latency_ms=20,
                jitter_ms=20,
            )
            if n % 3 == 1:
                rig.set_faults(drop_event_channels=True, latency_ms=20)
                ledger.inject("event_channel_drop")
            assert rig.type_and_queue(" ".join(batch))
            for _attempt in range(30):
                await until(lambda: not rig.composer.pending, 20)
                if not rig.composer_text():
                    break
                assert rig.composer.failed and rig.composer.status_label.text()
                assert rig.composer.queue_text()
            assert rig.composer_text() == "", "a batch never got through"
            await check_promises(rig, [line for b in batches[: n + 1] for line in b])
        rig.set_faults()
        names = {"503": "5xx", "429": "429", "latency>=1.9s": "latency_2s"}
        for kind, count in rig.transport.seen.items():
            ledger.inject(names.get(kind, "connection_reset"), count)
        per_text = await check_promises(rig, [line for b in batches for line in b])
        assert all(per_text[line] == 1 for b in batches for line in b)
        assert rig.controller.state is SessionState.LIVE

    rig_factory(sim, scenario)


# -- a task the service took, answered with a lie ---------------------------------------------


class ServicesRig:
    """The client, session controller and speech queue over real loopback HTTP, with no page
    (the session is live once created): what decides whether a line is sent again."""

    def __init__(self, sim: SimulatorServer, store_path: Path, *, timeout: float = 10.0) -> None:
        self.sim = sim
        self.http = httpx.AsyncClient()
        self.client = AvaturnClient(self.http, api_key="k", base_url=sim.base_url, timeout=timeout)
        self.store = TaskLogStore(store_path)
        page = NoPage()
        self.controller = SessionController(
            self.client, page, api_host=sim.base_url, sdk_url=sim.sdk_url, registry=self.store
        )
        # no page: nothing reports speech, so every line goes at once (no look-ahead)
        self.queue = SpeechQueue(
            self.client, self.store, self.controller, stage=page, lookahead=None
        )
        self.changes: list[QueueChange] = []
        self.queue.subscribe(self.changes.append)

    async def start(self) -> str:
        assert await self.controller.start(SessionCreate())
        assert self.controller.session_id is not None
        return self.controller.session_id

    def received(self, text: str) -> int:
        return sum(t["text"] == text for s in self.sim.snapshot()["sessions"] for t in s["tasks"])

    async def close(self) -> None:
        await self.queue.shutdown()
        await self.controller.shutdown()
        await self.http.aclose()
        self.store.close()


@pytest.fixture
def services_rig(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Callable[..., Any]:
    """``run(sim, scenario, **options)``: a ServicesRig on qasync's loop, closed after."""

    def run(sim: SimulatorServer, scenario: Callable[[ServicesRig], Any], **options: Any) -> None:
        async def main() -> None:
            rig = ServicesRig(sim, tmp_path / "services.sqlite3", **options)
            try:
                await scenario(rig)
            finally:
                await rig.close()

        loop.run_until_complete(main())

    return run


@pytest.mark.parametrize("kind", AFTER_ACCEPT_KINDS)
def test_a_lie_after_the_service_took_the_line_is_unclear_and_never_doubled(
    make_sim: SimFactory, services_rig: Callable[..., Any], ledger: FaultLedger, kind: str
) -> None:
    """2xx with an empty, HTML or {} body, a gateway's 502/503/504, no answer until the client
    gives up, a reset: the line may have been spoken. It is never sent again by itself, and
    Retry asks first."""
    sim = make_sim()
    line, behind = "Taken but not told.", "The next line."

    async def scenario(rig: ServicesRig) -> None:
        await rig.start()
        sim.set_faults(
            FaultConfig(after_accept_rate=1.0, after_accept=[kind], hang_ms=5000)  # type: ignore[list-item]
        )
        (item,) = rig.queue.enqueue(line)
        await until(lambda: rig.queue.item(item.item_id).state.finished, 10)  # type: ignore[union-attr]
        ledger.inject(f"after_accept:{kind}")
        failed = rig.queue.item(item.item_id)
        assert failed is not None and failed.state is ItemState.FAILED
        assert failed.unclear and failed.ever_sent
        assert "may or may not have been spoken" in (failed.reason or "")
        assert rig.received(line) == 1  # the service has it: the queue must not send it again
        (row,) = rig.store.query()
        assert row.state is TaskState.FAILED and row.sent_at is not None
        with pytest.raises(UnclearRetryError):
            rig.queue.retry(item.item_id)
        # the service heals: the next line goes, and the maybe is still not sent again
        sim.set_faults(FaultConfig())
        rig.queue.enqueue(behind)
        await until(lambda: rig.received(behind) == 1, 10)
        assert rig.received(line) == 1
        # sent again only when the person confirms, knowingly
        (again,) = rig.queue.retry(item.item_id, confirm=True)
        await until(lambda: rig.queue.item(again.item_id).acknowledged, 10)  # type: ignore[union-attr]
        assert rig.received(line) == 2

    # "hang": the client gives up after 1 s, the service answers only later
    services_rig(sim, scenario, timeout=1.0 if kind == "hang" else 10.0)


RETRY_AFTER_PROBES = [
    "1000000000",
    "3000000",
    "inf",
    "1e400",
    "Fri, 31 Dec 2099 23:59:59 GMT",
    "3600",
    "-5",
    "nan",
    "soon",
]


@pytest.mark.parametrize("value", RETRY_AFTER_PROBES)
def test_any_retry_after_waits_at_most_the_ceiling_and_can_be_skipped(
    make_sim: SimFactory, services_rig: Callable[..., Any], ledger: FaultLedger, value: str
) -> None:
    """On qasync's loop, where a sleep is a QTimer: an absurd Retry-After used to overflow it,
    kill the sender and leave every line waiting for ever."""
    sim = make_sim()
    lines = ["Busy line.", "Behind it.", "And behind that."]

    async def scenario(rig: ServicesRig) -> None:
        await rig.start()
        sim.set_faults(FaultConfig(rate_limit_burst=1, retry_after=value))
        first, *_ = rig.queue.enqueue(lines)
        await until(
            lambda: (
                len(sim.snapshot()["sessions"][0]["tasks"]) > 0
                or any(c.item and c.item.retry_at for c in rig.changes)
            ),
            10,
        )
        ledger.inject("429_retry_after")
        waits = [c.item.retry_at for c in rig.changes if c.item and c.item.retry_at]
        assert all(at - time.time() <= RETRY_AFTER_CEILING_S + 1 for at in waits)
        if rig.queue.item(first.item_id).retry_at is not None:  # type: ignore[union-attr]
            assert rig.queue.skip_wait(first.item_id)
        await until(lambda: all(rig.received(t) == 1 for t in lines), 10)
        assert [t["text"] for t in sim.snapshot()["sessions"][0]["tasks"]] == lines
        assert not [c for c in rig.changes if c.kind is ChangeKind.ERROR]

    services_rig(sim, scenario)


# -- Stop gets through ------------------------------------------------------------------------


def test_stop_gets_through_a_503_and_says_when_it_could_not(
    make_sim: SimFactory, rig_factory: Callable[..., Any], ledger: FaultLedger
) -> None:
    sim = make_sim(chars_per_second=20.0)
    long_line = "This line is long enough that the avatar is still saying it when Stop comes."

    async def speaking(rig: Rig, text: str) -> None:
        rig.queue.enqueue(text)
        await until(lambda: any(r.state is TaskState.SPEAKING for r in rig.rows()), 10)

    async def scenario(rig: Rig) -> None:
        session_id = await rig.start()
        rig.watchdog.start()
        # one 503 on the cancel: the other path (or a retry) gets through
        await speaking(rig, long_line)
        rig.set_faults(error_burst=1)
        result = await rig.queue.stop()
        ledger.inject("503_on_stop")
        assert result.confirmed and result.confirmed_by
        assert (await rig.sim_session(session_id))["current"] is None  # it stopped talking
        # every cancel refused: the avatar may still talk, and the app says so
        rig.queue.resume()
        await speaking(rig, long_line + " Again.")
        rig.set_faults(error_burst=100)
        with pytest.raises(StopUnconfirmedError) as info:
            await rig.queue.stop()
        ledger.inject("503_on_stop", 7)
        assert info.value.result.may_still_be_talking
        assert "may still be talking" in info.value.user_message
        assert (await rig.sim_session(session_id))["current"] is not None
        # the service heals: Stop again gets through
        rig.set_faults()
        assert (await rig.queue.stop()).confirmed
        assert (await rig.sim_session(session_id))["current"] is None
        await check_promises(rig, [])

    rig_factory(sim, scenario)
