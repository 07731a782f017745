"""The combined-fault scenario, seeded: every fault at once, with Stop, Speak now and a kill
landing at moments drawn from the seed.

One seed fixes the whole run: the texts, the simulator's fault schedule (its own ``seed``: each
call's fate depends on the seed, its route and how many calls of that route came before), and
when the actions land. Actions are tied to the queue's own progress (the n-th time an item
starts sending, plus a drawn delay), not to the wall clock, so a seed lands in the same window
of the queue's state machine from one run to the next even though the page, the simulator and
the loop are real and their timing varies.

The plan for a seed (see :func:`plan`):

* faults: latency with jitter, 5xx answers, connection resets and 429 bursts, all seeded;
* a flood of composer batches: each is queued, and whatever the composer gives back (a line the
  app says was not sent) is queued again, a few times at most, as a person would;
* Stop, at the n-th send; then Speak now (through the composer when it is free, else through
  the queue as another door would), and in some seeds Resume in between;
* the event channel dropped at drawn sends;
* the session killed, at a drawn send or once the flood is through.

The promises checked after it (:func:`tests.reliability.rig.check_invariants`): each text
reaches the service at most once; every line the log calls spoken was received by the service;
nothing is left sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import httpx

from avaturn_desktop.core.queue import ChangeKind, ItemState, QueueChange
from avaturn_desktop.core.session_state import SessionState
from tests.reliability.rig import Rig, until

Action = Literal["stop", "speak_now", "resume", "drop", "kill"]


@dataclasses.dataclass(frozen=True)
class Step:
    """``action`` once the ``at_send``-th send has started, ``delay_ms`` later; a step with
    ``after_stop`` set instead follows the Stop by ``delay_ms`` (sending is paused then, so no
    send would come to trigger it)."""

    at_send: int
    delay_ms: float
    action: Action
    after_stop: bool = False
    #: (``after_stop`` steps) wait for the next send to start before the delay
    on_next_send: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    seed: int
    batches: tuple[tuple[str, ...], ...]
    faults: dict[str, Any]
    steps: tuple[Step, ...]
    speak_now_text: str
    #: How often the rig queues again what the composer gave back, per batch.
    resend_limit: int = 3

    @property
    def texts(self) -> list[str]:
        return [line for batch in self.batches for line in batch] + [self.speak_now_text]


def plan(seed: int) -> Plan:
    """The run a seed stands for (the same seed, the same plan)."""
    rng = random.Random(seed)
    batches = tuple(
        tuple(f"Seed {seed} batch {b} line {i} goes here." for i in range(1, rng.randint(2, 6) + 1))
        for b in range(rng.randint(3, 5))
    )
    total = sum(len(b) for b in batches)
    faults = {
        "seed": seed,
        "latency_ms": rng.choice([20, 80, 150]),
        "jitter_ms": rng.choice([10, 40, 80]),
        "error_rate": rng.choice([0.05, 0.1, 0.2]),
        "reset_rate": rng.choice([0.05, 0.1, 0.15]),
        "rate_limit_rate": rng.choice([0.05, 0.1, 0.2]),
        "rate_limit_burst_len": rng.randint(1, 3),
        "retry_after_s": rng.choice([0, 1]),
    }
    stop_at = rng.randint(1, max(1, total // 2))
    steps = [Step(stop_at, rng.uniform(0, 60), "stop")]
    if rng.random() < 0.5:
        # Resume, then Speak now while the queue sends again: lands on a line in flight
        steps.append(Step(0, rng.uniform(0, 150), "resume", after_stop=True))
        steps.append(Step(0, rng.uniform(0, 40), "speak_now", after_stop=True, on_next_send=True))
    else:
        steps.append(Step(0, rng.uniform(0, 250), "speak_now", after_stop=True))
    for _ in range(rng.randint(1, 2)):
        steps.append(Step(rng.randint(1, total), rng.uniform(0, 100), "drop"))
    # mostly once the flood is through; now and then in the middle of it
    kill_at = rng.randint(stop_at + 2, total) if rng.random() < 0.3 else 10**6
    steps.append(Step(kill_at, rng.uniform(0, 100), "kill"))
    return Plan(
        seed=seed,
        batches=batches,
        faults=faults,
        steps=tuple(steps),
        speak_now_text=f"Seed {seed} speak now line.",
    )


@dataclasses.dataclass
class Outcome:
    """What a run did, for the report and the assertions."""

    seed: int
    sends: int = 0
    done: list[str] = dataclasses.field(default_factory=list)
    resent: int = 0
    #: Lines the app gave back that the person did not send again (the flood moved on).
    given_up: list[str] = dataclasses.field(default_factory=list)
    #: Every text the person gave the app (batches queued, the Speak now line).
    typed: list[str] = dataclasses.field(default_factory=list)
    #: The queue did not settle (something left waiting or sending) in time.
    stuck: bool = False
    #: Texts a door was refused with a message (the person was told it was not said).
    refused: list[str] = dataclasses.field(default_factory=list)
    #: The faults the simulator injected, by kind.
    injected: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Stop was pressed and what follows it (Resume, Speak now) is not done yet
    chain_open: bool = False
    errors: list[str] = dataclasses.field(default_factory=list)


async def run(rig: Rig, p: Plan) -> Outcome:
    """Play plan ``p`` on a rig that is open and has a live session; return once settled."""
    out = Outcome(p.seed)
    session_id = rig.controller.snapshot.session_id
    assert session_id is not None
    loop = asyncio.get_running_loop()
    pending = list(p.steps)
    running: list[asyncio.Task[None]] = []
    killed = asyncio.Event()

    def fire(upto: int) -> None:
        due = [s for s in pending if not s.after_stop and s.at_send <= upto]
        for step in sorted(due, key=lambda s: s.action == "kill"):  # the kill last
            pending.remove(step)
            loop.call_later(step.delay_ms / 1000, start, step)

    def start(step: Step) -> None:
        running.append(loop.create_task(act(step)))

    async def act(step: Step) -> None:
        try:
            await _act(rig, p, step, session_id, killed, out)
            out.done.append(f"{step.action}@{out.sends}")
        except Exception as exc:  # a step failing is a finding, not a crash of the rig
            out.errors.append(f"{step.action}: {type(exc).__name__}: {exc}")
        if step.action == "stop":
            out.chain_open = True
            for follow in [s for s in pending if s.after_stop]:
                pending.remove(follow)
                if follow.on_next_send:
                    sends = out.sends
                    with contextlib.suppress(AssertionError):  # none came: go on anyway
                        await until(lambda n=sends: out.sends > n, 5, "a send")
                await asyncio.sleep(follow.delay_ms / 1000)
                await act(follow)
            if rig.queue.paused and rig.queue.live:
                # the planned Speak now did not unpause it (it failed): a person resumes
                await asyncio.sleep(0.5)
                rig.speaking.presenter.resume()
                out.done.append(f"resume-by-hand@{out.sends}")
            out.chain_open = False

    def on_change(change: QueueChange) -> None:
        item = change.item
        if change.kind is ChangeKind.CHANGED and item and item.state is ItemState.SENDING:
            out.sends += 1
            fire(out.sends)

    unsubscribe = rig.queue.subscribe(on_change)
    rig.set_faults(**p.faults)

    def over() -> bool:
        return killed.is_set() or rig.controller.state is not SessionState.LIVE

    try:
        for batch in p.batches:
            await _until_free(rig, over)
            if over():
                break
            if rig.composer_text():  # what came back of the last batch: the person moves on
                out.given_up.extend(rig.composer_text().splitlines())
            assert rig.type_and_queue(" ".join(batch)), rig.composer.status_label.text()
            out.typed.extend(batch)
            for _ in range(p.resend_limit):
                await _until_free(rig, over)
                if over() or not rig.composer_text():
                    break
                # the app says this text was not sent: the person sends it again
                if rig.composer.queue_text():
                    out.resent += 1
        # whatever did not fire yet fires now; the kill once Stop and Speak now are done
        kill = [s for s in pending if s.action == "kill"]
        for step in kill:
            pending.remove(step)
        fire(10**9)
        while running or out.chain_open:
            if running:
                await running.pop(0)
            else:
                await asyncio.sleep(0.01)
        for step in kill:
            await asyncio.sleep(step.delay_ms / 1000)
            await act(step)
        await until(lambda: killed.is_set(), 15, "the planned kill")
        while running:
            await running.pop(0)
    finally:
        unsubscribe()
        out.injected.update(rig.sim.app.state.faults.injected)
        rig.set_faults()
    try:
        await until(lambda: rig.controller.state is not SessionState.LIVE, 10, "the end")
        await until(
            lambda: all(i.state.finished or i.held for i in rig.queue.items),
            15,
            "the queue to settle",
        )
    except AssertionError as exc:
        out.stuck = True
        items = [(i.item_id, i.state.value, i.reason, i.text) for i in rig.queue.items]
        out.errors.append(
            f"stuck: {exc}; session {rig.controller.state}; composer pending "
            f"{rig.composer.pending}; items {items}"
        )
    return out


async def _until_free(rig: Rig, over: Callable[[], bool]) -> None:
    """Until the composer can take text again (or the run is over)."""
    await until(lambda: over() or not rig.composer.pending, 20, "the composer to be free")


def lost(rig: Rig, out: Outcome, received: set[str]) -> list[str]:
    """Texts the person gave that left no trace: not received by the service, not back in
    the box or given up there, not held, and not in the log as cancelled or failed with a
    reason."""
    box = set(rig.composer_text().splitlines()) | set(out.given_up) | set(out.refused)
    held = {i.text for i in rig.queue.items if i.held}
    explained = {r.text for r in rig.rows() if r.reason and r.reason.strip()}
    return [t for t in out.typed if t not in received | box | held | explained]


async def _act(
    rig: Rig, p: Plan, step: Step, session_id: str, killed: asyncio.Event, out: Outcome
) -> None:
    if step.action == "stop":
        await rig.speaking.presenter.stop()
    elif step.action == "resume":
        rig.speaking.presenter.resume()
    elif step.action == "speak_now":
        if not rig.queue.live:
            return
        out.typed.append(p.speak_now_text)
        if not rig.composer.pending and not rig.composer_text():
            rig.composer.editor.setPlainText(p.speak_now_text)
            await rig.composer.speak_now()
        elif await rig.speaking.presenter.speak_now(p.speak_now_text) is None:
            # the composer is busy: another door (a control surface) speaks now, and was
            # refused with a message (the stop did not get through, the session ended)
            out.refused.append(p.speak_now_text)
    elif step.action == "drop":
        rig.set_faults(**p.faults, drop_event_channels=True)
    elif step.action == "kill":
        try:
            await _post(rig, f"{rig.sim.base_url}/_sim/sessions/{session_id}/kill")
        finally:
            killed.set()


async def _post(rig: Rig, url: str) -> httpx.Response:
    return await rig.http.post(url, headers={"Authorization": f"Bearer {rig.api_key}"})


Runner = Callable[[Rig], Awaitable[Any]]
