"""Fixtures for the speaking panels: qasync's loop, and a real queue over small typed fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from speaking_fakes import FakeClient, FakeController, FakeStage, QueueRig

from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.messages import MessageBus


@pytest.fixture
def queue_rig(tmp_path: Path, qloop: qasync.QEventLoop) -> Iterator[QueueRig]:
    store = TaskLogStore(tmp_path / "log.sqlite3")
    client, stage, controller = FakeClient(), FakeStage(), FakeController()
    # no page reports speech here: every line goes at once (the look-ahead has its own tests)
    queue = SpeechQueue(client, store, controller, stage=stage, lookahead=None)
    bus = MessageBus()
    messages: list[tuple[str, str]] = []
    bus.message.connect(lambda level, text: messages.append((level, text)))
    bus.start_listening()
    yield QueueRig(queue, client, stage, controller, store, messages, bus, Settings())
    qloop.run_until_complete(queue.shutdown())
    store.close()
