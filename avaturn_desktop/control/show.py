"""The show's calls of the control API: cues and outputs (Qt-free).

Each call is one function over an avatar slot, shared by the HTTP route and the WebSocket
operation of the same name (``api.py`` wires both), so the two cannot drift apart. They raise
:class:`~avaturn_desktop.core.errors.AppError`; the door turns that into a status.

- ``GET /api/v1/cues`` (op ``cues``): the cue list, the standby cue, the clock, the time left.
- ``POST /api/v1/cues/load`` ``{"text"}`` or ``{"path"}`` (``cues.load``): load a script.
- ``POST /api/v1/cues/go`` ``{"now": false}`` (``cues.go``): speak the standby cue.
- ``POST /api/v1/cues/back``, ``/cues/skip`` (``cues.back``, ``cues.skip``): move standby.
- ``POST /api/v1/cues/standby`` ``{"index"}`` (``cues.standby``): cue ``index`` stands by.
- ``PUT /api/v1/cues/{index}`` ``{"text"}`` (``cues.edit``): edit a cue in place.
- ``POST /api/v1/cues/save`` ``{"path"}``, ``/cues/reload`` (``cues.save``, ``cues.reload``).
- ``GET /api/v1/output`` (``output``): the audience output, the captions, the background.
- ``POST /api/v1/output/audience`` ``{"open", "screen", "fullscreen"}`` (``output.audience``).
- ``POST /api/v1/output/captions`` ``{"on", "size_pct", "position", "colour", "background"}``
  (``output.captions``).
- ``POST /api/v1/output/background`` ``{"kind", "colour", "image"}`` (``output.background``).

A script loaded by ``path`` must be a ``.txt`` or ``.md`` file of UTF-8 text of at most 2 MB
(``core/script.py``): the API reads no other kind of file.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avaturn_desktop.core.errors import ConfigError
from avaturn_desktop.core.look import BackgroundKind, CaptionPosition
from avaturn_desktop.core.script import MAX_SCRIPT_BYTES
from avaturn_desktop.services.cues import CuePlayer
from avaturn_desktop.services.runtime import AvatarSlot
from avaturn_desktop.services.speech import Batch


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoadBody(_Body):
    text: Annotated[str | None, Field(max_length=MAX_SCRIPT_BYTES)] = None
    path: Annotated[str | None, Field(min_length=1, max_length=4096)] = None
    #: For ``text``: read it as Markdown (a ``path`` says so by its suffix).
    markdown: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> LoadBody:
        if (self.text is None) == (self.path is None):
            raise ValueError("give either 'text' (the script) or 'path' (a .txt or .md file)")
        return self


class GoBody(_Body):
    now: bool = False


class StandbyBody(_Body):
    index: Annotated[int, Field(ge=0, le=1_000_000)]


class EditBody(_Body):
    text: Annotated[str, Field(max_length=100_000)]


class SaveBody(_Body):
    path: Annotated[str | None, Field(min_length=1, max_length=4096)] = None


class AudienceBody(_Body):
    open: bool | None = None
    screen: Annotated[int | None, Field(ge=0, le=63)] = None
    fullscreen: bool | None = None


class CaptionsBody(_Body):
    on: bool | None = None
    size_pct: float | None = None
    position: CaptionPosition | None = None
    colour: Annotated[str | None, Field(max_length=9)] = None
    background: Annotated[str | None, Field(max_length=9)] = None


class BackgroundBody(_Body):
    kind: BackgroundKind | None = None
    colour: Annotated[str | None, Field(max_length=9)] = None
    image: Annotated[str | None, Field(min_length=1, max_length=4096)] = None


def cues_json(player: CuePlayer, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    elapsed = player.elapsed_s(now)
    return {
        **player.state(),
        "path": None if player.path is None else str(player.path),
        "dirty": player.dirty,
        "elapsed_s": None if elapsed is None else round(elapsed, 1),
        "time_left_s": round(player.time_left_s(now), 1),
        "chars_per_s": round(player.chars_per_s, 2),
        "measured": player.measured,
        "cues": [
            {
                "index": cue.index,
                "section": cue.section,
                "text": cue.text,
                "notes": list(cue.notes),
                "estimate_s": round(cue.estimate_s, 1),
                "state": cue.state.value,
                "items": list(cue.item_ids),
            }
            for cue in player.cues()
        ],
    }


def _fired(slot: AvatarSlot, index: int, batch: Batch) -> dict[str, Any]:
    return {
        "cue": index,
        "items": [{"id": i.item_id, "text": i.text} for i in batch.items],
        "cues": slot.cues.state(),
    }


async def list_cues(slot: AvatarSlot, _body: None) -> dict[str, Any]:
    return cues_json(slot.cues)


async def load(slot: AvatarSlot, body: LoadBody) -> dict[str, Any]:
    if body.path is not None:
        slot.cues.load_path(body.path)
    else:
        assert body.text is not None
        slot.cues.load_text(body.text, markdown=body.markdown)
    return cues_json(slot.cues)


async def go(slot: AvatarSlot, body: GoBody | None) -> dict[str, Any]:
    index = slot.cues.standby
    batch = await slot.cues.go_now() if body is not None and body.now else slot.cues.go()
    assert index is not None
    return _fired(slot, index, batch)


async def back(slot: AvatarSlot, _body: None) -> dict[str, Any]:
    slot.cues.back()
    return {"cues": slot.cues.state()}


async def skip(slot: AvatarSlot, _body: None) -> dict[str, Any]:
    slot.cues.skip()
    return {"cues": slot.cues.state()}


async def standby(slot: AvatarSlot, body: StandbyBody) -> dict[str, Any]:
    slot.cues.set_standby(body.index)
    return {"cues": slot.cues.state()}


async def edit(slot: AvatarSlot, index: int, body: EditBody) -> dict[str, Any]:
    slot.cues.edit(index, body.text)
    return cues_json(slot.cues)


async def save(slot: AvatarSlot, body: SaveBody | None) -> dict[str, Any]:
    path = slot.cues.save(body.path if body is not None else None)
    return {"path": str(path)}


async def reload(slot: AvatarSlot, _body: None) -> dict[str, Any]:
    slot.cues.reload()
    return cues_json(slot.cues)


async def output(slot: AvatarSlot, _body: None) -> dict[str, Any]:
    return slot.outputs.state()


async def audience(slot: AvatarSlot, body: AudienceBody | None) -> dict[str, Any]:
    fields = body.model_dump() if body is not None else {}
    if not any(value is not None for value in fields.values()):
        fields["open"] = True
    slot.outputs.set_audience(**fields)
    return slot.outputs.state()


async def captions(slot: AvatarSlot, body: CaptionsBody | None) -> dict[str, Any]:
    fields = body.model_dump(exclude_none=True) if body is not None else {}
    if not fields:
        fields = {"on": True}
    slot.outputs.set_captions(**fields)
    return slot.outputs.state()


async def background(slot: AvatarSlot, body: BackgroundBody) -> dict[str, Any]:
    fields = body.model_dump(exclude_none=True)
    if not fields:
        raise ConfigError("Say which background: 'kind' (default, transparent, colour, image).")
    slot.outputs.set_background(**fields)
    return slot.outputs.state()


Action = Callable[[AvatarSlot, Any], Awaitable[dict[str, Any]]]

#: WebSocket operations: name → (the body's model or None, the action).
OPS: dict[str, tuple[type[BaseModel] | None, Action]] = {
    "cues": (None, list_cues),
    "cues.load": (LoadBody, load),
    "cues.go": (GoBody, go),
    "cues.back": (None, back),
    "cues.skip": (None, skip),
    "cues.standby": (StandbyBody, standby),
    "cues.save": (SaveBody, save),
    "cues.reload": (None, reload),
    "output": (None, output),
    "output.audience": (AudienceBody, audience),
    "output.captions": (CaptionsBody, captions),
    "output.background": (BackgroundBody, background),
}


async def run_op(slot: AvatarSlot, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """A show operation by name (``cues.edit`` takes ``index`` among its args)."""
    if op == "cues.edit":
        index = args.pop("index", None)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigError("index: the cue's number (from 0) is needed.")
        return await edit(slot, index, EditBody.model_validate(args))
    model, action = OPS[op]
    body = None if model is None else model.model_validate(args)
    if model is None and args:
        raise ConfigError(f"{op} takes no arguments.")
    return await action(slot, body)


OP_NAMES: tuple[str, ...] = (*OPS, "cues.edit")

__all__ = ["OPS", "OP_NAMES", "cues_json", "run_op"]
