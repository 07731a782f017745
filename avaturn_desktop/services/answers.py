"""Ask mode: a language model answers, and the avatar speaks the answer while it is written.

A question goes to an OpenAI-compatible chat-completions endpoint (OpenAI's, a compatible
server's, or the simulator's ``/v1``) through the official ``openai`` client, streamed. The
answer is cut into sentences by :class:`~avaturn_desktop.core.chunker.SentenceChunker` as it
arrives, and each sentence goes to the sink (the speech queue, see :class:`SpeechQueueSink`)
the moment it is complete, so the avatar starts on the first sentence while the model is still
writing the rest.

Conversation
    Kept per avatar session (the history is keyed by session id): the system prompt, the last
    ``history_turns`` questions with what was said in answer (the sentences queued, not what
    the model may have written beyond a stop), and the new question. A question whose answer
    said nothing (it failed, or was stopped before its first sentence) is left out, so asking
    it again does not send it twice.

Latest wins
    A new question ends the answer before it: its stream is closed, so its remaining sentences
    are never queued (a guard makes sure of it even for text already on its way), and the
    sink's :meth:`AnswerSink.begin` is told which question it replaces, to withdraw that
    answer's lines (see :class:`SpeechQueueSink`). :meth:`AnswerService.stop` ends the answer
    and its stream; the caller stops the speech queue (one door, two calls).

Failures
    Each ends the answer ``failed`` with a reason a person can act on (:class:`AnswerView`):
    no key where one is needed (raised by :meth:`AnswerService.ask` itself, before anything is
    sent), a rejected key (401/403), a model that does not exist or a wrong base URL (404), a
    rate limit or an exhausted quota (429; one is waited out by the client when it says how
    long), a refused request (400), the service failing (5xx), no answer in time, a connection
    that cannot be made, and a stream that breaks midway. What was queued before a break stays
    queued (it is said); the reason says how many sentences were said and that the rest was
    not; the unfinished sentence is kept in ``unsaid``, never spoken half. No message carries
    the key (``services/llm.py`` words them). Every question and how it ended is in the task
    log (:class:`QuestionLog`), its lines are task rows with route ``llm`` and the question's
    id.

Why the ``openai`` client: a maintained SSE parser and streaming client that knows the error
shapes, ``Retry-After`` and the timeouts of the API it speaks, rather than a hand-written one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import httpx

from avaturn_desktop.core.chunker import DEFAULT_MAX_CHARS, SentenceChunker
from avaturn_desktop.core.errors import AppError, ConfigError
from avaturn_desktop.core.queue import (
    ON_SERVICE_STATES,
    ChangeKind,
    ItemState,
    QueueChange,
    QueueItem,
)
from avaturn_desktop.core.settings import LlmSettings
from avaturn_desktop.core.tasks import QuestionRecord, QuestionState, TaskRoute
from avaturn_desktop.services.llm import (
    AnswerBrokenError,
    LlmEndpoint,
    describe_error,
    resolve_endpoint,
)

if TYPE_CHECKING:
    # Imported when the first question is asked: the client takes about half a second to
    # import, which the app's start-up should not pay for a mode it may never use.
    import openai

__all__ = [
    "AnswerBrokenError",
    "AnswerService",
    "AnswerSink",
    "AnswerView",
    "LlmEndpoint",
    "QuestionLog",
    "SpeechQueueSink",
    "resolve_endpoint",
]

log = logging.getLogger("avaturn.answers")

#: Longest question accepted (a typed question, not a document).
MAX_QUESTION_CHARS: Final = 4000
REASON_REPLACED: Final = "replaced by a newer question"
REASON_STOPPED: Final = "stopped"
REASON_CLOSING: Final = "the app is closing"

# -- what the answers go to ---------------------------------------------------------------------


class AnswerSink(Protocol):
    """Where an answer's sentences go (the speech queue, through :class:`SpeechQueueSink`)."""

    async def begin(self, question_id: str, replaces: str | None) -> None:
        """A question was asked; ``replaces`` is the one before it, whose lines must go."""

    def queue_sentence(self, text: str, question_id: str) -> object:
        """Queue one complete sentence of ``question_id``'s answer, now.

        Raising :class:`AppError` (e.g. the queue refuses text with no live session) ends the
        answer as failed with that error's message.
        """


