"""The runtime: the app's services, built once, owned by the composition root (Qt-free).

One :class:`Runtime` holds what the whole app shares: the backend, the pooled HTTP client and
the typed service client over it, the task log, the settings store, and the messages meant
for a person (:class:`Notices`). Each avatar is an :class:`AvatarSlot`: its own session
controller, speech queue and :class:`~avaturn_desktop.services.speech.Speaker` over a stage
(the page, reached through a protocol). A second avatar is one more slot, not a second app.

The doors (the window, the control API) only display the runtime and forward what people and
programs do; neither keeps state of its own about sessions or lines. Shutdown happens here,
in one order: sessions end, queues stop, the HTTP pool closes, the log closes.

Avatars side by side: the window gives the runtime a stage factory
(:meth:`Runtime.set_stage_factory`), so a slot can be made on demand, by the window's "Add
avatar" or by the control API addressing a slot that does not exist yet, within the quota the
user set (``Settings.slot_quota``); past it, :class:`SlotQuotaError`. Each slot has its own
session form (``Settings.slots``), its own registry entries (the task log says which slot ran a
session) and its own record of the phases of connecting (:class:`ConnectWatch`).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
from pydantic import ValidationError

from avaturn_desktop import __version__
from avaturn_desktop.core.backend import Backend
from avaturn_desktop.core.errors import AppError, ConfigError, NotFoundError
from avaturn_desktop.core.queue import ItemState, QueueItem
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.core.settings import SessionDefaults, Settings
from avaturn_desktop.core.tasks import SessionRecord
from avaturn_desktop.services import secrets
from avaturn_desktop.services.answers import (
    AnswerService,
    AnswerView,
    LlmEndpoint,
    SpeechQueueSink,
    resolve_endpoint,
)
from avaturn_desktop.services.attract import AttractMode
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.connect_phases import ConnectWatch
from avaturn_desktop.services.cues import CuePlayer
from avaturn_desktop.services.outputs import Outputs
from avaturn_desktop.services.session import SessionBusyError, SessionController, StagePort
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech import Speaker
from avaturn_desktop.services.speech_queue import SpeechQueue, SpeechStage
from avaturn_desktop.services.stage_watch import StageWatch
from avaturn_desktop.services.supervisor import BackoffPolicy, Supervisor
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.services.transport import BackgroundTlsTransport
from avaturn_desktop.services.voices import VoiceLibrary

if TYPE_CHECKING:
    from avaturn_desktop.services.metrics import AppMetrics

log = logging.getLogger("avaturn.runtime")


class Level(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


_LOG_LEVELS = {Level.INFO: logging.INFO, Level.WARNING: logging.WARNING, Level.ERROR: logging.ERROR}
#: How long a start asked for while the last session is being ended waits for that end.
END_WAIT_S = 30.0
NoticeListener = Callable[[Level, str], None]


class Poster:
    """``info``, ``warning`` and ``error`` over one ``post``."""

    def post(self, level: Level, text: str) -> None:
        raise NotImplementedError

    def info(self, text: str) -> None:
        self.post(Level.INFO, text)

    def warning(self, text: str) -> None:
        self.post(Level.WARNING, text)

    def error(self, text: str) -> None:
        self.post(Level.ERROR, text)


class Notices(Poster):
    """Messages meant for a person: logged, then shown by whoever listens (the window).

    What is posted before anyone listens is kept and handed to the first listener.
    """

    def __init__(self) -> None:
        self._listeners: list[NoticeListener] = []
        self._early: list[tuple[Level, str]] = []

    def post(self, level: Level, text: str) -> None:
        log.log(_LOG_LEVELS[level], "%s", text)
        if not self._listeners:
            self._early.append((level, text))
        for listener in list(self._listeners):
            try:
                listener(level, text)
            except Exception:
                log.exception("A notice listener failed")

    def subscribe(self, listener: NoticeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        early, self._early = self._early, []
        for level, text in early:
            listener(level, text)
        return lambda: self._listeners.remove(listener)


class NoSuchSlotError(AppError):
    """An avatar slot was asked for by a number the app does not have."""


class SlotQuotaError(AppError):
    """A slot past the number of avatars the user allows side by side was asked for."""


class SlotStage(StagePort, SpeechStage, Protocol):
    """An avatar page as a slot drives it (``ui.web.stage.Stage`` implements it)."""


@runtime_checkable
class AttractStage(Protocol):
    """A stage that shows the kiosk's attract screen (``services/attract.py``)."""

    async def attract(self, show: bool, text: str = "", image: str | None = None) -> None: ...


