"""Ask mode over real loopback HTTP: the answer service against the simulator's language model,
alone (a recording sink) and through the real speech queue, task log and REST client to the
simulator's task endpoint. Waits are on conditions (events, or polling the simulator's state),
never fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeController

from avaturn_desktop.core.chunker import split_sentences
from avaturn_desktop.core.errors import (
    AppError,
    AuthError,
    ConfigError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceTimeoutError,
)
from avaturn_desktop.core.queue import ItemState, QueueRefusedError
from avaturn_desktop.core.settings import DEFAULT_LLM_BASE_URL, LlmSettings
from avaturn_desktop.core.tasks import QuestionState, TaskRoute, TaskState
from avaturn_desktop.services.answers import (
    REASON_REPLACED,
    AnswerBrokenError,
    AnswerService,
    AnswerView,
    LlmEndpoint,
    SpeechQueueSink,
    resolve_endpoint,
)
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.speech_queue import SpeechQueue
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.simulator.llm import LlmConfig, answer_for, tokens_of
from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

QUESTION = "Why is the sky blue?"
FULL = answer_for([{"role": "user", "content": QUESTION}], 4)
SENTENCES = split_sentences(FULL)
#: tokens of the first sentence; its end is certain one token later (the next word's space)
FIRST_TOKENS = len(tokens_of(SENTENCES[0]))
QS = QuestionState


_SERVICES: list[AnswerService] = []


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a scenario; the services it made are shut down on its loop, whatever happens."""

    async def scenario() -> Any:
        try:
            return await coro
        finally:
            services = list(_SERVICES)
            _SERVICES.clear()
            for service in services:
                await service.shutdown()

    return asyncio.run(scenario())


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorServer]]:
    servers: list[SimulatorServer] = []

    def make(**llm: Any) -> SimulatorServer:
        llm.setdefault("tokens_per_second", 1000.0)
        server = SimulatorServer(SimulatorConfig(chars_per_second=400.0, llm=LlmConfig(**llm)))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskLogStore]:
    with TaskLogStore(tmp_path / "log.sqlite3") as log_store:
        yield log_store


@dataclass
class RecordingSink:
    """Records what the service hands over; optionally refuses, or holds ``begin``."""

    sentences: list[tuple[str, str]] = field(default_factory=list)
    begins: list[tuple[str, str | None]] = field(default_factory=list)
    refuse: AppError | None = None
    gate: asyncio.Event | None = None
    on_sentence: Callable[[str], None] | None = None

    async def begin(self, question_id: str, replaces: str | None) -> None:
        self.begins.append((question_id, replaces))
        if self.gate is not None and len(self.begins) == 1:
            await self.gate.wait()

    def queue_sentence(self, text: str, question_id: str) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.sentences.append((question_id, text))
        if self.on_sentence is not None:
            self.on_sentence(text)

    def of(self, question_id: str) -> list[str]:
        return [text for qid, text in self.sentences if qid == question_id]


