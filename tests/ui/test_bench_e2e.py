"""The voice bench end to end: the assembled app on the simulator, real QtWebEngine pages.

Two avatars side by side (a second slot made from the window, its own stage, session and
voice), the composer speaking to one or to all, the log saying which avatar said what, the
metrics per voice and per session; an A/B comparison in one session, blind, rated and
exported; the voice library's check with the service; the sound settings reaching the page.
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import pytest
import qasync
from speaking_fakes import until

from avaturn_desktop.core.catalog import VOICES
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.session_state import SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.latency import latency_json
from avaturn_desktop.ui.log_model import Column
from avaturn_desktop.ui.targets import ALL
from tests.assembled import bridge_ready, open_app, reach

pytestmark = [pytest.mark.web, pytest.mark.timeout(180)]

A, B = VOICES[0].id, VOICES[3].id


def spoken_on(simulator: Any, session_id: str | None) -> list[str]:
    (session,) = [s for s in simulator.snapshot()["sessions"] if s["session_id"] == session_id]
    return [t["text"] for t in session["tasks"] if t["status"] == "spoken"]


def test_two_avatars_side_by_side(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path, settings=Settings(slot_quota=2)) as app:
            shell, runtime = app.shell, app.runtime
            bench = shell.bench
            shell.show()
            await bridge_ready(app)
            assert bench.selector is not None and not bench.selector.isVisible()

            second = bench.add_avatar()
            assert second is not None and second.index == 1
            assert "slot1" in {
                d.objectName().removeprefix("dock.") for d in bench.stages.docks.values()
            }
            # the quota is 2: a third is refused with a sentence, and no slot is made
            assert bench.add_avatar() is None
            assert len(runtime.slots) == 2
            assert bench.add_action is not None and not bench.add_action.isEnabled()
            assert bench.selector.isVisible()

            # each avatar its own session, voice and page
            shell.session_panel.voice.set_value(A)
            shell.session_panel.create_button.click()
            view = bench.stages.views[1]
            view.session_panel.voice.set_value(B)
            view.session_panel.create_button.click()
            await reach(runtime.slot(0).controller, SessionState.LIVE)
            await reach(second.controller, SessionState.LIVE)
            ids = {s.index: s.controller.session_id for s in runtime.slots}
            assert ids[0] != ids[1]
            assert runtime.settings.value.slot_session(1).voice_id == B  # remembered
            records = {r.session_id: r for r in runtime.store.sessions()}
            assert records[ids[0]].slot == 0 and records[ids[1]].slot == 1

            # the composer speaks to all: the same line on both
            composer = shell.speaking.composer
            bench.selector.setCurrentIndex(bench.selector.findData(ALL))
            composer.editor.setPlainText("The same line for both avatars.")
            assert composer.queue_text()
            await until(
                lambda: all(
                    spoken_on(simulator, ids[i]) == ["The same line for both avatars."]
                    for i in (0, 1)
                ),
                30,
            )
            await until(lambda: not composer.pending)
            assert composer.editor.toPlainText() == ""

            # then to the second alone
            bench.selector.setCurrentIndex(bench.selector.findData(1))
            composer.editor.setPlainText("Only the second one says this.")
            assert composer.queue_text()
            await until(lambda: "Only the second one says this." in spoken_on(simulator, ids[1]))
            assert "Only the second one says this." not in spoken_on(simulator, ids[0])

            # the log says which avatar said each line
            model = shell.speaking.log_model
            await until(lambda: model.rowCount() == 3)
            avatars = {model.data(model.index(r, Column.AVATAR)) for r in range(3)}
            assert {a.split(" · ")[0] for a in avatars} == {"Avatar 1", "Avatar 2"}

            # figures per voice, from the log: both voices have a start latency
            await until(lambda: set(latency_json(runtime.store)["voices"]) == {A, B})
            figures = latency_json(runtime.store)["voices"]
            assert figures[A]["count"] == 1 and figures[B]["count"] == 2
            assert figures[B]["slots"] == [1]
            assert figures[A]["p50_ms"] is not None and figures[A]["p50_ms"] >= 0
            metrics = bench.metrics
            await until(lambda: set(metrics.latencies) == {A, B})
            metrics.redraw()
            assert set(metrics.latency_series) == {A, B}
            assert set(metrics.voice_axis_x.categories()) == {VOICES[0].name, VOICES[3].name}

            # each session's phases of connecting were recorded, there and in the log
            await until(
                lambda: all(
                    s.connect.current is not None and s.connect.current.first_frame_at
                    for s in runtime.slots
                )
            )
            for slot in runtime.slots:
                phases = slot.connect.current
                assert phases is not None and phases.outcome == "live"
                assert phases.token_at is not None and phases.sdk_ready_at is not None
                assert phases.requested_at <= phases.token_at <= phases.sdk_ready_at
                assert phases.live_at is not None and phases.sdk_ready_at <= phases.live_at
            record = runtime.store.get_session(ids[1])
            assert record is not None and record.requested_at and record.sdk_ready_at
            assert record.live_at is not None and record.first_frame_at is not None
            # the page can paint its first frame a moment before the controller records live
            assert record.sdk_ready_at is not None
            assert record.sdk_ready_at <= record.first_frame_at

            # /api/v1/state?slot=1 answers for that slot
            state = runtime.state(1)
            assert state["slot"] == 1 and state["session"]["id"] == ids[1]
            assert state["voice_id"] == B

    qloop.run_until_complete(scenario())


def test_a_blind_comparison_in_one_session_is_rated_and_exported(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell, runtime = app.shell, app.runtime
            ab = shell.bench.ab
            shell.show()
            await bridge_ready(app)
            ab.lines.setPlainText("First test line.\nSecond test line.")
            ab.tick(A)
            assert ab.start() is None  # one voice is no comparison
            assert "two voices" in ab.status.text()
            ab.tick(A, B)
            ab.blind.setChecked(True)
            runner = ab.start()
            assert runner is not None
            run = runner.run
            await until(lambda: run.state in ("done", "failed"), 60)
            assert run.state == "done", run.error
            assert len(run.takes) == 4 and all(t.row_id is not None for t in run.takes)
            # one session, the voice changed between the two voices
            assert len({runtime.store.get(t.row_id).session_id for t in run.takes}) == 1
            for take in run.takes:
                record = runtime.store.get(take.row_id)  # type: ignore[arg-type]
                assert record.voice_id == take.voice_id and record.state.value == "spoken"
            # blind: hidden until every take is rated
            ab.refresh_table()
            assert ab.table.item(0, 2).text() == "hidden until rated"
            for row in range(4):
                ab.table.cellWidget(row, 3).setValue(row + 2)
            assert run.revealed
            assert ab.table.item(0, 2).text() != "hidden until rated"
            stored = runtime.store.ab_takes(run.run_id)
            assert [t.rating for t in stored] == [2, 3, 4, 5]
            assert ab.table.item(0, 7).text() != ""  # start latency from the log
            out = tmp_path / "ab.csv"
            assert ab.export_to(out) == 4
            with out.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert [r["rating"] for r in rows] == ["2", "3", "4", "5"]
            assert {r["voice_id"] for r in rows} == {A, B}
            assert all(r["start_latency_ms"] and r["speaking_s"] for r in rows)
            assert "rating" in ab.summary.text()

    qloop.run_until_complete(scenario())


def test_the_library_asks_the_service_about_a_voice(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            runtime, library = app.runtime, app.shell.bench.library
            assert A in runtime.voices  # the catalogue is the offline library
            library.new_id.setText("not-a-voice")
            await library.check()
            entry = runtime.voices.get("not-a-voice")
            assert entry is not None and entry.check is not None
            assert entry.check.accepted is False and "not-a-voice" in entry.check.reason
            assert "refused" in library.status.text()
            await library.check(B)
            assert runtime.voices.get(B).check.accepted is True  # type: ignore[union-attr]
            # the check's sessions were ended at once: none left open, none burning quota
            assert runtime.store.open_sessions() == []
            live = [s for s in simulator.snapshot()["sessions"] if s["state"] != "ended"]
            assert live == []
            # the verdicts are kept with the voices, in the data directory
            assert "not-a-voice" in (tmp_path / "voices.json").read_text(encoding="utf-8")

    qloop.run_until_complete(scenario())


def test_the_sound_settings_reach_the_page_and_are_remembered(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell, runtime = app.shell, app.runtime
            shell.show()
            await bridge_ready(app)
            row = shell.bench.audio.rows[0]
            answer = await row.send(row.current())
            assert isinstance(answer.get("devices"), list)
            assert "sink_supported" in answer
            row.muted.setChecked(True)
            assert shell.view.avatar_page.isAudioMuted()
            row.volume.setValue(40)
            audio = runtime.settings.value.slot_settings(0).audio
            assert audio.muted is True and audio.volume == pytest.approx(0.4)
            await asyncio.sleep(0)

    qloop.run_until_complete(scenario())


def test_a_slot_a_session_started_on_goes_live_with_the_items_spoken(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    """The runtime makes a slot on demand (as the control API does for ``?slot=1``)."""

    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            runtime = app.runtime
            slot = runtime.ensure_slot(1)
            assert app.shell.bench.stages is not None and 1 in app.shell.bench.stages.docks
            slot.start_session(slot.session_request({"voice_id": B}))
            await reach(slot.controller, SessionState.LIVE)
            (item,) = slot.speaker.say("Said by the slot made on demand.").items
            await until(
                lambda: (
                    (i := slot.queue.item(item.item_id)) is not None and i.state is ItemState.SPOKEN
                ),
                30,
            )

    qloop.run_until_complete(scenario())


def test_a_side_by_side_comparison_takes_turns_on_two_avatars(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell, runtime = app.shell, app.runtime
            ab = shell.bench.ab
            shell.show()
            await bridge_ready(app)
            # a line still on its way on the first avatar goes first: the takes wait for it
            runtime.slot(0).start_session()
            await reach(runtime.slot(0).controller, SessionState.LIVE)
            runtime.slot(0).speaker.say("Said before the comparison.")
            ab.lines.setPlainText("Line one.\nLine two.")
            ab.tick(A, B)
            ab.side_by_side.setChecked(True)
            runner = ab.start()
            assert runner is not None
            run = runner.run
            await until(lambda: run.state in ("done", "failed"), 60)
            assert run.state == "done", run.error
            assert len(runtime.slots) == 2  # the second avatar was made for it
            records = [runtime.store.get(t.row_id) for t in run.takes]  # type: ignore[arg-type]
            assert [r.text for r in records] == ["Line one.", "Line one.", "Line two.", "Line two."]
            assert {r.state.value for r in records} == {"spoken"}
            sessions = {t.label: runtime.store.get(t.row_id).session_id for t in run.takes}  # type: ignore[arg-type]
            assert sessions["A"] != sessions["B"]
            assert [r.voice_id for r in records] == [A, B, A, B]
            first = runtime.store.query(session_id=sessions["A"])
            assert first[0].text == "Said before the comparison."  # it went first, whole
            assert first[0].state.value == "spoken"


def test_ask_goes_to_the_avatar_the_composer_speaks_to(
    qloop: qasync.QEventLoop, simulator: Any, tmp_path: Path, qtbot: Any
) -> None:
    async def scenario() -> None:
        async with open_app(simulator, tmp_path) as app:
            shell, runtime = app.shell, app.runtime
            bench = shell.bench
            target = bench.composer_target
            second = bench.add_avatar()
            assert second is not None
            assert target.answers is runtime.slot(0).answers
            bench.selector.setCurrentIndex(bench.selector.findData(1))  # type: ignore[union-attr]
            assert target.target == 1 and target.answers is second.answers
            bench.selector.setCurrentIndex(bench.selector.findData(ALL))  # type: ignore[union-attr]
            assert target.answers is runtime.slot(0).answers  # all: the first answers
            # a text refused by one avatar says which
            target.set_target(1)
            runtime.settings.update(offline_policy="refuse")
            assert target.say("Nobody is live.") is None
            assert target.refusal  # the queue's own sentence, for the composer to show

    qloop.run_until_complete(scenario())
