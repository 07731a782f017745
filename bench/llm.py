"""7. LLM: a sentence complete in the model's stream -> its task POST leaving.

The simulator runs in its own process, its language model stand-in streaming at a steady token
rate. This process runs the real path of Ask mode: ``AnswerService`` (the ``openai`` client's
stream, the sentence chunker) -> ``SpeechQueueSink`` -> ``SpeechQueue`` (a task-log row in
SQLite, the pump) -> ``AvaturnClient`` -> the task POST to a live simulator session.

* ``C`` = the moment the sink is handed a sentence: the chunker has just returned it, so the
  sentence is complete in the stream.
* ``L`` = the moment httpx sends that sentence's task POST (a request event hook).

``llm_sentence_to_task_ms = L - C``, per sentence, over every sentence of every question (one
question at a time, each waited out until its last task was answered), reported at p99 with
p50 and the maximum beside it. As in the app, what start-up made is frozen out of the
collector's sight before the first question (``gc.freeze``); collections still run.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from avaturn_desktop.core.models import SessionCreate
from avaturn_desktop.core.queue import ItemState
from avaturn_desktop.core.session_state import EndReason, SessionSnapshot, SessionState
from avaturn_desktop.core.settings import LlmSettings
from avaturn_desktop.services.answers import AnswerService, LlmEndpoint, SpeechQueueSink
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore
from bench.common import API_KEY, Figure, median, percentile, rounded, simulator_process

#: Questions asked in turn (the simulator's answer depends on the question: variety).
QUESTIONS = (
    "Why is the sky blue?",
    "What does the avatar do while I type?",
    "How are long answers spoken?",
    "What happens when I ask again?",
    "Can it run without a network?",
)


@dataclasses.dataclass
class _LiveSession:
    """The session controller as the queue sees it: one session, live the whole run."""

    snapshot: SessionSnapshot
    #: The viewer token, for the service's cancel call that Stop makes besides the page's.
    token: str | None = None

    def subscribe(self, listener: Callable[[SessionSnapshot], None]) -> Callable[[], None]:
        return lambda: None

    async def end_remotely(self, reason: EndReason, detail: str | None = None) -> None:
        raise RuntimeError(f"the benchmark's session ended: {reason} {detail}")


@dataclasses.dataclass
class _RestStage:
    client: AvaturnClient
    token: str

    async def cancel_all(self) -> None:
        await self.client.cancel_all(self.token)

    async def change_voice(self, voice_id: str) -> None:
        await self.client.change_voice(self.token, voice_id)


class _TimedSink(SpeechQueueSink):
    """The real sink, noting when each sentence was handed over (``C``)."""

    def __init__(self, queue: SpeechQueue, handed: dict[str, collections.deque[float]]) -> None:
        super().__init__(queue)
        self._handed = handed

    def queue_sentence(self, text: str, question_id: str) -> Any:
        self._handed[text].append(time.perf_counter())
        return super().queue_sentence(text, question_id)


async def _measure(base_url: str, questions: int) -> dict[str, Any]:
    handed: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
    gaps: list[float] = []
    unmatched = 0

    async def on_request(request: httpx.Request) -> None:
        nonlocal unmatched
        if request.method == "POST" and request.url.path.endswith("/tasks"):
            left = time.perf_counter()
            text = json.loads(request.content)["text"]
            if handed[text]:
                gaps.append(left - handed[text].popleft())
            else:
                unmatched += 1

    store_path = Path(tempfile.mkdtemp(prefix="avaturn-bench-llm-")) / "tasklog.sqlite3"
    async with httpx.AsyncClient(event_hooks={"request": [on_request]}) as http:
        client = AvaturnClient(http, api_key=API_KEY, base_url=base_url)
        created = await client.create_session(SessionCreate(user_absent_timeout=600))
        session = _LiveSession(
            SessionSnapshot(state=SessionState.LIVE, session_id=created.session_id),
            created.token,
        )
        with TaskLogStore(store_path) as store:
            # no page watches this session, so nothing is spoken and no line ever ends: the
            # look-ahead (which waits for the avatar, by design) is off, and what is timed is
            # the path's own cost, as for the first two lines of an answer in the app
            queue = SpeechQueue(
                client, store, session, stage=_RestStage(client, created.token), lookahead=None
            )
            changed = asyncio.Event()
            queue.subscribe(lambda _change: changed.set())
            endpoint = LlmEndpoint(base_url + "/v1", "bench", keyless=True, simulated=True)
            settings = LlmSettings(model="sim-chat")
            answers = AnswerService(
                _TimedSink(queue, handed), endpoint=lambda: endpoint, settings=lambda: settings
            )
            # as the app does once it is up (ui/gc_guard.py): what start-up made is frozen out
            # of the collector's sight, so a full collection does not rescan it mid-answer
            gc.collect()
            gc.freeze()
            sentences = 0
            started = time.perf_counter()
            try:
                for n in range(questions):
                    view = await answers.ask(QUESTIONS[n % len(QUESTIONS)], session_id="bench")
                    done = await answers.wait(view.question_id)
                    if done.reason is not None:
                        raise RuntimeError(f"question {n} ended {done.state}: {done.reason}")
                    sentences += len(done.sentences)
                    async with asyncio.timeout(30):
                        while any(i.state in (ItemState.WAITING, ItemState.SENDING)
                                  for i in queue.items):  # fmt: skip
                            changed.clear()
                            await changed.wait()
            finally:
                await answers.shutdown()
                await queue.shutdown()
            run_s = time.perf_counter() - started
            await client.terminate_session(created.session_id)
    ms = [g * 1000 for g in gaps]
    return {
        "questions": questions,
        "sentences": sentences,
        "samples": len(ms),
        "unmatched_posts": unmatched,
        "p50_ms": median(ms),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "run_s": run_s,
    }


def run(quick: bool) -> list[Figure]:
    questions = 10 if quick else 50
    rate = 200
    with simulator_process("--llm-tokens-per-second", str(rate)) as base_url:
        data = asyncio.run(_measure(base_url, questions))
    if data["samples"] != data["sentences"]:
        raise RuntimeError(
            f"{data['sentences']} sentences but {data['samples']} matched task POSTs"
            f" ({data['unmatched_posts']} unmatched)"
        )
    return [
        Figure(
            "llm_sentence_to_task_ms_p99",
            rounded(data["p99_ms"]),
            "< 10",
            "ms",
            f"p50 {data['p50_ms']:.2f} ms, max {data['max_ms']:.2f} ms over {data['samples']} "
            f"sentences of {questions} answers streamed at {rate} tokens/s",
            data,
        )
    ]
