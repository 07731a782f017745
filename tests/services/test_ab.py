"""A/B comparisons (Qt-free): the takes in the order they are said, blind labels, the results
table from the log's rows, the summary per voice, the CSV; and a text said by all avatars as one
batch (taken when every avatar took it, given back naming the one that did not)."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import replace
from pathlib import Path

import pytest

from avaturn_desktop.core.errors import ConfigError
from avaturn_desktop.core.queue import ItemState, QueueItem
from avaturn_desktop.core.tasks import TaskRoute
from avaturn_desktop.services.ab import CSV_COLUMNS, AbPlan, AbRun, export_csv, results, summary
from avaturn_desktop.services.fanout import FanOutBatch
from avaturn_desktop.services.speech import Batch, BatchOutcome
from avaturn_desktop.services.tasklog import TaskLogStore

LINES = ("One.", "  ", "Two.")


def test_one_session_says_every_line_with_a_then_with_b() -> None:
    run = AbRun.plan_takes(AbPlan(lines=LINES, voices=("va", "vb"), slot=1))
    assert [(t.label, t.voice_id, t.line, t.text, t.slot) for t in run.takes] == [
        ("A", "va", 0, "One.", 1),
        ("A", "va", 1, "Two.", 1),
        ("B", "vb", 0, "One.", 1),
        ("B", "vb", 1, "Two.", 1),
    ]
    assert run.labels == ["A", "B"] and run.voice_of("B") == "vb"
    assert run.revealed  # not blind


def test_side_by_side_takes_turns_line_by_line_one_slot_per_voice() -> None:
    run = AbRun.plan_takes(AbPlan(lines=LINES, voices=("va", "vb", "vc"), mode="side_by_side"))
    assert [(t.label, t.slot, t.line) for t in run.takes] == [
        ("A", 0, 0),
        ("B", 1, 0),
        ("C", 2, 0),
        ("A", 0, 1),
        ("B", 1, 1),
        ("C", 2, 1),
    ]


def test_blind_shuffles_the_voices_and_hides_them_until_all_are_rated() -> None:
    plan = AbPlan(lines=("x",), voices=("va", "vb", "vc", "vd"), blind=True)
    orders = {
        tuple(t.voice_id for t in AbRun.plan_takes(plan, rng=random.Random(seed)).takes)
        for seed in range(20)
    }
    assert len(orders) > 1  # the labels do not give the voices away
    run = AbRun.plan_takes(plan, rng=random.Random(1))
    assert not run.revealed
    assert {run.shown_voice(t) for t in run.takes} == {"hidden until rated"}
    for take in run.takes[:-1]:
        run.set_take(replace(take, rating=3))
    assert not run.revealed
    run.set_take(replace(run.takes[-1], rating=5))
    assert run.revealed
    other = AbRun.plan_takes(plan, rng=random.Random(1))
    other.reveal()
    assert other.revealed


@pytest.mark.parametrize(
    ("plan", "quota", "words"),
    [
        (AbPlan(lines=("x",), voices=("va",)), 2, "two voices"),
        (AbPlan(lines=("x",), voices=("va", "va")), 2, "once"),
        (AbPlan(lines=(" ", ""), voices=("va", "vb")), 2, "one line"),
        (AbPlan(lines=(), voices=("va", "vb")), 2, "one line"),
        (AbPlan(lines=("x",), voices=tuple("abcdefghi")), 9, "at most"),
        (AbPlan(lines=("x",), voices=("a", "b", "c"), mode="side_by_side"), 2, "one session"),
    ],
)
def test_a_plan_that_cannot_run_says_why(plan: AbPlan, quota: int, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        plan.check(quota)


def test_results_summary_and_csv_read_the_log(tmp_path: Path) -> None:
    names = {"va": "Rachel", "vb": "vb"}
    run = AbRun.plan_takes(
        AbPlan(lines=("=SUM(A1)", "Two."), voices=("va", "vb")), names=names.__getitem__
    )
    with TaskLogStore(tmp_path / "log.sqlite3") as store:
        store.add_ab_takes(run.takes)
        for take, (latency, speaking) in zip(
            run.takes[:3], ((0.2, 1.0), (0.4, 2.0), (0.3, 1.5)), strict=True
        ):
            row = store.add(
                session_id="s", text=take.text, voice_id=take.voice_id, route=TaskRoute.REST
            ).row_id
            store.mark_sent(row, at=10.0)
            store.mark_speaking(row, at=10.0 + latency)
            store.mark_spoken(row, at=10.0 + latency + speaking)
            store.link_ab_take(run.run_id, take.take, row)
            run.set_take(replace(take, row_id=row))
        run.set_take(replace(run.takes[0], rating=4, rated_at=20.0))
        run.set_take(replace(run.takes[2], rating=2))
        run.current = 3
        table = results(run, store.get)
        assert [r.state for r in table] == ["spoken", "spoken", "spoken", "saying"]
        assert table[0].start_latency_ms == pytest.approx(200.0)
        assert table[1].speaking_s == pytest.approx(2.0)
        assert table[0].voice_shown == "Rachel (va)" and table[2].voice_shown == "vb"
        (a, b) = summary(run, table)
        assert (a["label"], a["rating"], a["rated"], a["takes"]) == ("A", 4.0, 1, 2)
        assert a["p50_latency_ms"] == pytest.approx(300.0)
        assert a["mean_speaking_s"] == pytest.approx(1.5)
        assert (b["rating"], b["p50_latency_ms"]) == (2.0, pytest.approx(300.0))
        out = io.StringIO(newline="")
        assert export_csv(run, table, out) == 4
        rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
        assert tuple(rows[0]) == CSV_COLUMNS
        assert rows[0]["text"] == "'=SUM(A1)"  # a spreadsheet does not run it
        assert rows[0]["voice_name"] == "Rachel" and rows[0]["rating"] == "4"
        assert rows[0]["rated_at"] == "1970-01-01T00:00:20.000Z"
        assert rows[3]["state"] == "saying" and rows[3]["start_latency_ms"] == ""


def test_a_blind_export_before_every_rating_keeps_the_voices_out() -> None:
    run = AbRun.plan_takes(AbPlan(lines=("x",), voices=("va", "vb"), blind=True))
    out = io.StringIO(newline="")
    export_csv(run, results(run, lambda _row: None), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert {r["voice_id"] for r in rows} == {""} and {r["voice_name"] for r in rows} == {""}
    assert {r["state"] for r in rows} == {"not said"}


def test_a_take_whose_row_is_gone_reads_as_not_said() -> None:
    run = AbRun.plan_takes(AbPlan(lines=("x",), voices=("va", "vb")))
    run.set_take(replace(run.takes[0], row_id=99))

    def missing(row_id: int) -> object:
        raise KeyError(row_id)

    assert results(run, missing)[0].state == "not said"


# -- one text, every avatar -----------------------------------------------------------------


def batch(text: str, item_id: int) -> Batch:
    return Batch(text, [QueueItem(item_id=item_id, text=text, state=ItemState.WAITING)])


def settle(part: Batch, outcome: BatchOutcome, unsent: str = "", reason: str = "") -> None:
    part.outcome, part.unsent_text, part.reason = outcome, unsent, reason or None
    part._notify()


def test_all_avatars_took_it_only_when_every_one_did() -> None:
    one, two = batch("Hi.", 1), batch("Hi.", 2)
    fan = FanOutBatch("Hi.", [(0, "Avatar 1", one), (1, "Avatar 2", two)])
    seen: list[BatchOutcome] = []
    fan.subscribe(lambda b: seen.append(b.outcome))
    assert fan.outcome is BatchOutcome.PENDING and len(fan.items) == 2
    settle(one, BatchOutcome.TAKEN)
    assert fan.outcome is BatchOutcome.PENDING
    settle(two, BatchOutcome.TAKEN)
    assert fan.outcome is BatchOutcome.TAKEN and seen[-1] is BatchOutcome.TAKEN
    assert fan.given_back_slot is None


def test_one_avatar_giving_it_back_gives_it_back_naming_that_avatar() -> None:
    one, two = batch("Hi.", 1), batch("Hi.", 2)
    fan = FanOutBatch("Hi.", [(0, "Avatar 1", one), (1, "Avatar 2", two)])
    settle(one, BatchOutcome.TAKEN)
    settle(two, BatchOutcome.GIVEN_BACK, "Hi.", "the session has ended on the service")
    assert fan.outcome is BatchOutcome.GIVEN_BACK
    assert fan.unsent_text == "Hi." and fan.given_back_slot == 1
    assert fan.reason == "Avatar 2: the session has ended on the service"
    settle(one, BatchOutcome.GIVEN_BACK, "late", "late")  # settled: nothing changes
    assert fan.given_back_slot == 1


def test_a_fan_out_of_parts_already_settled_is_settled_at_once() -> None:
    one = batch("Hi.", 1)
    one.outcome = BatchOutcome.TAKEN
    fan = FanOutBatch("Hi.", [(0, "Avatar 1", one)])
    assert fan.outcome is BatchOutcome.TAKEN
    held = Batch("Hi.", [QueueItem(item_id=3, text="Hi.", state=ItemState.WAITING)])
    assert FanOutBatch("Hi.", [(0, "A", held)]).held
