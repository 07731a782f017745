"""The simulated service's sessions: speech queues, viewers, timeouts and the event channel.

Everything here runs on the server's event loop; nothing is thread-safe by itself (the
``SimulatorServer`` hops onto the loop for ``snapshot`` and ``set_faults``).

Event channel, per session (the **[sim]** choices the real service leaves undocumented):

* A phrase starts only while at least one viewer is connected. The first phrase after a
  silence sends ``avatar_started_speaking``; every phrase sends
  ``avatar_started_speaking_phrase`` then, ``len(text) / chars_per_second`` seconds later,
  ``avatar_ended_speaking_phrase``. When a phrase ends and the queue is empty (or no viewer is
  left to hear the next one) ``avatar_ended_speaking`` follows. So a queue of two gives:
  started_speaking, started_phrase(a), ended_phrase(a), started_phrase(b), ended_phrase(b),
  ended_speaking.
* Just before each ``avatar_started_speaking_phrase`` the channel carries a simulator-only
  ``{"type": "sim_caption", "phrase_id": ..., "text": ...}`` that the simulated SDK uses for
  its caption and does not dispatch. Other consumers should ignore types they do not know.
* ``cancel_all_speech_tasks`` cuts the current phrase at once: it still sends
  ``avatar_ended_speaking_phrase`` (same ``phrase_id``), then ``avatar_ended_speaking``.
  Queued tasks that never started send nothing.
* A voice change drops the queued tasks (nothing sent for them); the current phrase finishes.
* A viewer leaving mid-phrase does not cut it; the next phrase waits for a viewer.
* When the session ends every viewer gets ``{"type": "error", "code": ..., "message": ...,
  "reason": ...}`` and its socket is closed with ``CLOSE_CODES[reason]``; the phrase in
  progress is cut without further speech events.
* The avatar's media under fault injection (``FaultConfig.video_fault`` / ``audio_fault``)
  travels as a simulator-only ``{"type": "sim_media", "video": "none"|"freeze"|"black",
  "audio": "none"|"mute"}``: to every viewer of a live session when it changes, and to a
  viewer that joins while it is not the default (so a new session starts as faulty as the
  last). The simulated SDK plays its stream accordingly and does not dispatch it.
* An ended session stays in ``snapshot()`` (and answers 404 to its id and token) for
  ``ended_ttl_s``, at most ``max_ended`` of them, newest kept; then it is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from avaturn_desktop.core.catalog import DEFAULT_VOICE_ID, RETIRED_AVATARS
from avaturn_desktop.core.models import SessionCreate

log = logging.getLogger("avaturn.simulator")

EndReason = Literal["terminated", "user_absent_timeout", "max_duration", "killed"]

#: WebSocket close codes of the event channel.
CLOSE_CODES: dict[str, int] = {
    "terminated": 4000,
    "user_absent_timeout": 4001,
    "max_duration": 4002,
    "killed": 4003,
    "dropped": 4100,  # fault injection: the session lives on, the viewer may reconnect
}

_ERROR_CODES: dict[str, str] = {
    "terminated": "session_terminated",
    "user_absent_timeout": "user_absent_timeout",
    "max_duration": "limits_exceeded",
    "killed": "internal_error",
}

_END_MESSAGES: dict[str, str] = {
    "terminated": "The session was terminated",
    "user_absent_timeout": "The session ended: no viewer was connected",
    "max_duration": "The session reached its maximum duration",
    "killed": "The session was killed",
}

TaskStatus = Literal["queued", "speaking", "spoken", "cancelled", "cut", "dropped"]


@dataclass
class SpeechTask:
    task_id: str
    phrase_id: str
    text: str
    source: Literal["api", "sdk"]
    queued_at: float
    voice_id: str | None = None
    status: TaskStatus = "queued"
    started_at: float | None = None
    ended_at: float | None = None
    #: Every viewer left while it was being said: nobody heard its end, though the service
    #: said it to its end (``heard`` in the view is False then).
    unheard: bool = False

    def view(self, origin: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - origin, 4)

        return {
            "task_id": self.task_id,
            "phrase_id": self.phrase_id,
            "text": self.text,
            "source": self.source,
            "voice_id": self.voice_id,
            "status": self.status,
            "queued_at": rel(self.queued_at),
            "started_at": rel(self.started_at),
            "ended_at": rel(self.ended_at),
            # said to its end with a viewer connected all along (what an audience heard)
            "heard": self.status == "spoken" and not self.unheard,
        }


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


@dataclass(eq=False)
class Viewer:
    """One connected event channel; the socket handler pumps ``outbox`` into the socket."""

    outbox: asyncio.Queue[dict[str, Any] | _Close] = field(default_factory=asyncio.Queue)
    closing: bool = False

    def send(self, payload: dict[str, Any]) -> None:
        if not self.closing:
            self.outbox.put_nowait(payload)

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait(_Close(code, reason))


class SimSession:
    def __init__(
        self,
        engine: Engine,
        params: SessionCreate,
        voice_id: str | None,
    ) -> None:
        self.engine = engine
        self.id = str(uuid.uuid4())
        self.token = secrets.token_urlsafe(32)
        self.params = params
        self.voice_id = voice_id
        loop = asyncio.get_running_loop()
        self.created_at = loop.time()
        self.ended_at: float | None = None
        self.end_reason: EndReason | None = None
        self.end_message: str | None = None
        self.stream_started = False
        self.queue: deque[SpeechTask] = deque()
        self.current: SpeechTask | None = None
        self.tasks: list[SpeechTask] = []
        self.viewers: set[Viewer] = set()
        self.viewers_seen = 0
        self.speaking = False
        self.absent_since: float | None = self.created_at
        scale = engine.time_scale
        self.absent_limit_s = params.user_absent_timeout / scale
        self.deadline = self.created_at + params.max_duration / scale
        self._wake_speaker = asyncio.Event()
        self._wake_watchdog = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._runners = [
            loop.create_task(self._speak_loop(), name=f"sim-speaker-{self.id}"),
            loop.create_task(self._watchdog(), name=f"sim-watchdog-{self.id}"),
        ]

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    # -- commands --------------------------------------------------------------------------

    def add_task(self, text: str, source: Literal["api", "sdk"]) -> SpeechTask:
        task_id = str(uuid.uuid4())
        phrase_id = task_id if self.engine.phrase_ids == "task" else f"ph-{uuid.uuid4().hex}"
        task = SpeechTask(task_id, phrase_id, text, source, self._now())
        self.queue.append(task)
        self.tasks.append(task)
        self._wake_speaker.set()
        log.info("session %s: task %s queued (%d chars)", self.id, task_id, len(text))
        return task

    def cancel_all(self) -> int:
        cancelled = self._drop_queue("cancelled")
        if self.current is not None:
            cancelled += 1
            self._interrupt.set()
        log.info("session %s: %d task(s) cancelled", self.id, cancelled)
        return cancelled

    def change_voice(self, voice_id: str) -> int:
        self.voice_id = voice_id
        dropped = self._drop_queue("cancelled")
        log.info(
            "session %s: voice changed to %s, %d queued task(s) cancelled",
            self.id,
            voice_id,
            dropped,
        )
        return dropped

    def add_viewer(self) -> Viewer:
        viewer = Viewer()
        self.viewers.add(viewer)
        self.viewers_seen += 1
        self.absent_since = None
        media = self.engine.media_message()
        if media is not None:
            viewer.send(media)
        self._poke()
        log.info("session %s: viewer joined (%d connected)", self.id, len(self.viewers))
        return viewer

    def remove_viewer(self, viewer: Viewer) -> None:
        if viewer not in self.viewers:
            return
        self.viewers.discard(viewer)
        if not self.viewers and self.current is not None:
            self.current.unheard = True
        if not self.viewers and not self.ended:
            self.absent_since = self._now()
        self._poke()
        log.info("session %s: viewer left (%d connected)", self.id, len(self.viewers))

    def drop_viewers(self) -> int:
        viewers = list(self.viewers)
        for viewer in viewers:
            viewer.close(CLOSE_CODES["dropped"], "dropped")
        return len(viewers)

    def end(self, reason: EndReason, message: str | None = None) -> None:
        if self.ended:
            return
        self.end_reason = reason
        self.ended_at = self._now()
        self.end_message = message or _END_MESSAGES[reason]
        self._drop_queue("dropped")
        if self.current is not None:
            self.current.status = "cut"
            self.current.ended_at = self.ended_at
            self.current = None
        payload = {
            "type": "error",
            "code": _ERROR_CODES[reason],
            "message": self.end_message,
            "reason": reason,
        }
        for viewer in list(self.viewers):
            viewer.send(payload)
            viewer.close(CLOSE_CODES[reason], reason)
        me = asyncio.current_task()
        for runner in self._runners:
            if runner is not me:
                runner.cancel()
        self.engine.session_ended(self)
        log.info("session %s ended: %s", self.id, reason)

    async def aclose(self) -> None:
        """Stop the session's background work (server shutdown); no events are sent."""
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)

    # -- the session's life ----------------------------------------------------------------

    async def _speak_loop(self) -> None:
        cps = self.engine.chars_per_second
        while not self.ended:
            if not (self.viewers and self.queue):
                self._wake_speaker.clear()
                await self._wake_speaker.wait()
                continue
            task = self.queue.popleft()
            self.current = task
            task.status = "speaking"
            task.voice_id = self.voice_id
            task.started_at = self._now()
            self._interrupt.clear()
            if not self.speaking:
                self.speaking = True
                self._broadcast({"type": "avatar_started_speaking"})
            self._broadcast({"type": "sim_caption", "phrase_id": task.phrase_id, "text": task.text})
            self._broadcast({"type": "avatar_started_speaking_phrase", "phrase_id": task.phrase_id})
            interrupted = True
            try:
                async with asyncio.timeout(len(task.text) / cps):
                    await self._interrupt.wait()
            except TimeoutError:
                interrupted = False
            task.ended_at = self._now()
            task.status = "cancelled" if interrupted else "spoken"
            self.current = None
            self._broadcast({"type": "avatar_ended_speaking_phrase", "phrase_id": task.phrase_id})
            if not self.queue or not self.viewers:
                self.speaking = False
                self._broadcast({"type": "avatar_ended_speaking"})

    async def _watchdog(self) -> None:
        while not self.ended:
            now = self._now()
            when: float = self.deadline
            reason: EndReason = "max_duration"
            if self.absent_since is not None:
                absent_end = self.absent_since + self.absent_limit_s
                if absent_end < when:
                    when, reason = absent_end, "user_absent_timeout"
            if when <= now:
                self.end(reason)
                return
            self._wake_watchdog.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(when - now):
                    await self._wake_watchdog.wait()

    # -- helpers ---------------------------------------------------------------------------

    def _drop_queue(self, status: TaskStatus) -> int:
        count = len(self.queue)
        now = self._now()
        for task in self.queue:
            task.status = status
            task.ended_at = now
        self.queue.clear()
        return count

    def _broadcast(self, payload: dict[str, Any]) -> None:
        for viewer in self.viewers:
            viewer.send(payload)

    def _poke(self) -> None:
        self._wake_speaker.set()
        self._wake_watchdog.set()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def view(self) -> dict[str, Any]:
        now = self._now()
        origin = self.created_at
        return {
            "session_id": self.id,
            "avatar_id": self.params.avatar_id,
            "voice_id": self.voice_id,
            "background": self.params.background,
            "model": self.params.model,
            "user_absent_timeout": self.params.user_absent_timeout,
            "max_duration": self.params.max_duration,
            "state": "ended" if self.ended else ("active" if self.viewers else "waiting"),
            "end_reason": self.end_reason,
            "end_message": self.end_message,
            "age_s": round((self.ended_at or now) - origin, 4),
            "viewers": len(self.viewers),
            "viewers_seen": self.viewers_seen,
            "stream_started": self.stream_started,
            "speaking": self.speaking,
            "current": self.current.view(origin) if self.current else None,
            "queue": [task.view(origin) for task in self.queue],
            "spoken": [
                task.view(origin)
                for task in self.tasks
                if task.status in ("spoken", "cancelled", "cut")
            ],
            "tasks": [task.view(origin) for task in self.tasks],
        }