@runtime_checkable
class ReloadableStage(Protocol):
    """A stage whose page can be loaded again (the supervisor's recovery of a page that hung,
    crashed or shows nothing)."""

    async def reload(self) -> None: ...


#: Makes the stage of a new slot (its index given); the window provides it.
StageFactory = Callable[[int], SlotStage]
SlotListener = Callable[["AvatarSlot"], None]


class _SlotRegistry:
    """The session registry as one slot writes to it: every session recorded with the slot."""

    def __init__(self, store: TaskLogStore, index: int) -> None:
        self._store = store
        self._index = index

    def record_session(self, record: SessionRecord) -> None:
        self._store.record_session(record.model_copy(update={"slot": self._index}))

    def end_session(self, session_id: str, reason: str, *, at: float | None = None) -> None:
        self._store.end_session(session_id, reason, at=at)


class CurrentClient:
    """The service client in force, as the slots use it: switching the backend (a key entered
    in Settings) swaps what it forwards to, with no slot rebuilt."""

    def __init__(self, client: AvaturnClient) -> None:
        self.target = client

    async def create_session(self, request: Any = None) -> Any:
        return await self.target.create_session(request)

    async def terminate_session(self, session_id: str) -> None:
        await self.target.terminate_session(session_id)

    async def add_task(self, session_id: str, text: str) -> Any:
        return await self.target.add_task(session_id, text)

    async def cancel_all(self, token: str) -> Any:
        return await self.target.cancel_all(token)

    async def get_sdk_session(self, token: str) -> Any:
        return await self.target.get_sdk_session(token)


