"""The voice bench's calls on the control API (Qt-free): latency figures, connect phases, the
voice library and the service's check of a voice, and the avatar slots.

Same rules as every call (``control-api.md``); each route only reads or calls the runtime.

* ``GET /api/v1/metrics/latency?slot=N&since=T``: per voice ``count``, ``sent``, ``p50_ms``,
  ``p95_ms``, ``mean_ms``, ``speaking_rate_cps`` and ``slots``, from the task log;
* ``GET /api/v1/metrics/connect``: per slot, the last sessions' phases of connecting;
* ``GET /api/v1/slots``: the quota, and each slot's state, voice and avatar;
* ``GET /api/v1/voices``: the voice library, each voice with its figures;
* ``POST /api/v1/voices`` ``{"voice_id", "name"?, ...}``: adds (or updates) a voice;
* ``POST /api/v1/voices/check`` ``{"voice_id", "avatar_id"?}``: asks the service whether it
  takes the voice (it creates a session and ends it at once; ``services/voices.py`` says what
  that costs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from avaturn_desktop.services.latency import figures, latency_json
from avaturn_desktop.services.runtime import Runtime
from avaturn_desktop.services.voices import VoiceEntry, check_voice

Doing = Callable[[Awaitable[Any] | Callable[[], Any]], Awaitable[Any]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VoiceAddBody(_Body):
    voice_id: Annotated[str, Field(min_length=1, max_length=200)]
    name: Annotated[str, Field(max_length=200)] | None = None
    language: Annotated[str, Field(max_length=50)] | None = None
    tags: Annotated[list[Annotated[str, Field(max_length=50)]], Field(max_length=50)] | None = None
    favourite: bool | None = None
    notes: Annotated[str, Field(max_length=10_000)] | None = None


class VoiceCheckBody(_Body):
    voice_id: Annotated[str, Field(min_length=1, max_length=200)]
    avatar_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


def voice_json(entry: VoiceEntry) -> dict[str, Any]:
    data = entry.model_dump(mode="json")
    data["tags"] = list(entry.tags)
    return data


def bench_router(runtime: Runtime, *, doing: Doing) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics/latency")
    async def latency(
        slot: Annotated[int | None, Query(ge=0, le=63)] = None,
        since: Annotated[float | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        return latency_json(runtime.store, slot=slot, since=since)

    @router.get("/metrics/connect")
    async def connect() -> dict[str, Any]:
        return {
            "slow_connect_s": runtime.settings.value.slow_connect_s,
            "slots": [
                {
                    "slot": slot.index,
                    "sessions": [phases.as_json() for phases in slot.connect.history],
                }
                for slot in runtime.slots
            ],
        }

    @router.get("/slots")
    async def slots() -> dict[str, Any]:
        return {
            "quota": runtime.quota,
            "slots": [
                {
                    "slot": slot.index,
                    "label": slot.label,
                    "state": slot.controller.state.value,
                    "session_id": slot.controller.session_id,
                    "voice_id": slot.queue.voice_id or slot.defaults().voice_id,
                    "avatar_id": slot.defaults().avatar_id,
                }
                for slot in runtime.slots
            ],
        }

    @router.get("/voices")
    async def voices() -> dict[str, Any]:
        per_voice = figures(runtime.store.timings())
        out = []
        for entry in runtime.voices.entries():
            data = voice_json(entry)
            found = per_voice.get(entry.voice_id)
            data["figures"] = None if found is None else found.as_json()
            out.append(data)
        return {"voices": out}

    @router.post("/voices")
    async def add_voice(body: VoiceAddBody) -> dict[str, Any]:
        fields = body.model_dump(exclude_none=True, exclude={"voice_id"})
        entry = await doing(lambda: runtime.voices.add(body.voice_id, **fields))
        return {"voice": voice_json(entry)}

    @router.post("/voices/check")
    async def check(body: VoiceCheckBody) -> dict[str, Any]:
        avatar = body.avatar_id or runtime.settings.value.session.avatar_id
        verdict = await doing(
            check_voice(
                runtime.current_client,
                body.voice_id,
                avatar_id=avatar,
                backend=runtime.backend.api_base,
                registry=runtime.store,
            )
        )
        runtime.voices.record_check(body.voice_id.strip(), verdict)
        return {
            "voice_id": body.voice_id.strip(),
            "accepted": verdict.accepted,
            "verdict": verdict.label,
            "reason": verdict.reason,
        }

    return router