class Watch:
    """Every answer change, and a way to wait for a condition on them."""

    def __init__(self, service: AnswerService) -> None:
        self.views: list[AnswerView] = []
        self._changed = asyncio.Event()
        service.subscribe(self._on)

    def _on(self, view: AnswerView) -> None:
        self.views.append(view)
        self._changed.set()

    async def until(self, predicate: Callable[[], Any], within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def poll(predicate: Callable[[], Any], within: float = 20.0) -> Any:
    """Wait for a condition on another thread's state (the simulator's), checking often."""
    async with asyncio.timeout(within):
        # no event to wait on: the simulator runs on its own thread
        while not (value := predicate()):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    return value


def llm_requests(sim: SimulatorServer) -> list[dict[str, Any]]:
    return list(httpx.get(sim.base_url + "/_sim/llm").json()["requests"])


def set_faults(sim: SimulatorServer, **faults: Any) -> None:
    assert httpx.put(sim.base_url + "/_sim/llm/faults", json=faults).status_code == 200


def service_for(
    sim: SimulatorServer,
    sink: Any,
    *,
    key: str = "simulator",
    keyless: bool = True,
    base_url: str | None = None,
    store: TaskLogStore | None = None,
    max_retries: int = 0,
    **settings: Any,
) -> AnswerService:
    settings.setdefault("model", "sim-chat")
    settings.setdefault("timeout_s", 10.0)
    endpoint = LlmEndpoint(base_url or sim.base_url + "/v1", key, keyless=keyless)
    chosen = LlmSettings(**settings)
    service = AnswerService(
        sink,
        endpoint=lambda: endpoint,
        settings=lambda: chosen,
        question_log=store,
        max_retries=max_retries,
    )
    _SERVICES.append(service)
    return service


async def ask_and_wait(service: AnswerService, text: str = QUESTION, session: str = "s1"
                       ) -> AnswerView:  # fmt: skip
    view = await service.ask(text, session_id=session)
    async with asyncio.timeout(20):
        return await service.wait(view.question_id)


# -- the answer, sentence by sentence -----------------------------------------------------------


def test_each_sentence_is_handed_over_the_moment_it_is_complete(make_sim: Any, store) -> None:
    sim = make_sim(tokens_per_second=100.0)
    sink = RecordingSink()
    seen_at_first: list[dict[str, Any]] = []

    def first(text: str) -> None:
        if not seen_at_first:  # what the simulator has sent when the first sentence is queued
            seen_at_first.append(llm_requests(sim)[-1])

    sink.on_sentence = first

    async def scenario() -> None:
        service = service_for(sim, sink, store=store, system_prompt="Be brief.")
        view = await ask_and_wait(service)
        assert view.state is QS.ANSWERED and view.reason is None and view.unsaid is None
        assert list(view.sentences) == SENTENCES == sink.of(view.question_id)

    run(scenario())
    first_seen = seen_at_first[0]
    # the stream was still going: the first sentence did not wait for the answer's end
    assert first_seen["outcome"] == "answering"
    assert FIRST_TOKENS <= first_seen["tokens_sent"] < first_seen["tokens"] // 2
    assert llm_requests(sim)[-1]["roles"] == ["system", "user"]
    [question] = store.questions()
    assert (question.text, question.state, question.reason) == (QUESTION, QS.ANSWERED, None)


@dataclass
class Live:
    """The real speech path: the queue over the REST client to a live simulator session."""

    queue: SpeechQueue
    session_id: str
    sim: SimulatorServer

    def tasks(self) -> list[dict[str, Any]]:
        sessions = self.sim.snapshot()["sessions"]
        session = next(s for s in sessions if s["session_id"] == self.session_id)
        return list(session["tasks"])

    def texts(self) -> list[str]:
        return [t["text"] for t in self.tasks()]


@dataclass
class RestStage:
    """The page's speech controls, done over the SDK's REST calls (no page in these tests)."""

    client: AvaturnClient
    token: str

    async def cancel_all(self) -> None:
        await self.client.cancel_all(self.token)

    async def change_voice(self, voice_id: str) -> None:
        await self.client.change_voice(self.token, voice_id)


@contextlib.asynccontextmanager
async def live_queue(sim: SimulatorServer, store: TaskLogStore, **kw: Any) -> AsyncIterator[Live]:
    async with httpx.AsyncClient() as http:
        client = AvaturnClient(http, api_key="test-key", base_url=sim.base_url)
        created = await client.create_session()
        controller = FakeController()
        controller.go_live(created.session_id)
        stage = RestStage(client, created.token)
        # no page reports speech here: every line goes at once (the look-ahead has its own tests)
        kw.setdefault("lookahead", None)
        queue = SpeechQueue(client, store, controller, stage=stage, **kw)
        try:
            yield Live(queue, created.session_id, sim)
        finally:
            await queue.shutdown()


def test_the_first_sentence_reaches_the_service_before_the_stream_ends(
    make_sim: Any, store: TaskLogStore
) -> None:
    sim = make_sim(tokens_per_second=40.0)

    async def scenario() -> None:
        async with live_queue(sim, store) as live:
            service = service_for(sim, SpeechQueueSink(live.queue), store=store)
            view = await service.ask(QUESTION, session_id=live.session_id)
            await poll(lambda: live.texts())
            assert live.texts() == SENTENCES[:1]
            stream = llm_requests(sim)[-1]
            assert stream["outcome"] == "answering"  # the task went out mid-stream
            assert stream["tokens_sent"] < stream["tokens"]
            done = await service.wait(view.question_id)
            assert done.state is QS.ANSWERED
            await poll(lambda: len(live.texts()) == len(SENTENCES))
            assert live.texts() == SENTENCES
            rows = store.query(session_id=live.session_id)
            assert [(r.text, r.route, r.question_id) for r in rows] == [
                (s, TaskRoute.LLM, view.question_id) for s in SENTENCES
            ]
            assert store.answer_rows(view.question_id) == rows
            items = live.queue.items
            assert {i.question_id for i in items} == {view.question_id}

    run(scenario())


def test_a_new_question_wins_and_the_old_answers_rest_is_never_sent(
    make_sim: Any, store: TaskLogStore
) -> None:
    sim = make_sim(tokens_per_second=40.0, sentences=6)
    first_full = split_sentences(answer_for([{"role": "user", "content": QUESTION}], 6))

    async def scenario() -> None:
        async with live_queue(sim, store) as live:
            service = service_for(sim, SpeechQueueSink(live.queue), store=store)
            old = await service.ask(QUESTION, session_id=live.session_id)
            await poll(lambda: live.texts())  # mid-answer: its first sentence is on the service
            new = await service.ask("And why are sunsets red?", session_id=live.session_id)
            replaced = service.answer(old.question_id)
            assert replaced is not None and replaced.state is QS.REPLACED
            assert replaced.reason == REASON_REPLACED
            done = await service.wait(new.question_id)
            assert done.state is QS.ANSWERED and len(done.sentences) == 6
            await poll(lambda: len(live.texts()) == len(replaced.sentences) + 6)
            said_old = list(replaced.sentences)
            assert 1 <= len(said_old) < len(first_full)
            assert said_old == first_full[: len(said_old)]
            # the old answer's later sentences never reached the service; the new one did
            assert live.texts() == said_old + list(done.sentences)
            # the old stream was closed, and its lines on the service were cut off
            closed = await poll(lambda: llm_requests(sim)[0]["outcome"] != "answering" and 1)
            assert closed and llm_requests(sim)[0]["outcome"] == "client_closed"
            old_tasks = [t for t in live.tasks() if t["text"] in said_old]
            assert {t["status"] for t in old_tasks} == {"cancelled"}
            old_rows = store.answer_rows(old.question_id)
            assert {r.state for r in old_rows} == {TaskState.CANCELLED}
            assert not live.queue.paused  # the interruption did not leave the queue paused
            asked = store.questions(live.session_id)
            assert [(q.state, q.reason) for q in asked] == [
                (QS.REPLACED, REASON_REPLACED),
                (QS.ANSWERED, None),
            ]

    run(scenario())


def test_a_question_replaced_before_its_stream_starts_never_asks(make_sim: Any) -> None:
    sim = make_sim()

    async def scenario() -> None:
        sink = RecordingSink(gate=asyncio.Event())
        service = service_for(sim, sink)
        first = asyncio.ensure_future(service.ask("First question", session_id="s1"))
        await poll(lambda: sink.begins)  # the first question is making way (begin holds)
        second = await service.ask(QUESTION, session_id="s1")
        assert sink.begins[1][1] == sink.begins[0][0]  # the second replaces the first
        assert sink.gate is not None
        sink.gate.set()
        first_view = await first
        assert first_view.state is QS.REPLACED
        done = await service.wait(second.question_id)
        assert list(done.sentences) == SENTENCES
        assert sink.of(first_view.question_id) == []

    run(scenario())
    assert [r["question"] for r in llm_requests(sim)] == [QUESTION]


@dataclass
class HeldLine:
    """The queue's way to the service, with one order forced: a line's request leaves only
    once a Stop's cancels (the page's and the service's) have landed, the order in which the
    queue's sending races Stop. Every call that reached the service is recorded, in order,
    with the moment the door's Stop returned."""

    client: AvaturnClient
    token: str
    events: list[str] = field(default_factory=list)
    cancels_landed: asyncio.Event = field(default_factory=asyncio.Event)
    hold: bool = True

    async def add_task(self, session_id: str, text: str) -> Any:
        if self.hold:
            await self.cancels_landed.wait()
        created = await self.client.add_task(session_id, text)
        self.events.append(f"task: {text}")
        return created

    async def cancel_all(self, token: str | None = None) -> Any:
        # the page's path and the service's alike, with the live session's own token
        result = await self.client.cancel_all(self.token)
        self.events.append("cancel")
        if self.events.count("cancel") >= 2:  # both paths of the first Stop
            self.cancels_landed.set()
        return result

    async def change_voice(self, voice_id: str) -> None:
        await self.client.change_voice(self.token, voice_id)

    def after_stop(self) -> list[str]:
        return self.events[self.events.index("stop returned") + 1 :]


def test_stop_with_a_line_in_flight_leaves_nothing_of_the_answer_on_the_service(
    make_sim: Any, store: TaskLogStore
) -> None:
    """Stop while the answer's first sentence is on its way, its request landing after the
    cancels: once Stop has returned nothing of the answer is queued or speaking on the
    service, and nothing more reaches it."""
    sim = make_sim(tokens_per_second=40.0)

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            client = AvaturnClient(http, api_key="test-key", base_url=sim.base_url)
            created = await client.create_session()
            controller = FakeController()
            controller.go_live(created.session_id)
            held = HeldLine(client, created.token)
            queue = SpeechQueue(held, store, controller, stage=held)
            live = Live(queue, created.session_id, sim)
            try:
                service = service_for(sim, SpeechQueueSink(queue), store=store)
                service.follow_queue_stops(queue)
                view = await service.ask(QUESTION, session_id=live.session_id)
                await poll(lambda: [i.state for i in queue.items] == [ItemState.SENDING])
                await queue.stop()  # the door's Stop (the control API's POST /stop)
                held.events.append("stop returned")
                # what is on the service the moment Stop returns
                assert {t["status"] for t in live.tasks()} <= {"cancelled"}, live.tasks()
                stopped = await service.wait(view.question_id)
                assert stopped.state is QS.STOPPED and stopped.reason == "stopped"
                await poll(lambda: queue.items[0].state.finished)
                await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")
                assert not [e for e in held.after_stop() if e.startswith("task")], held.events
                assert live.texts() == list(stopped.sentences) == SENTENCES[:1]
                assert {t["status"] for t in live.tasks()} == {"cancelled"}
                assert [(q.state, q.reason) for q in store.questions()] == [(QS.STOPPED, "stopped")]
            finally:
                await queue.shutdown()

    run(scenario())


# -- Stop at every point of the stream ----------------------------------------------------------

ALL_TOKENS = len(tokens_of(FULL))
#: Where the stream stalls (the simulator keeps it open and sends nothing more) when Stop comes,
#: and how many sentences were complete by then: before its first token, mid-sentence, between
#: two sentences (the second begun), and after the last sentence's text but before the stream
#: says it is finished (no finish_reason, no [DONE]).
STALLS = {
    "before_the_first_token": (0, 0),
    "mid_sentence": (3, 0),
    "mid_second_sentence": (FIRST_TOKENS + 3, 1),
    "after_the_last_text_before_the_end": (ALL_TOKENS, len(SENTENCES) - 1),
}


@pytest.mark.parametrize("point", list(STALLS))
def test_stop_at_any_point_of_the_stream_queues_nothing_more(make_sim: Any, point: str) -> None:
    stall_at, complete = STALLS[point]
    sim = make_sim()
    set_faults(sim, break_after_tokens=stall_at, break_mode="stall")

    async def scenario() -> None:
        sink = RecordingSink()
        service = service_for(sim, sink)
        watch = Watch(service)
        view = await service.ask(QUESTION, session_id="s1")
        await watch.until(lambda: len(watch.views[-1].sentences) == complete)
        # the stream is held open at that point (the simulator stalls it)
        await poll(lambda: llm_requests(sim) and llm_requests(sim)[-1]["outcome"] == "broken")
        stopped = service.stop()
        assert stopped is not None and stopped.state is QS.STOPPED
        assert stopped.reason == "stopped"
        assert list(stopped.sentences) == SENTENCES[:complete]
        # the rest of the text that arrived is kept, never spoken half
        arrived = "".join(tokens_of(FULL)[:stall_at])
        assert arrived.startswith(" ".join(SENTENCES[:complete]))
        rest = arrived[len(" ".join(SENTENCES[:complete])) :].strip()
        assert rest.startswith(stopped.unsaid or "")
        await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")
        final = await service.wait(view.question_id)
        assert final == stopped  # nothing changed after the stop
        assert sink.of(view.question_id) == SENTENCES[:complete]
        said = service.history("s1")
        assert said == ([] if not complete else [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": " ".join(SENTENCES[:complete])},
        ])  # fmt: skip

    run(scenario())


def test_stop_before_the_request_leaves_never_asks(make_sim: Any) -> None:
    sim = make_sim()

    async def scenario() -> None:
        sink = RecordingSink()
        service = service_for(sim, sink)
        view = await service.ask(QUESTION, session_id="s1")
        stopped = service.stop()
        assert stopped is not None and stopped.state is QS.STOPPED and stopped.sentences == ()
        assert (await service.wait(view.question_id)) == stopped
        assert sink.sentences == [] and service.history("s1") == []

    run(scenario())
    assert llm_requests(sim) == []


@pytest.mark.parametrize("nth", range(len(SENTENCES)))
def test_stop_as_a_sentence_is_handed_over_closes_the_stream(make_sim: Any, nth: int) -> None:
    """A Stop set off by the handover itself (a listener of the queue or of the answer reacts
    to the sentence): the stop comes from inside the stream's own task, where no cancel can
    reach it; the stream must be closed all the same and the sentence counted as said."""
    sim = make_sim()
    last = nth + 1 == len(SENTENCES)  # handed over once the stream has ended
    if not last:  # the stream stays open after its text: only a client's close ends it
        set_faults(sim, break_after_tokens=ALL_TOKENS, break_mode="stall")
    stopped: list[AnswerView | None] = []

    async def scenario() -> None:
        sink = RecordingSink()
        service = service_for(sim, sink, timeout_s=60.0)

        def handed_over(text: str) -> None:
            if len(sink.sentences) == nth + 1:
                stopped.append(service.stop())

        sink.on_sentence = handed_over
        view = await service.ask(QUESTION, session_id="s1")
        final = await service.wait(view.question_id)
        assert final.state is QS.STOPPED and list(final.sentences) == SENTENCES[: nth + 1]
        assert stopped[0] is not None and stopped[0].sentences == final.sentences
        assert sink.of(view.question_id) == SENTENCES[: nth + 1]
        assert service.history("s1")[-1]["content"] == " ".join(SENTENCES[: nth + 1])
        if not last:
            await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")

    run(scenario())


def test_stop_twice_is_one_stop(make_sim: Any) -> None:
    sim = make_sim()
    set_faults(sim, break_after_tokens=FIRST_TOKENS + 3, break_mode="stall")

    async def scenario() -> None:
        sink = RecordingSink()
        service = service_for(sim, sink)
        watch = Watch(service)
        view = await service.ask(QUESTION, session_id="s1")
        await watch.until(lambda: watch.views[-1].sentences)
        first, second = service.stop(), service.stop()
        assert first is not None and first.state is QS.STOPPED and second is None
        await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")
        assert service.stop() is None
        assert (await service.wait(view.question_id)) == first
        ended = [v for v in watch.views if v.finished]
        assert len(ended) == 1  # announced once
        assert sink.of(view.question_id) == SENTENCES[:1]
        assert len(service.history("s1")) == 2  # kept once

    run(scenario())


def test_a_new_question_right_after_stop_gets_only_its_own_sentences(make_sim: Any) -> None:
    sim = make_sim()
    set_faults(sim, break_after_tokens=FIRST_TOKENS + 3, break_mode="stall")

    async def scenario() -> None:
        sink = RecordingSink()
        service = service_for(sim, sink)
        watch = Watch(service)
        old = await service.ask(QUESTION, session_id="s1")
        await watch.until(lambda: watch.views[-1].sentences)
        service.stop()
        set_faults(sim, break_after_tokens=None)
        new = await service.ask("And why are sunsets red?", session_id="s1")
        done = await service.wait(new.question_id)
        assert done.state is QS.ANSWERED and len(done.sentences) == len(SENTENCES)
        assert sink.of(old.question_id) == SENTENCES[:1]
        assert sink.of(new.question_id) == list(done.sentences)
        # in order: what was said of the old answer, then the new one alone
        assert [t for _, t in sink.sentences] == SENTENCES[:1] + list(done.sentences)
        assert sink.begins[-1] == (new.question_id, old.question_id)
        stopped = service.answer(old.question_id)
        assert stopped is not None and stopped.state is QS.STOPPED  # not "replaced" after all
        assert [r["outcome"] for r in llm_requests(sim)] == ["client_closed", "completed"]

    run(scenario())


# -- failures a person can act on ------------------------------------------------------------


def test_no_key_where_one_is_needed_is_refused_before_anything_is_sent(make_sim: Any) -> None:
    sim = make_sim()
    settings = LlmSettings()
    with pytest.raises(ConfigError, match="AVATURN_DESKTOP_LLM_API_KEY"):
        resolve_endpoint(settings, None, None)

    async def scenario() -> None:
        service = AnswerService(
            RecordingSink(),
            endpoint=lambda: resolve_endpoint(settings, "  ", None),
            settings=lambda: settings,
        )
        with pytest.raises(ConfigError, match="needs a language model API key"):
            await service.ask(QUESTION, session_id="s1")
        assert service.current is None

    run(scenario())
    assert llm_requests(sim) == []


def test_where_ask_goes() -> None:
    default, sim_url = LlmSettings(), "http://127.0.0.1:9"
    cloud = resolve_endpoint(default, " sk-real ", sim_url)
    assert (cloud.base_url, cloud.api_key, cloud.keyless) == (
        DEFAULT_LLM_BASE_URL,
        "sk-real",
        False,
    )
    offline = resolve_endpoint(default, None, sim_url + "/")
    assert offline.base_url == sim_url + "/v1" and offline.simulated and offline.keyless
    local = resolve_endpoint(LlmSettings(base_url="http://localhost:11434/v1"), "", None)
    assert local.base_url == "http://localhost:11434/v1" and local.keyless and not local.simulated
    assert "sk-real" not in repr(cloud)


@pytest.mark.parametrize("empty", ["", "   ", "\n\t"])
def test_an_empty_or_huge_question_is_refused(make_sim: Any, empty: str) -> None:
    sim = make_sim()

    async def scenario() -> None:
        service = service_for(sim, RecordingSink())
        with pytest.raises(ConfigError, match="empty"):
            await service.ask(empty, session_id="s1")
        with pytest.raises(ConfigError, match="at most"):
            await service.ask("why " * 2000, session_id="s1")

    run(scenario())
    assert llm_requests(sim) == []


@dataclass
class Failure:
    """One failure class: how to provoke it, and what the person must be told."""

    error: type[AppError]
    says: str
    faults: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)