class QueueLike(Protocol):
    """What :class:`SpeechQueueSink` needs of ``services.speech_queue.SpeechQueue``."""

    @property
    def items(self) -> tuple[QueueItem, ...]: ...

    def subscribe(self, listener: Callable[[QueueChange], None]) -> Callable[[], None]: ...

    @property
    def paused(self) -> bool: ...

    def enqueue(
        self, texts: str, *, route: TaskRoute = ..., question_id: str | None = ...
    ) -> list[QueueItem]: ...

    def set_aside_waiting(self, *, but: Collection[int] = ()) -> int: ...

    def remove(self, item_id: int) -> bool: ...

    async def cut_off(self, reason: str) -> object: ...


class SpeechQueueSink:
    """The speech queue as an answer's sink.

    Each sentence is one queue item, logged with route ``llm`` and its question's id. When a
    question replaces another, the other answer's lines that wait are removed, and if some are
    on the service (sent, or being spoken) the avatar is cut off with the queue's Stop (the
    service only offers "cancel all"; those lines are logged "stopped"), then the queue sends
    again, unless it was paused before.

    A question asked after a Stop is a person's new words, as a line said after a Stop: its
    answer is said at once, and what waited is set aside (kept for Resume, as
    :meth:`~avaturn_desktop.services.speech.Speaker.say` does). No sentence of the answer a
    Stop cut off gets here: the Stop ends that answer as it pauses the queue.
    """

    def __init__(self, queue: QueueLike) -> None:
        self._queue = queue

    def queue_sentence(self, text: str, question_id: str) -> QueueItem:
        item = self._queue.enqueue(text, route=TaskRoute.LLM, question_id=question_id)[0]
        self._queue.set_aside_waiting(but={item.item_id})
        return item

    async def begin(self, question_id: str, replaces: str | None) -> None:
        if replaces is None:
            return
        queue = self._queue
        for item in queue.items:
            if item.question_id == replaces and item.state is ItemState.WAITING:
                queue.remove(item.item_id)
        on_service = any(
            item.question_id == replaces and item.state in ON_SERVICE_STATES for item in queue.items
        )
        if on_service:
            # not a Stop: the queue is not paused, and a Stop meanwhile is a person's
            await queue.cut_off(REASON_REPLACED)


class QuestionLog(Protocol):
    """Where questions are logged (``services.tasklog.TaskLogStore``)."""

    def add_question(
        self, question_id: str, *, session_id: str | None, text: str, at: float | None = None
    ) -> QuestionRecord: ...

    def end_question(
        self,
        question_id: str,
        state: QuestionState,
        reason: str | None = None,
        *,
        at: float | None = None,
    ) -> QuestionRecord: ...


# -- answers --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AnswerView:
    """One question and its answer as listeners see it (a snapshot)."""

    question_id: str
    session_id: str | None
    question: str
    state: QuestionState
    #: the sentences queued so far, in order
    sentences: tuple[str, ...]
    #: why it is not answered in full (stopped, replaced, failed, cut at the length limit)
    reason: str | None = None
    #: text that arrived but was not queued (an unfinished sentence), if any
    unsaid: str | None = None
    #: the error behind a failure (its ``user_message`` is the reason's start)
    error: AppError | None = None

    @property
    def finished(self) -> bool:
        return self.state is not QuestionState.ANSWERING


AnswerListener = Callable[[AnswerView], None]


@dataclasses.dataclass(eq=False)
class _Answer:
    question_id: str
    session_id: str | None
    question: str
    chunker: SentenceChunker
    state: QuestionState = QuestionState.ANSWERING
    sentences: list[str] = dataclasses.field(default_factory=list)
    reason: str | None = None
    unsaid: str | None = None
    error: AppError | None = None
    received: int = 0  # characters of answer text received
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def view(self) -> AnswerView:
        return AnswerView(
            question_id=self.question_id,
            session_id=self.session_id,
            question=self.question,
            state=self.state,
            sentences=tuple(self.sentences),
            reason=self.reason,
            unsaid=self.unsaid,
            error=self.error,
        )


