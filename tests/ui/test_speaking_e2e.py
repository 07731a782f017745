"""End to end on the simulator, in the real avatar page: type, send, hear, stop, change voice,
find every line in the log with its state and latency, export it, and read it after a restart.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent
from speaking_fakes import until

from avaturn_desktop.core.catalog import DEFAULT_VOICE_ID, VOICES
from avaturn_desktop.core.events import AvatarStartedSpeakingPhrase, PageEvent
from avaturn_desktop.core.queue import REASON_STOPPED, ItemState
from avaturn_desktop.core.session_state import SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.core.tasks import TaskState
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.docks import log_panel
from avaturn_desktop.ui.log_model import LogModel
from avaturn_desktop.ui.web.view import AvatarView
from tests.assembled import open_app

pytestmark = pytest.mark.web

NEW_VOICE = VOICES[1].id
LONG_LINE = "This second line goes on and on, " * 10 + "until it is stopped."


@pytest.fixture
def view(qtbot: Any) -> Iterator[AvatarView]:
    view = AvatarView()
    view.resize(480, 270)
    with (
        qtbot.waitSignal(view.bridge.ready_changed, timeout=20_000),
        qtbot.waitSignal(view.loadFinished, timeout=20_000) as loaded,
    ):
        view.load_stage()
    assert loaded.args == [True]
    yield view
    view.shutdown()
    view.close()
    view.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_type_send_stop_change_voice_log_and_export(
    qloop: qasync.QEventLoop,
    simulator: Any,
    tmp_path: Path,
    qtbot: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "tasklog.sqlite3"
    events: list[PageEvent] = []
    shown: list[str] = []
    settings = Settings(init_timeout_s=15)

    async def scenario() -> str:
        async with open_app(simulator, tmp_path, settings=settings) as app:
            app.shell.stage.event.connect(events.append)
            app.runtime.notices.subscribe(lambda _level, text: shown.append(text))
            ui, controller, store = app.shell.speaking, app.shell.controller, app.runtime.store
            composer = ui.composer
            app.shell.show()

            # typed before the session exists: held, visibly
            composer.editor.setPlainText(f"Hello there.\n{LONG_LINE}\nAnd a third line.")
            assert composer.queue_text()
            assert [i.held for i in ui.queue.items] == [True, True, True]
            assert await controller.start(settings.session.to_request())
            await until(lambda: composer.editor.hasFocus())

            # sent once live; the box empties once the service took all three
            await until(lambda: not composer.pending)
            assert composer.editor.toPlainText() == ""
            await until(lambda: ui.queue.items[0].state is ItemState.SPOKEN)
            await until(lambda: ui.queue.items[1].state is ItemState.SPEAKING)
            assert await ui.presenter.stop()
            assert [i.state for i in ui.queue.items] == [
                ItemState.SPOKEN,
                ItemState.CANCELLED,
                ItemState.CANCELLED,
            ]

            # a bad voice id: the service's error, and the old voice stays
            assert not await composer.change_voice("no-such-voice")
            assert ui.queue.voice_id == DEFAULT_VOICE_ID
            assert await composer.change_voice(NEW_VOICE)
            ui.presenter.resume()
            composer.editor.setPlainText("After the change.")
            assert composer.queue_text()
            await until(lambda: ui.queue.items[-1].state is ItemState.SPOKEN)
            await controller.terminate()
            assert controller.state is SessionState.ENDED
            assert any("Unknown voice" in text for text in shown)
            assert any(isinstance(e, AvatarStartedSpeakingPhrase) for e in events)

            rows = store.query()
            assert [(r.text.split(",")[0], r.state, r.reason) for r in rows] == [
                ("Hello there.", TaskState.SPOKEN, None),
                ("This second line goes on and on", TaskState.CANCELLED, REASON_STOPPED),
                ("And a third line.", TaskState.CANCELLED, REASON_STOPPED),
                ("After the change.", TaskState.SPOKEN, None),
            ]
            session_id = rows[0].session_id
            assert {r.session_id for r in rows} == {session_id}
            assert [r.voice_id for r in rows] == [DEFAULT_VOICE_ID] * 3 + [NEW_VOICE]
            spoken = [rows[0], rows[3]]
            for record in spoken:
                assert record.task_id is not None and record.latency_ms is not None
                assert 0 <= record.latency_ms < 5_000
                assert record.duration_s is not None and record.duration_s > 0
            assert rows[1].started_at is not None  # stopped mid-sentence: it had started
            assert rows[1].duration_s is not None

            # the log dock shows it, filters to it, and exports it in every format
            panel = ui.log_panel
            assert ui.log_model.rowCount() == 4
            assert panel.session_combo.findData(session_id) > 0
            panel.session_combo.setCurrentIndex(panel.session_combo.findData(session_id))
            outputs: dict[str, Path] = {}
            for fmt in ("csv", "jsonl", "srt"):
                target = tmp_path / f"export.{fmt}"
                monkeypatch.setattr(
                    log_panel.ExportDialog,
                    "ask",
                    classmethod(lambda _cls, _parent, _fmt, _suggested, t=target: t),
                )
                assert panel.export(fmt) == target
                outputs[fmt] = target
            table = list(csv.DictReader(io.StringIO(outputs["csv"].read_text(encoding="utf-8"))))
            assert [row["state"] for row in table] == ["spoken", "cancelled", "cancelled", "spoken"]
            assert float(table[0]["latency_ms"]) == pytest.approx(rows[0].latency_ms, abs=0.1)
            lines = outputs["jsonl"].read_text(encoding="utf-8").splitlines()
            assert json.loads(lines[3])["voice_id"] == NEW_VOICE
            srt = outputs["srt"].read_text(encoding="utf-8")
            assert "Hello there." in srt and "After the change." in srt
            assert srt.startswith("1\n00:00:00,000 --> ")

            return session_id

    session_id = qloop.run_until_complete(scenario())
    # after a restart the same database shows the past session
    with TaskLogStore(db) as again:
        model = LogModel(again)
        model.set_filter(session_id=session_id)
        assert model.rowCount() == 4
        assert model.record(3).state is TaskState.SPOKEN