class AvatarSlot:
    """One avatar: its stage, session, queue and speaker; its cue player (the script) and
    its outputs (the audience output, the stage's look, captions)."""

    def __init__(self, index: int, runtime: Runtime, stage: SlotStage) -> None:
        settings = runtime.settings.value
        self.index = index
        self.stage = stage
        self._runtime = runtime
        self.controller = SessionController(
            runtime.current_client,
            stage,
            api_host=runtime.backend.api_base,
            sdk_url=runtime.backend.sdk_url,
            registry=_SlotRegistry(runtime.store, index),
            init_timeout_s=settings.init_timeout_s,
            keep_alive=settings.keep_alive,
        )
        self.queue = SpeechQueue(
            runtime.current_client,
            runtime.store,
            self.controller,
            stage=stage,
            policy=settings.offline_policy,
            # unattended: a dead session's unfinished lines are said again by themselves;
            # with a person there, the window offers it as one click
            carry_over=runtime.kiosk,
        )
        self.speaker = Speaker(self.queue, runtime.settings)
        self.cues = CuePlayer(
            self.speaker,
            rate=lambda: runtime.store.speaking_rate(
                self.queue.voice_id or runtime.settings.value.session.voice_id
            ),
            notify=lambda level, text: runtime.notices.post(Level(level), text),
        )
        self.outputs = Outputs(self.queue, runtime.settings)
        #: Ask mode: a language model's answers, queued sentence by sentence as they stream;
        #: Stop from any door ends the answer being written too.
        self.answers = AnswerService(
            SpeechQueueSink(self.queue),
            endpoint=runtime.llm_endpoint,
            settings=lambda: runtime.settings.value.llm,
            question_log=runtime.store,
            max_chars=lambda: runtime.settings.value.max_chunk_chars,
            session=lambda: self.queue.session_id,
        )
        self._unfollow_stops = self.answers.follow_queue_stops(self.queue)
        #: Kiosk mode: restarts a session after every ending (see ``services/supervisor.py``);
        #: made with the slot, started by :meth:`supervise` once leftovers are ended.
        self.supervisor: Supervisor | None = self._make_supervisor() if runtime.kiosk else None
        #: The stage page's heartbeats and what its watchdog finds (shown; in kiosk mode the
        #: supervisor recovers from it).
        self.watch = StageWatch(
            runtime.notices,
            self.controller,
            lambda: self.supervisor,
            heartbeat_timeout_s=lambda: runtime.settings.value.kiosk.heartbeat_timeout_s,
        )
        #: Kiosk mode: the attract screen and the opening hours (made by :meth:`supervise`).
        self.attract: AttractMode | None = None
        #: The phases of connecting of this slot's sessions (and the slow-connect warning).
        self.connect = ConnectWatch(
            index,
            recorder=runtime.store,
            notices=runtime.notices,
            threshold_s=lambda: runtime.settings.value.slow_connect_s,
            label=lambda: self.label,
        )
        self.controller.subscribe(self.connect.on_snapshot)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: A start asked for while the last session was being ended (see start_session).
        self._start_after_end: asyncio.Task[bool] | None = None

    def _make_supervisor(self) -> Supervisor:
        kiosk = self._runtime.settings.value.kiosk
        stage = self.stage
        return Supervisor(
            self.controller,
            lambda: self.start_request().to_request(),
            policy=BackoffPolicy(
                heartbeat_timeout_s=kiosk.heartbeat_timeout_s if kiosk.watchdog else None
            ),
            recover_page=stage.reload if isinstance(stage, ReloadableStage) else None,
        )

    @property
    def label(self) -> str:
        """How people call this slot: "Avatar 1", "Avatar 2", ..."""
        return f"Avatar {self.index + 1}"

    def defaults(self) -> SessionDefaults:
        """This slot's session form as last used (the first slot's when it has none)."""
        return self._runtime.settings.value.slot_session(self.index)

    def handle_page_event(self, event: object) -> None:
        """Every event from this slot's page: the lifecycle ones and the speech ones."""
        if self.supervisor is not None:
            self.supervisor.handle_page_event(event)
        self.watch.handle_page_event(event)
        self.controller.handle_page_event(event)
        self.queue.handle_page_event(event)
        self.connect.handle_page_event(event)

    def page_crashed(self, detail: str) -> None:
        """The page's process died (the view says so, before the page's bridge resets)."""
        self.watch.page_crashed(detail)

    def supervise(self) -> Supervisor:
        """Keep a session live from now on: start one, and another after every ending; with
        the attract screen after idle minutes and none outside the opening hours."""
        if self.supervisor is None:
            self.supervisor = self._make_supervisor()
        stage = self.stage
        if self.attract is None and isinstance(stage, AttractStage):

            async def display(screen: tuple[str, str | None] | None) -> None:
                if screen is None:
                    await stage.attract(False)
                else:
                    await stage.attract(True, screen[0], screen[1])

            self.attract = AttractMode(
                session=self.controller,
                supervisor=self.supervisor,
                queue=self.queue,
                display=display,
                settings=lambda: self._runtime.settings.value.kiosk,
                notices=self._runtime.notices,
            )
            self.attract.start()  # first: closed now, no session is started
        self.supervisor.start()
        return self.supervisor

    def wake(self, source: str) -> None:
        """A person touched the stage or pressed a key: the attract screen makes way."""
        if self.attract is not None:
            self.attract.trigger(source)

    def apply_settings(self, settings: Settings) -> None:
        self.controller.keep_alive = settings.keep_alive
        self.controller.init_timeout_s = settings.init_timeout_s
        self.queue.policy = settings.offline_policy

    # -- commands, shared by every door ---------------------------------------------------

    def session_request(self, overrides: dict[str, Any] | None = None) -> SessionDefaults:
        """The session form's fields: the slot's saved ones with ``overrides``, checked."""
        base = self.defaults()
        if not overrides:
            return base
        try:
            return SessionDefaults.model_validate({**base.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigError(_validation_sentence(exc)) from None

    def start_session(self, defaults: SessionDefaults | None = None) -> asyncio.Task[bool]:
        """Start a session now (the start runs on; the task says whether it went live).

        While the last session is still being ended (the service ended it, or someone did,
        and its end call is on its way), the start waits for that end, then starts: a
        presenter or a Stream Deck pressing Start right after a session died is not told
        "busy" for a second of cleaning up. One such start at a time; otherwise, and while a
        session is being made or is live, :class:`SessionBusyError`.
        """
        state = self.controller.state
        waits = state is SessionState.TERMINATING and self._start_after_end is None
        if state.busy and not waits:
            raise SessionBusyError(
                f"A session is already {state.value}; end it before starting another."
            )
        request = self.start_request(defaults).to_request()
        if not waits:
            return self._spawn(self._start(request))
        task = self._spawn(self._start_once_ended(request))
        self._start_after_end = task
        task.add_done_callback(self._waiting_start_done)
        return task

    def _waiting_start_done(self, task: asyncio.Task[bool]) -> None:
        if self._start_after_end is task:  # not a later one that waits in its turn
            self._start_after_end = None

    async def _start_once_ended(self, request: Any) -> bool:
        ended = asyncio.Event()

        def on_snapshot(snap: SessionSnapshot) -> None:
            if not snap.state.busy:
                ended.set()

        unsubscribe = self.controller.subscribe(on_snapshot)
        try:
            if self.controller.state.busy:
                async with asyncio.timeout(END_WAIT_S):
                    await ended.wait()
        except TimeoutError:
            self._runtime.notices.warning(
                "The last session is still being ended, so no new one was started; "
                "try again in a moment."
            )
            return False
        finally:
            unsubscribe()
        self._start_after_end = None  # from here a start like any other (an End cancels it)
        return await self._start(request)

    def start_request(self, defaults: SessionDefaults | None = None) -> SessionDefaults:
        """What a session is started with: ``defaults`` (else the saved form), on a
        transparent background when the stage paints one of its own (``core/look.py``)."""
        defaults = defaults or self.defaults()
        if self.outputs.background.needs_alpha:
            # the stage paints the background: the avatar must come without its own
            defaults = defaults.model_copy(update={"background": "transparent"})
        return defaults

    def remember(self, defaults: SessionDefaults) -> None:
        """Keep ``defaults`` as this slot's session form (slot 0's is ``Settings.session``).

        Raises ``OSError`` when the settings could not be written (they hold all the same)."""
        settings = self._runtime.settings
        if self.index == 0:
            settings.update(session=defaults)
        else:
            settings.update(slots=settings.value.with_slot(self.index, session=defaults))

    async def _start(self, request: Any) -> bool:
        try:
            return await self.controller.start(request)
        except AppError as exc:
            self._runtime.notices.warning(exc.user_message)
            return False

    async def ask(self, text: str) -> AnswerView:
        """Ask the language model ``text`` in this slot's conversation (its live session's);
        returns once the question is taken, the answer's sentences queue as they stream.
        A newer question ends the answer before it. :class:`ConfigError` for an empty
        question, or no key where one is needed."""
        return await self.answers.ask(text)

    def end_session(self) -> asyncio.Task[None]:
        """End the live session, or cancel one being made (or a start that waits for the
        last session's end: the later word wins)."""
        if self._start_after_end is not None:
            self._start_after_end.cancel()
        if not self.controller.state.busy:
            raise SessionBusyError("No session is running, so there is none to end.")
        return self._spawn(self.controller.terminate())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- reading --------------------------------------------------------------------------

    def speaking_item(self) -> QueueItem | None:
        return next((i for i in self.queue.items if i.state is ItemState.SPEAKING), None)

    def state(self, now: float | None = None) -> dict[str, Any]:
        """This slot's part of ``GET /api/v1/state`` (see ``control-api.md``)."""
        now = time.time() if now is None else now
        snap = self.controller.snapshot
        elapsed = snap.elapsed(now)
        left = snap.time_left(now)
        items = self.queue.items
        speaking = self.speaking_item()
        connect = self.connect.current
        return {
            "slot": self.index,
            "session": {
                "state": snap.state.value,
                "id": snap.session_id,
                "reason": snap.reason,
                "detail": snap.detail,
                "elapsed_s": None if elapsed is None else round(elapsed, 1),
                "time_left_s": None if left is None else round(left, 1),
            },
            "speaking": speaking is not None,
            "current_text": None if speaking is None else speaking.text,
            "voice_id": self.queue.voice_id or snap.voice_id or self.defaults().voice_id,
            "connect": None if connect is None else connect.as_json(),
            "queue": {
                "waiting": sum(1 for i in items if i.state is ItemState.WAITING),
                "on_service": sum(
                    1
                    for i in items
                    if i.state in (ItemState.SENDING, ItemState.SENT, ItemState.SPEAKING)
                ),
                "paused": self.queue.paused,
                # waiting lines a Stop set aside, and lines a dead session did not finish
                # (``POST /api/v1/queue/unfinished`` says them again)
                "set_aside": sum(1 for i in items if i.set_aside),
                "unfinished": self.queue.unfinished(),
            },
            "cues": self.cues.state(),
            "output": {
                "audience": self.outputs.audience.open,
                "captions": self.outputs.captions.on,
            },
            "stage": self.watch.state(),
            **({"attract": self.attract.as_dict()} if self.attract is not None else {}),
            **(
                {"supervisor": self.supervisor.state.as_dict()}
                if self.supervisor is not None
                else {}
            ),
        }

    async def shutdown(self) -> None:
        """End the session (or a start under way), then stop the queue."""
        if self.attract is not None:
            await self.attract.stop()
        if self.supervisor is not None:
            await self.supervisor.stop()
        await self.watch.stop()
        await self.answers.shutdown()
        self._unfollow_stops()
        await self.controller.shutdown()
        await self.queue.shutdown()
        await self.cues.close()
        self.outputs.close()
        self.speaker.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Runtime:
    """See the module docs. Build it with :meth:`open`; end it with :meth:`shutdown`."""

    def __init__(
        self,
        *,
        backend: Backend,
        settings: SettingsStore,
        store: TaskLogStore,
        http: httpx.AsyncClient,
        kiosk: bool = False,
        max_retries: int = 3,
        data_dir: Path | None = None,
        on_close: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.backend = backend
        #: The data directory (the control token, control.json); None in bare tests.
        self.data_dir = data_dir
        self.settings = settings
        self.store = store
        self.http = http
        self.kiosk = kiosk
        self._max_retries = max_retries
        self.current_client = CurrentClient(
            AvaturnClient(
                http, api_key=backend.api_key, base_url=backend.api_base, max_retries=max_retries
            )
        )
        self.notices = Notices()
        self.slots: list[AvatarSlot] = []
        #: The voices an operator knows (see ``services/voices.py``).
        self.voices = VoiceLibrary.open(data_dir)
        self._stage_factory: StageFactory | None = None
        self._slot_listeners: list[SlotListener] = []
        self._backend_listeners: list[Callable[[Backend], None]] = []
        self._metrics: AppMetrics | None = None
        self.started_at = time.time()
        self._on_close = list(on_close)
        self._unsubscribe = settings.subscribe(self._settings_changed)

    @classmethod
    def open(
        cls,
        *,
        backend: Backend,
        settings: SettingsStore,
        store: TaskLogStore,
        kiosk: bool = False,
        http_hooks: dict[str, list[Callable[..., Any]]] | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        data_dir: Path | None = None,
        on_close: Sequence[Callable[[], object]] = (),
    ) -> Runtime:
        """The runtime with its own pooled HTTP client (closed by :meth:`shutdown`)."""
        if http_transport is None:
            # httpx's own transport, its TLS trust read on a thread when needed (``transport``)
            http_transport = BackgroundTlsTransport(
                read_trust_now=backend.api_base.startswith("https://"),
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            )
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0),
            event_hooks=http_hooks or {},
            transport=http_transport,
        )
        return cls(
            backend=backend,
            settings=settings,
            store=store,
            http=http,
            kiosk=kiosk,
            max_retries=max_retries,
            data_dir=data_dir,
            on_close=on_close,
        )

    @property
    def client(self) -> AvaturnClient:
        """The typed client of the backend in force."""
        return self.current_client.target

    def switch_backend(self, backend: Backend) -> None:
        """Make the next sessions on ``backend`` (e.g. the cloud, once a key was entered).

        Refused with :class:`SessionBusyError` while any slot has a session under way.
        """
        busy = [slot.index for slot in self.slots if slot.controller.state.busy]
        if busy:
            raise SessionBusyError("End the running session before switching the backend.")
        client = AvaturnClient(
            self.http,
            api_key=backend.api_key,
            base_url=backend.api_base,
            max_retries=self._max_retries,
        )
        for slot in self.slots:
            slot.controller.retarget(backend.api_base, backend.sdk_url)
        self.current_client.target = client
        self.backend = backend
        log.info("Backend switched to %r", backend)
        for listener in list(self._backend_listeners):
            listener(backend)

    def llm_endpoint(self) -> LlmEndpoint:
        """Where Ask goes now: the settings and the key (environment or keyring); with no
        key, the simulator the sessions run on (see :func:`resolve_endpoint`)."""
        key, _ = secrets.load_llm_api_key()
        simulator = None if self.backend.kind == "cloud" else self.backend.api_base
        return resolve_endpoint(self.settings.value.llm, key, simulator)

    def subscribe_backend(self, listener: Callable[[Backend], None]) -> Callable[[], None]:
        self._backend_listeners.append(listener)
        return lambda: self._backend_listeners.remove(listener)

    def add_slot(self, stage: SlotStage) -> AvatarSlot:
        slot = AvatarSlot(len(self.slots), self, stage)
        self.slots.append(slot)
        if self._metrics is not None:
            self._watch(self._metrics, slot)
        for listener in list(self._slot_listeners):
            try:
                listener(slot)
            except Exception:
                log.exception("A slot listener failed")
        return slot

    # -- avatars side by side -------------------------------------------------------------

    def set_stage_factory(self, factory: StageFactory | None) -> None:
        """How a new slot's stage is made (the window's views); None: no more slots."""
        self._stage_factory = factory

    def subscribe_slots(self, listener: SlotListener) -> Callable[[], None]:
        """Call ``listener`` with every slot added from now on."""
        self._slot_listeners.append(listener)
        return lambda: self._slot_listeners.remove(listener)

    @property
    def quota(self) -> int:
        """How many avatars may run side by side (the user's setting)."""
        return self.settings.value.slot_quota

    @property
    def can_add_slot(self) -> bool:
        return self._stage_factory is not None and len(self.slots) < self.quota

    def ensure_slot(self, index: int) -> AvatarSlot:
        """The slot at ``index``, made now (with the ones before it) when it does not exist.

        :class:`SlotQuotaError` past the quota; :class:`NoSuchSlotError` when this runtime
        cannot make slots (no window gave it a stage factory).
        """
        if 0 <= index < len(self.slots):
            return self.slots[index]
        if index < 0:
            return self.slot(index)
        if index >= self.quota:
            raise SlotQuotaError(
                f"Avatar slot {index} is past the limit of {self.quota} avatar(s) side by side "
                "(numbered from 0); raise it in Settings (Avatars side by side) or end one."
            )
        factory = self._stage_factory
        if factory is None:
            raise NoSuchSlotError(
                f"There is no avatar slot {index}, and this app cannot add one (it has no "
                "avatar view to give it)."
            )
        while len(self.slots) <= index:
            self.add_slot(factory(len(self.slots)))
        return self.slots[index]

    def add_next_slot(self) -> AvatarSlot:
        """One more avatar (the window's "Add avatar"), within the quota."""
        return self.ensure_slot(len(self.slots))

    def slot(self, index: int = 0) -> AvatarSlot:
        """The slot at ``index``; :class:`NoSuchSlotError` when there is none."""
        if not 0 <= index < len(self.slots):
            raise NoSuchSlotError(
                f"There is no avatar slot {index}; this app has {len(self.slots)} "
                f"(numbered from 0)."
            )
        return self.slots[index]

    def metrics(self) -> AppMetrics:
        """The Prometheus metrics of this app (made on first use: only ``/metrics`` reads
        them), fed by every slot's session, log rows and supervisor."""
        if self._metrics is None:
            from avaturn_desktop.services.metrics import AppMetrics

            metrics = AppMetrics()
            for slot in self.slots:
                self._watch(metrics, slot)
            self._metrics = metrics
        return self._metrics

    def _watch(self, metrics: AppMetrics, slot: AvatarSlot) -> None:
        metrics.watch_session(slot.controller)
        metrics.watch_rows(slot.queue, self.store)
        # the supervisor's series have no slot label: the first slot's (a second collector of
        # the same names would be refused by the registry)
        if slot.supervisor is not None and slot.index == 0:
            metrics.watch_supervisor(slot.supervisor)
        if slot.index == 0:  # the same: the stage's series are the first slot's
            metrics.watch_stage(slot.watch)

    def _settings_changed(self, new: Settings, _old: Settings) -> None:
        for slot in self.slots:
            slot.apply_settings(new)

    def state(self, slot: int = 0) -> dict[str, Any]:
        """``GET /api/v1/state``: the app, then the slot's session, speech and queue."""
        return {
            "app": {
                "version": __version__,
                "pid": os.getpid(),
                "backend": self.backend.kind,
                "kiosk": self.kiosk,
                "slots": len(self.slots),
                "slot_quota": self.quota,
            },
            **self.slot(slot).state(),
        }

    # -- leftovers of an earlier run ------------------------------------------------------

    async def end_orphans(self, confirm: Callable[[list[SessionRecord]], Awaitable[bool]]) -> int:
        """End sessions an earlier run left open (they burn quota otherwise).

        Call this only while holding the data directory's instance lock: then no live app
        owns them. ``confirm`` is asked first (the window asks a person; headless and kiosk
        runs say yes). Returns how many were ended.
        """
        orphans = self.store.open_sessions()
        if not orphans:
            return 0
        if not await confirm(orphans):
            self.notices.info(
                f"{len(orphans)} session(s) from an earlier run left as they are; they end "
                "by themselves when nobody watches."
            )
            return 0
        ended = 0
        for record in orphans:
            if record.backend != self.backend.api_base:
                reason = "ended with the backend that ran it"
                if self.backend.kind != "simulator" and record.backend.startswith("https://"):
                    self.notices.warning(
                        f"Session {record.session_id} ran on {record.backend}, not on this "
                        "backend; it could not be ended from here."
                    )
                    continue
            else:
                try:
                    await self.client.terminate_session(record.session_id)
                    reason = "ended at the next start (orphan)"
                except NotFoundError:
                    reason = "already over at the next start"
                except AppError as exc:
                    self.notices.warning(
                        f"Could not end session {record.session_id}: {exc.user_message}"
                    )
                    continue
            self.store.end_session(record.session_id, reason)
            ended += 1
        self.notices.info(f"Ended {ended} session(s) left over from an earlier run.")
        return ended

    # -- the end --------------------------------------------------------------------------

    async def stop(self) -> None:
        """End every slot's session and stop its queue (the pages are still there)."""
        await asyncio.gather(*(slot.shutdown() for slot in self.slots))

    async def close(self) -> None:
        """Close the HTTP pool and the task log, then what the runtime was given to close."""
        self._unsubscribe()
        if self._metrics is not None:
            self._metrics.close()
        await self.http.aclose()
        self.store.close()
        for close in reversed(self._on_close):
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("Closing a part of the runtime failed")

    async def shutdown(self) -> None:
        """:meth:`stop`, then :meth:`close` (for a runtime without a window)."""
        try:
            await self.stop()
        finally:
            await self.close()


def _validation_sentence(exc: ValidationError) -> str:
    """The first problem of a pydantic error, as a sentence (no input values echoed)."""
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "__root__")
    message = str(first.get("msg", "is not valid"))
    return f"{where}: {message}." if where else f"{message}."


__all__ = [
    "AvatarSlot",
    "Level",
    "Notices",
    "Runtime",
    "SlotQuotaError",
    "SlotStage",
    "StageFactory",
]