class _SinkRefused(Exception):
    """The sink refused a sentence: the stream is abandoned (the answer already failed)."""


class AnswerService:
    """See the module docs. All methods run on the event loop's thread.

    ``endpoint`` is asked for at each question (it may raise :class:`ConfigError`, e.g. no
    key), ``settings`` too, so changed settings apply to the next question. ``session`` names
    the conversation a question joins when the caller does not (the live avatar session).
    ``max_retries`` is the ``openai`` client's: it retries a request that got no answer, a 429
    (waiting out its ``Retry-After``) or a 5xx, never a stream that already started.
    """

    def __init__(
        self,
        sink: AnswerSink,
        *,
        endpoint: Callable[[], LlmEndpoint],
        settings: Callable[[], LlmSettings],
        question_log: QuestionLog | None = None,
        max_chars: Callable[[], int] = lambda: DEFAULT_MAX_CHARS,
        session: Callable[[], str | None] = lambda: None,
        max_retries: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._session = session
        self._endpoint = endpoint
        self._settings = settings
        self._log = question_log
        self._max_chars = max_chars
        self._max_retries = max_retries
        self._clock = clock
        self._current: _Answer | None = None
        self._answers: dict[str, _Answer] = {}
        self._history: dict[str | None, list[dict[str, str]]] = {}
        self._listeners: list[AnswerListener] = []
        self._clients: dict[tuple[str, str, float], openai.AsyncOpenAI] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Questions inside ``sink.begin``: a queue stop then is the sink's own, making way.
        self._prepared = False

    # -- reading ----------------------------------------------------------------------------

    @property
    def current(self) -> AnswerView | None:
        """The latest question's answer (finished or not), if any."""
        return None if self._current is None else self._current.view()

    def answer(self, question_id: str) -> AnswerView | None:
        found = self._answers.get(question_id)
        return None if found is None else found.view()

    def history(self, session_id: str | None) -> list[dict[str, str]]:
        """The conversation of ``session_id`` so far (user and assistant turns, oldest first)."""
        return [dict(m) for m in self._history.get(session_id, [])]

    def forget(self, session_id: str | None) -> None:
        """Drop a session's conversation (the next question starts afresh)."""
        self._history.pop(session_id, None)

    def subscribe(self, listener: AnswerListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def prepare(self) -> None:
        """Import the model's client on a thread of its own (a door calls this when Ask is
        chosen), so the first question does not wait half a second for the import."""
        if self._prepared or "openai" in sys.modules:
            return
        self._prepared = True
        threading.Thread(
            target=importlib.import_module, args=("openai",), name="import-openai", daemon=True
        ).start()

    def follow_queue_stops(self, queue: QueueLike) -> Callable[[], None]:
        """Stop from any door ends the answer being written too (every Stop, the queue paused
        already or not), so Stop ends the stream and the speech together. A new question
        cuts the old answer off without a Stop. Returns the unsubscribe."""

        def changed(change: QueueChange) -> None:
            if change.kind is ChangeKind.STOPPED:
                self.stop()

        unsubscribe = queue.subscribe(changed)

        def unfollow() -> None:  # once, however often it is called
            with contextlib.suppress(ValueError):
                unsubscribe()

        return unfollow

    async def wait(self, question_id: str) -> AnswerView:
        """Wait until the answer to ``question_id`` has ended (answered, stopped, ...)."""
        answer = self._answers[question_id]
        await answer.done.wait()
        return answer.view()

    # -- asking -----------------------------------------------------------------------------

    async def ask(self, text: str, *, session_id: str | None = None) -> AnswerView:
        """Ask ``text`` in ``session_id``'s conversation (default: ``session()``'s); returns
        once the question is taken (its answer streams on). Ends the previous answer first
        (latest wins).

        Raises :class:`ConfigError` for an empty or too long question and when no key is set
        where one is needed; every later failure ends the answer (see :class:`AnswerView`).
        """
        question = " ".join(text.split())
        if not question:
            raise ConfigError("Nothing to ask: the question is empty.")
        if len(question) > MAX_QUESTION_CHARS:
            raise ConfigError(
                f"The question is {len(question)} characters long; Ask takes at most "
                f"{MAX_QUESTION_CHARS}."
            )
        endpoint = self._endpoint()
        settings = self._settings()
        if session_id is None:
            session_id = self._session()
        previous = self._current
        answer = _Answer(
            question_id=uuid.uuid4().hex[:16],
            session_id=session_id,
            question=question,
            chunker=SentenceChunker(self._max_chars()),
        )
        # From here on the previous answer can queue nothing (see _deliver).
        self._current = answer
        self._answers[answer.question_id] = answer
        self._trim_answers()
        if self._log is not None:
            self._log.add_question(
                answer.question_id, session_id=session_id, text=question, at=self._clock()
            )
        if previous is not None:
            self._end(previous, QuestionState.REPLACED, REASON_REPLACED)
        self._notify(answer)
        log.info("Question %s asked (%s, model %s)", answer.question_id, endpoint.host,
                 settings.model)  # fmt: skip
        await self._sink.begin(answer.question_id, previous.question_id if previous else None)
        if answer.state is QuestionState.ANSWERING:  # not replaced or stopped meanwhile
            messages = self._messages(settings, session_id, question)
            answer.task = self._spawn(self._run(answer, endpoint, settings, messages))
        return answer.view()

    def stop(self) -> AnswerView | None:
        """End the answer being written, and its stream; its later sentences are never queued.

        The caller stops the speech queue too (what was queued is the queue's to stop).
        Returns the stopped answer, or ``None`` if none was being written.
        """
        answer = self._current
        if answer is None or answer.state is not QuestionState.ANSWERING:
            return None
        self._end(answer, QuestionState.STOPPED, REASON_STOPPED)
        return answer.view()

    async def shutdown(self) -> None:
        """End every answer and close the HTTP clients."""
        if self._current is not None and self._current.state is QuestionState.ANSWERING:
            self._end(self._current, QuestionState.STOPPED, REASON_CLOSING)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # -- the stream -------------------------------------------------------------------------

    def _messages(
        self, settings: LlmSettings, session_id: str | None, question: str
    ) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = []
        if settings.system_prompt.strip():
            messages.append({"role": "system", "content": settings.system_prompt})
        turns = self._history.get(session_id, [])
        keep = 2 * settings.history_turns
        messages += turns[len(turns) - keep :] if keep else []
        messages.append({"role": "user", "content": question})
        return messages

    def _client(self, endpoint: LlmEndpoint, timeout_s: float) -> openai.AsyncOpenAI:
        """One pooled client per endpoint, key and timeout (connections are reused)."""
        import openai

        key = (endpoint.base_url, endpoint.api_key, timeout_s)
        client = self._clients.get(key)
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=endpoint.api_key,
                base_url=endpoint.base_url,
                timeout=timeout_s,
                max_retries=self._max_retries,
            )
            self._clients[key] = client
        return client

    async def _run(
        self,
        answer: _Answer,
        endpoint: LlmEndpoint,
        settings: LlmSettings,
        messages: list[dict[str, str]],
    ) -> None:
        import openai

        finish: str | None = None
        try:
            client = self._client(endpoint, settings.timeout_s)
            stream = await client.chat.completions.create(
                model=settings.model,
                messages=cast(Any, messages),  # plain dicts of role and content
                stream=True,
            )
            async with stream:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    piece = choice.delta.content if choice.delta is not None else None
                    if piece:
                        answer.received += len(piece)
                        sentences = answer.chunker.feed(piece)
                        for sentence in sentences:
                            self._deliver(answer, sentence)
                        if answer.state is not QuestionState.ANSWERING:
                            # ended during the handover (a Stop the sink set off): from inside
                            # this task no cancel comes, so leave now, closing the stream
                            return
                        if sentences:
                            # let the queue send it now, before more of the stream is read
                            await asyncio.sleep(0)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except asyncio.CancelledError:
            if answer.state is QuestionState.ANSWERING:  # cancelled from outside (shutdown)
                self._end(answer, QuestionState.STOPPED, REASON_CLOSING)
            raise
        except _SinkRefused:
            return
        except (openai.APIError, httpx.TransportError) as exc:
            if finish != "stop":  # a failure after the whole answer arrived changes nothing
                error = describe_error(
                    exc,
                    endpoint=endpoint,
                    model=settings.model,
                    timeout_s=settings.timeout_s,
                    started=answer.received > 0,
                )
                self._fail(answer, error)
                return
        except Exception as exc:
            log.exception("Question %s: the answer failed unexpectedly", answer.question_id)
            self._fail(answer, AppError(f"The answer failed: {type(exc).__name__}."))
            return
        if answer.state is not QuestionState.ANSWERING:
            return
        if finish is None:
            self._fail(
                answer,
                AnswerBrokenError(
                    f"The answer from {endpoint.host} broke off: the stream ended before the "
                    "answer did."
                ),
            )
        elif finish == "stop":
            for sentence in answer.chunker.flush():
                self._deliver(answer, sentence)
            self._end(answer, QuestionState.ANSWERED, None)
        else:
            why = {
                "length": "the model reached its length limit",
                "content_filter": "the model's content filter stopped it",
            }.get(finish, f"the model stopped ({finish})")
            self._end(
                answer,
                QuestionState.ANSWERED,
                f"The answer was cut short: {why}; its last, unfinished sentence was not said.",
            )

    def _deliver(self, answer: _Answer, sentence: str) -> None:
        """Hand one sentence to the sink, unless the answer has ended (stopped, replaced)."""
        if answer.state is not QuestionState.ANSWERING or self._current is not answer:
            return
        # Counted as said before it is handed over: a Stop set off by the handover itself ends
        # the answer with this sentence in its history (it is in the queue by then).
        answer.sentences.append(sentence)
        try:
            self._sink.queue_sentence(sentence, answer.question_id)
        except AppError as exc:
            answer.sentences.pop()
            self._fail(answer, exc)
            raise _SinkRefused from None
        if answer.state is QuestionState.ANSWERING:
            self._notify(answer)

    def _fail(self, answer: _Answer, error: AppError) -> None:
        said = len(answer.sentences)
        reason = error.user_message
        if said == 1:
            reason += " Its first sentence was said; the rest was not."
        elif said:
            reason += f" Its first {said} sentences were said; the rest was not."
        elif answer.received:
            reason += " Nothing of it was said."
        self._end(answer, QuestionState.FAILED, reason, error)

    def _end(
        self,
        answer: _Answer,
        state: QuestionState,
        reason: str | None,
        error: AppError | None = None,
    ) -> None:
        """End an answer once: close its stream, keep what was said, log and announce it."""
        if answer.state is not QuestionState.ANSWERING:
            return
        answer.state = state
        answer.reason = reason
        answer.error = error
        rest = " ".join(answer.chunker.flush())
        answer.unsaid = rest or None
        if answer.task is not None and answer.task is not asyncio.current_task():
            answer.task.cancel()
        if answer.sentences:
            turns = self._history.setdefault(answer.session_id, [])
            turns.append({"role": "user", "content": answer.question})
            turns.append({"role": "assistant", "content": " ".join(answer.sentences)})
            limit = 2 * max(self._settings().history_turns, 1)
            del turns[: max(0, len(turns) - limit)]
        if self._log is not None:
            try:
                self._log.end_question(answer.question_id, state, reason, at=self._clock())
            except Exception:
                log.exception("Could not log how question %s ended", answer.question_id)
        log.info("Question %s %s after %d sentence(s)%s", answer.question_id, state.value,
                 len(answer.sentences), f": {reason}" if reason else "")  # fmt: skip
        answer.done.set()
        self._notify(answer)

    # -- helpers ----------------------------------------------------------------------------

    def _trim_answers(self, keep: int = 200) -> None:
        for question_id in list(self._answers)[: max(0, len(self._answers) - keep)]:
            if self._answers[question_id].state is not QuestionState.ANSWERING:
                del self._answers[question_id]

    def _notify(self, answer: _Answer) -> None:
        view = answer.view()
        for listener in list(self._listeners):
            try:
                listener(view)
            except Exception:
                log.exception("An answer listener failed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
