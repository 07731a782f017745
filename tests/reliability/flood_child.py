"""The process the crash test kills: the app's session controller, speech queue, task log and
client flooding a simulator that runs in another process.

``python -m tests.reliability.flood_child BASE_URL API_KEY COUNT`` (data under
``AVATURN_DESKTOP_HOME``). Prints ``live <session_id>`` once the session is live, then
``ack <task_id>`` each time the service acknowledges a line, and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.services.speech_queue import QueueChange, SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore


class NoPage:
    """No avatar page in this process: the session is live once created (nobody watches)."""

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool = True
    ) -> str:
        return ""

    async def dispose(self) -> None:
        return None

    async def cancel_all(self) -> None:
        return None

    async def change_voice(self, voice_id: str) -> None:
        return None


async def flood(base_url: str, api_key: str, count: int) -> None:
    store = TaskLogStore.open_default()
    page = NoPage()
    async with httpx.AsyncClient() as http:
        client = AvaturnClient(http, api_key=api_key, base_url=base_url)
        controller = SessionController(
            client, page, api_host=base_url, sdk_url=base_url + "/sim/web-sdk.js", registry=store
        )
        # no page: nothing reports speech, so every line goes at once (no look-ahead)
        queue = SpeechQueue(client, store, controller, stage=page, lookahead=None)
        told: set[str] = set()

        def on_change(change: QueueChange) -> None:
            item = change.item
            if item is not None and item.task_id is not None and item.task_id not in told:
                told.add(item.task_id)
                print("ack", item.task_id, flush=True)

        queue.subscribe(on_change)
        if not await controller.start(SessionCreate()):
            print("failed", controller.snapshot.reason, controller.snapshot.detail, flush=True)
            return
        print("live", controller.session_id, flush=True)
        queue.enqueue([f"Flood line {i} of {count}." for i in range(1, count + 1)])
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(flood(sys.argv[1], sys.argv[2], int(sys.argv[3])))