class UnknownVoice(ValueError):
    pass


class AvatarGone(ValueError):
    pass


class Engine:
    """All sessions of one simulator."""

    def __init__(
        self,
        *,
        voices: set[str],
        avatars: set[str],
        chars_per_second: float,
        time_scale: float,
        phrase_ids: Literal["task", "own"],
        ended_ttl_s: float = 300.0,
        max_ended: int = 1000,
    ) -> None:
        self.voices = voices
        self.avatars = avatars
        self.chars_per_second = chars_per_second
        self.time_scale = time_scale
        self.phrase_ids = phrase_ids
        self.ended_ttl_s = ended_ttl_s
        self.max_ended = max_ended
        self.sessions: dict[str, SimSession] = {}
        self._by_token: dict[str, SimSession] = {}
        #: The avatar's media under fault injection (``FaultConfig.video_fault``/``audio_fault``).
        self.video_fault = "none"
        self.audio_fault = "none"
        #: Ended sessions still shown (for ``ended_ttl_s``, at most ``max_ended`` of them),
        #: oldest first, each with the timer that forgets it.
        self._ended: dict[str, asyncio.TimerHandle] = {}

    def create_session(self, params: SessionCreate) -> SimSession:
        if params.avatar_id in RETIRED_AVATARS:
            raise AvatarGone(f"Avatar {params.avatar_id!r} has been retired")
        if params.avatar_id not in self.avatars:
            raise AvatarGone(f"Avatar {params.avatar_id!r} does not exist")
        engine = params.conversation_engine
        voice_id: str | None
        if engine is None:
            voice_id = DEFAULT_VOICE_ID
        else:
            voice_id = params.voice_id
            if engine.type == "text-echo" and voice_id not in self.voices:
                raise UnknownVoice(f"Unknown voice id {voice_id!r}")
        session = SimSession(self, params, voice_id)
        self.sessions[session.id] = session
        self._by_token[session.token] = session
        log.info("session %s created (avatar %s)", session.id, params.avatar_id)
        return session

    def live_session(self, session_id: str) -> SimSession | None:
        session = self.sessions.get(session_id)
        return None if session is None or session.ended else session

    def live_session_by_token(self, token: str | None) -> SimSession | None:
        session = self._by_token.get(token) if token else None
        return None if session is None or session.ended else session

    def check_voice(self, voice_id: str) -> None:
        if voice_id not in self.voices:
            raise UnknownVoice(f"Unknown voice id {voice_id!r}")

    def drop_event_channels(self) -> int:
        return sum(session.drop_viewers() for session in self.sessions.values())

    def set_media(self, video: str, audio: str) -> int:
        """Set the media faults; tells every viewer of a live session when they changed.
        Returns how many viewers were told."""
        if (video, audio) == (self.video_fault, self.audio_fault):
            return 0
        self.video_fault, self.audio_fault = video, audio
        message = {"type": "sim_media", "video": video, "audio": audio}
        told = 0
        for session in self.sessions.values():
            if session.ended:
                continue
            for viewer in session.viewers:
                viewer.send(message)
                told += 1
        return told

    def media_message(self) -> dict[str, Any] | None:
        """What a joining viewer is told about the media faults (None: nothing is wrong)."""
        if self.video_fault == "none" and self.audio_fault == "none":
            return None
        return {"type": "sim_media", "video": self.video_fault, "audio": self.audio_fault}

    def session_ended(self, session: SimSession) -> None:
        """Keep an ended session on show for a while, then free it (memory stays bounded)."""
        if session.id in self._ended or session.id not in self.sessions:
            return
        loop = asyncio.get_running_loop()
        self._ended[session.id] = loop.call_later(self.ended_ttl_s, self._forget, session.id)
        while len(self._ended) > self.max_ended:
            self._forget(next(iter(self._ended)))

    def _forget(self, session_id: str) -> None:
        timer = self._ended.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._by_token.pop(session.token, None)
            log.debug("session %s forgotten", session_id)

    async def aclose(self) -> None:
        for timer in self._ended.values():
            timer.cancel()
        await asyncio.gather(*(s.aclose() for s in self.sessions.values()))

    def snapshot(self) -> dict[str, Any]:
        sessions = [session.view() for session in self.sessions.values()]
        return {
            "sessions": sessions,
            "viewers": sum(s["viewers"] for s in sessions),
            "voices": sorted(self.voices),
            "chars_per_second": self.chars_per_second,
            "time_scale": self.time_scale,
            "phrase_ids": self.phrase_ids,
            "media": {"video": self.video_fault, "audio": self.audio_fault},
        }