CANARY = "sk-canary-9c1f4e0b7d"
FAILURES = {
    "keyless but a key is needed": Failure(
        AuthError, "needs an API key (401): enter it in Settings", sim={"api_key": "real"}
    ),
    "wrong key": Failure(
        AuthError,
        "rejected the API key (401): check the key in Settings",
        sim={"api_key": "real"},
        service={"key": CANARY, "keyless": False},
    ),
    "unknown model": Failure(
        NotFoundError, "The model “gpt-9-ultra” does not exist", service={"model": "gpt-9-ultra"}
    ),
    "wrong base URL": Failure(
        NotFoundError, "Nothing answers chat completions at", service={"base_url": "/nope/v1"}
    ),
    "429": Failure(
        RateLimitedError,
        "is rate limiting requests (429): ask again in 1.5 s",
        faults={"rate_limit_burst": 5, "retry_after_ms": 1500},
    ),
    "429 outlasting the retry": Failure(
        RateLimitedError,
        "is rate limiting requests (429)",
        faults={"rate_limit_burst": 5, "retry_after_ms": 20},
        service={"max_retries": 1},
    ),
    "5xx": Failure(ServerError, "failed (503); try again", faults={"error_burst": 5}),
    "no answer in time": Failure(
        ServiceTimeoutError,
        "did not start answering within 0.3 s",
        faults={"latency_ms": 3000},
        service={"timeout_s": 0.3},
    ),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_a_failure_before_the_answer_says_what_to_do(
    make_sim: Any, store: TaskLogStore, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    case = FAILURES[name]
    caplog.set_level(logging.DEBUG)
    sim = make_sim(**case.sim)
    if case.faults:
        set_faults(sim, **case.faults)
    options = dict(case.service)
    if "base_url" in options:
        options["base_url"] = sim.base_url + options["base_url"]

    async def scenario() -> AnswerView:
        sink = RecordingSink()
        service = service_for(sim, sink, store=store, **options)
        view = await ask_and_wait(service)
        assert sink.sentences == []
        return view

    view = run(scenario())
    assert view.state is QS.FAILED
    assert isinstance(view.error, case.error), view.error
    assert view.reason is not None and case.says in view.reason, view.reason
    assert store.get_question(view.question_id).reason == view.reason
    for text in (view.reason, caplog.text):
        assert CANARY not in text and "canary" not in text


def test_a_single_429_is_waited_out(make_sim: Any) -> None:
    sim = make_sim()
    set_faults(sim, rate_limit_burst=1, retry_after_ms=20)

    async def scenario() -> AnswerView:
        service = service_for(sim, RecordingSink(), max_retries=1)
        return await ask_and_wait(service)

    view = run(scenario())
    assert view.state is QS.ANSWERED and list(view.sentences) == SENTENCES
    assert [r["outcome"] for r in llm_requests(sim)] == [429, "completed"]


def test_a_service_that_cannot_be_reached(make_sim: Any) -> None:
    sim = make_sim()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"

    async def scenario() -> AnswerView:
        return await ask_and_wait(service_for(sim, RecordingSink(), base_url=closed))

    view = run(scenario())
    assert view.state is QS.FAILED and isinstance(view.error, NetworkError)
    assert view.reason is not None and "Could not reach the language model at 127.0.0.1:" in (
        view.reason
    )


BREAKS = {
    "reset": (AnswerBrokenError, "broke off: the connection was lost"),
    "close": (AnswerBrokenError, "broke off: the stream ended before the answer did"),
    "error_event": (ServerError, "reported an error mid-answer: The server had an error"),
    "stall": (ServiceTimeoutError, "stalled: nothing more came for 0.5 s"),
}


@pytest.mark.parametrize("mode", list(BREAKS))
def test_a_stream_that_breaks_midway_keeps_what_was_said(
    make_sim: Any, store: TaskLogStore, mode: str
) -> None:
    error, says = BREAKS[mode]
    sim = make_sim()
    # the first sentence is complete, the second has begun: "Stop ends the" arrived
    set_faults(sim, break_after_tokens=FIRST_TOKENS + 3, break_mode=mode)

    async def scenario() -> None:
        async with live_queue(sim, store) as live:
            service = service_for(sim, SpeechQueueSink(live.queue), store=store, timeout_s=0.5)
            view = await ask_and_wait(service, session=live.session_id)
            assert view.state is QS.FAILED and isinstance(view.error, error), view.error
            assert view.reason is not None and says in view.reason, view.reason
            assert view.reason.endswith("Its first sentence was said; the rest was not.")
            assert list(view.sentences) == SENTENCES[:1]
            assert view.unsaid == "Stop ends the"  # never spoken half
            # what was queued stays queued and is sent: it is said
            await poll(lambda: live.texts() == SENTENCES[:1])
            [item] = live.queue.items
            assert item.state is not ItemState.CANCELLED and item.question_id == view.question_id
            assert store.get_question(view.question_id).state is QS.FAILED
            # the history keeps what was said, so the model knows where it broke off
            assert service.history(live.session_id)[-1] == {
                "role": "assistant",
                "content": SENTENCES[0],
            }

    run(scenario())


@pytest.mark.parametrize("mode", list(BREAKS))
def test_a_stream_that_breaks_before_a_sentence_is_complete(make_sim: Any, mode: str) -> None:
    sim = make_sim()
    set_faults(sim, break_after_tokens=3, break_mode=mode)

    async def scenario() -> AnswerView:
        service = service_for(sim, RecordingSink(), timeout_s=0.5)
        view = await ask_and_wait(service)
        assert service.history("s1") == []  # nothing said: asking again sends it once
        return view

    view = run(scenario())
    assert view.state is QS.FAILED and view.sentences == ()
    assert view.reason is not None and view.reason.endswith("Nothing of it was said.")
    assert view.unsaid == "Here is answer"


def test_two_faults_at_once_a_429_then_a_break(make_sim: Any) -> None:
    sim = make_sim()
    set_faults(sim, rate_limit_burst=1, retry_after_ms=20, break_after_tokens=FIRST_TOKENS + 3,
               break_mode="reset")  # fmt: skip

    async def scenario() -> AnswerView:
        return await ask_and_wait(service_for(sim, RecordingSink(), max_retries=1))

    view = run(scenario())
    assert view.state is QS.FAILED and isinstance(view.error, AnswerBrokenError)
    assert list(view.sentences) == SENTENCES[:1]
    assert [r["outcome"] for r in llm_requests(sim)] == [429, "broken"]


def test_a_sink_that_refuses_ends_the_answer_and_its_stream(make_sim: Any) -> None:
    sim = make_sim(tokens_per_second=40.0)
    refusal = QueueRefusedError("No session is live, so the text was not queued.")

    async def scenario() -> AnswerView:
        return await ask_and_wait(service_for(sim, RecordingSink(refuse=refusal)))

    view = run(scenario())
    assert view.state is QS.FAILED and view.error is refusal
    assert view.reason is not None and view.reason.startswith("No session is live")

    async def closed() -> None:
        await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")

    run(closed())


# -- the conversation --------------------------------------------------------------------------


def test_the_conversation_is_kept_per_session(make_sim: Any) -> None:
    sim = make_sim()

    async def scenario() -> None:
        sink = RecordingSink()
        service = service_for(sim, sink, history_turns=5)
        one = await ask_and_wait(service, "Tell me about owls", "s1")
        two = await ask_and_wait(service, "And about bats", "s1")
        assert two.sentences[0] == "Here is answer number 2, about And about bats."
        other = await ask_and_wait(service, "Tell me about owls", "s2")
        assert other.sentences[0].startswith("Here is answer number 1,")
        assert service.history("s1") == [
            {"role": "user", "content": "Tell me about owls"},
            {"role": "assistant", "content": " ".join(one.sentences)},
            {"role": "user", "content": "And about bats"},
            {"role": "assistant", "content": " ".join(two.sentences)},
        ]
        set_faults(sim, rate_limit_burst=1)
        failed = await ask_and_wait(service, "Lost question", "s1")
        assert failed.state is QS.FAILED
        three = await ask_and_wait(service, "And about moths", "s1")
        assert three.sentences[0].startswith("Here is answer number 3,")  # the failed one: out
        service.forget("s1")
        again = await ask_and_wait(service, "Owls again", "s1")
        assert again.sentences[0].startswith("Here is answer number 1,")

    run(scenario())
    roles = [r.get("roles") for r in llm_requests(sim)]
    assert roles[1] == ["system", "user", "assistant", "user"]


def test_the_history_sent_is_bounded(make_sim: Any) -> None:
    sim = make_sim()

    async def scenario() -> None:
        service = service_for(sim, RecordingSink(), history_turns=1, system_prompt="")
        for n in range(3):
            await ask_and_wait(service, f"Question {n}", "s1")
        assert len(service.history("s1")) == 2

    run(scenario())
    assert llm_requests(sim)[-1]["roles"] == ["user", "assistant", "user"]


# -- the speech queue's side -------------------------------------------------------------------


def test_lines_held_for_a_session_are_logged_with_their_route_and_question(
    store: TaskLogStore,
) -> None:
    from fakes import FakeClient, FakeStage

    async def scenario() -> None:
        controller = FakeController()
        queue = SpeechQueue(FakeClient(), store, controller, stage=FakeStage())
        queue.enqueue(["Typed one.", "Typed two."])
        queue.enqueue("An answer.", route=TaskRoute.LLM, question_id="q1")
        queue.enqueue("Typed three.")
        controller.go_live("s9")  # all four get rows now, in order
        rows = store.query()
        assert [(r.text, r.route, r.question_id) for r in rows] == [
            ("Typed one.", TaskRoute.REST, None),
            ("Typed two.", TaskRoute.REST, None),
            ("An answer.", TaskRoute.LLM, "q1"),
            ("Typed three.", TaskRoute.REST, None),
        ]
        assert [i.question_id for i in queue.items] == [None, None, "q1", None]
        await queue.shutdown()

    run(scenario())


def test_stop_from_any_door_ends_the_answer_but_making_way_does_not(
    make_sim: Any, store: TaskLogStore
) -> None:
    sim = make_sim(tokens_per_second=40.0)

    async def scenario() -> None:
        async with live_queue(sim, store) as live:
            service = service_for(sim, SpeechQueueSink(live.queue), store=store)
            unfollow = service.follow_queue_stops(live.queue)
            watch = Watch(service)
            first = await service.ask(QUESTION, session_id=live.session_id)
            await watch.until(lambda: watch.views[-1].sentences)
            # a new question cuts the first answer off (not a Stop) ...
            second = await service.ask("And why are sunsets red?", session_id=live.session_id)
            assert service.answer(first.question_id).state is QS.REPLACED  # type: ignore[union-attr]
            assert service.current is not None and service.current.state is QS.ANSWERING
            await watch.until(lambda: (c := service.current) is not None and c.sentences)
            # ... while a Stop from a door ends the answer being written
            await live.queue.stop()
            stopped = await service.wait(second.question_id)
            assert stopped.state is QS.STOPPED and 1 <= len(stopped.sentences) < 4
            await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")
            unfollow()

    run(scenario())


def test_stop_on_a_queue_stopped_already_ends_the_new_answer(
    make_sim: Any, store: TaskLogStore
) -> None:
    """Stop, Ask, Stop before the answer's first sentence: the second Stop finds the queue
    paused already, and still ends the answer being written (every Stop counts, not only the
    one that pauses), so nothing of it is ever said."""
    sim = make_sim(tokens_per_second=4.0)  # the first sentence takes seconds to stream

    async def scenario() -> None:
        async with live_queue(sim, store) as live:
            service = service_for(sim, SpeechQueueSink(live.queue), store=store)
            unfollow = service.follow_queue_stops(live.queue)
            await live.queue.stop()
            asked = await service.ask(QUESTION, session_id=live.session_id)
            await poll(lambda: llm_requests(sim) and llm_requests(sim)[-1]["tokens_sent"] > 0)
            answering = service.answer(asked.question_id)
            assert live.queue.paused and answering is not None and not answering.sentences
            await live.queue.stop()
            stopped = await service.wait(asked.question_id)
            assert stopped.state is QS.STOPPED and stopped.sentences == ()
            await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")
            assert live.texts() == [] and live.queue.paused
            unfollow()

    run(scenario())


def test_an_answer_asked_after_a_stop_is_said_at_once_and_what_waited_is_set_aside(
    make_sim: Any, store: TaskLogStore
) -> None:
    """Words after a Stop go at once, whichever door: a question asked after a Stop is
    answered aloud without a Resume; the lines that waited are set aside, and Resume says
    them after the answer."""
    sim = make_sim(tokens_per_second=400.0)

    async def scenario() -> None:
        async with live_queue(sim, store) as live:
            service = service_for(sim, SpeechQueueSink(live.queue), store=store)
            unfollow = service.follow_queue_stops(live.queue)
            await live.queue.stop()
            waited = live.queue.enqueue("A line typed before the question. And another one.")
            assert live.queue.paused and live.texts() == []
            asked = await service.ask(QUESTION, session_id=live.session_id)
            done = await service.wait(asked.question_id)
            assert done.state is QS.ANSWERED and done.sentences == tuple(SENTENCES)
            await poll(lambda: len(live.texts()) == len(SENTENCES))
            assert live.texts() == SENTENCES  # the answer, and nothing that waited
            assert not live.queue.paused
            aside = {
                i.item_id: i for i in live.queue.items if i.item_id in {w.item_id for w in waited}
            }
            assert all(i.set_aside and i.state is ItemState.WAITING for i in aside.values())
            live.queue.resume()
            await poll(lambda: len(live.texts()) == len(SENTENCES) + len(waited))
            assert live.texts()[len(SENTENCES) :] == [w.text for w in waited]
            unfollow()

    run(scenario())


# -- the runtime's slot: Ask for every door ---------------------------------------------------


@dataclass
class PagelessStage:
    """The avatar page as a slot drives it, done over REST (no page in a Qt-free test)."""

    http: httpx.AsyncClient
    token: str = ""

    def client(self, api_host: str) -> AvaturnClient:
        return AvaturnClient(self.http, api_key="unused", base_url=api_host)

    async def connect(
        self, token: str, *, api_host: str, sdk_url: str, timeout_s: float, keep_alive: bool
    ) -> str:
        self.token, self.api_host = token, api_host
        return (await self.client(api_host).get_sdk_session(token)).id

    async def dispose(self) -> None:
        self.token = ""

    async def cancel_all(self) -> None:
        await self.client(self.api_host).cancel_all(self.token)

    async def change_voice(self, voice_id: str) -> None:
        await self.client(self.api_host).change_voice(self.token, voice_id)


def test_a_slot_asks_for_every_door_and_stop_ends_the_answer(
    make_sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avaturn_desktop.core.backend import Backend
    from avaturn_desktop.core.settings import Settings
    from avaturn_desktop.services import secrets
    from avaturn_desktop.services.runtime import Runtime
    from avaturn_desktop.services.settings_store import SettingsStore

    sim = make_sim(tokens_per_second=40.0)
    backend = Backend("simulator", sim.base_url, sim.sdk_url, "test-key")

    async def scenario() -> None:
        store = TaskLogStore(tmp_path / "log.sqlite3")
        runtime = Runtime.open(
            backend=backend, settings=SettingsStore(Settings()), store=store, max_retries=0
        )
        try:
            async with httpx.AsyncClient() as http:
                slot = runtime.add_slot(PagelessStage(http))
                # no key: Ask answers from the simulator the sessions run on
                assert runtime.llm_endpoint().base_url == sim.base_url + "/v1"
                assert await slot.controller.start(Settings().session.to_request())
                session_id = slot.queue.session_id
                answered = await slot.ask(QUESTION)
                done = await slot.answers.wait(answered.question_id)
                assert done.state is QS.ANSWERED and list(done.sentences) == SENTENCES
                assert slot.answers.history(session_id)[0]["content"] == QUESTION
                rows = store.answer_rows(done.question_id)
                assert [(r.text, r.route, r.session_id) for r in rows] == [
                    (s, TaskRoute.LLM, session_id) for s in SENTENCES
                ]
                # Stop from a door (the queue) ends the answer being written as well
                asked = await slot.ask("And why are sunsets red?")
                await poll(lambda: slot.answers.current and slot.answers.current.sentences)
                await slot.queue.stop()
                stopped = await slot.answers.wait(asked.question_id)
                assert stopped.state is QS.STOPPED
                await poll(lambda: llm_requests(sim)[-1]["outcome"] == "client_closed")
                # a key in the environment sends Ask to the configured service instead
                monkeypatch.setenv(secrets.LLM_ENV_VAR, "sk-from-env")
                endpoint = runtime.llm_endpoint()
                assert endpoint.base_url == DEFAULT_LLM_BASE_URL and not endpoint.keyless
        finally:
            await runtime.shutdown()

    run(scenario())


def test_with_the_cloud_and_no_key_ask_says_what_to_do(tmp_path: Path) -> None:
    from avaturn_desktop.core.backend import Backend
    from avaturn_desktop.core.settings import Settings
    from avaturn_desktop.services.runtime import Runtime
    from avaturn_desktop.services.settings_store import SettingsStore

    async def scenario() -> None:
        backend = Backend("cloud", "https://api.avaturn.live", "https://sdk", "avaturn-key")
        store = TaskLogStore(tmp_path / "log.sqlite3")
        runtime = Runtime.open(backend=backend, settings=SettingsStore(Settings()), store=store)
        try:
            async with httpx.AsyncClient() as http:
                slot = runtime.add_slot(PagelessStage(http))
                with pytest.raises(ConfigError, match="Settings → Ask"):
                    await slot.ask(QUESTION)
        finally:
            await runtime.shutdown()

    run(scenario())
