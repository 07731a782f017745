"""A real speech queue over the shared fakes (tests/fakes.py), for the speaking panels' tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from fakes import FakeClient, FakeController, FakeStage

from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.messages import MessageBus


async def until(predicate: Callable[[], bool], wait_s: float = 10.0) -> None:
    """Await a condition on the running loop (polled each loop turn, bounded in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@dataclass
class QueueRig:
    queue: SpeechQueue
    client: FakeClient
    stage: FakeStage
    controller: FakeController
    store: TaskLogStore
    messages: list[tuple[str, str]]
    bus: MessageBus
    settings: Settings
