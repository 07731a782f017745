"""How the stage looks to an audience: its background and the app's captions (Qt-free values).

The stage page paints them itself (``resources/web/look.js``), in the console and in the
audience output alike, so an OBS window capture or a projector gets exactly what the console
shows.

Backgrounds
    ``default``: the stage's own dark background, the avatar's video as the service sends it.
    ``transparent``: nothing is painted: the window has an alpha channel (OBS window capture
    with transparency). ``colour``: one colour, e.g. chroma green ``#00b140`` or chroma blue
    ``#0047bb`` for a keyer. ``image``: a picture file, scaled to cover the stage.
    Any background but ``default`` asks the service for the avatar on a transparent background
    (``background: "transparent"`` at session start), so the avatar stands on what the stage
    paints instead of inside a rectangle of its own.

Captions
    The phrase the avatar is saying, drawn by the app from the speech events (so they work with
    the official Web SDK and the simulated one alike), on or off, with a size (a share of the
    stage's height), a position and colours.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CHROMA_GREEN: Final = "#00b140"
CHROMA_BLUE: Final = "#0047bb"
_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
#: The largest background image sent to the page (it travels as a data: URL).
MAX_IMAGE_BYTES: Final = 8_000_000
IMAGE_TYPES: Final = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}

BackgroundKind = Literal["default", "transparent", "colour", "image"]
CaptionPosition = Literal["bottom", "top"]


def check_colour(value: str) -> str:
    """``#rrggbb`` or ``#rrggbbaa`` (lower case), else ``ValueError`` with a readable reason."""
    value = value.strip()
    if not _COLOUR.match(value):
        raise ValueError("a colour is written #rrggbb or #rrggbbaa, e.g. #00b140")
    return value.lower()


class _Look(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StageBackground(_Look):
    kind: BackgroundKind = "default"
    #: The colour painted for ``colour``.
    colour: str = CHROMA_GREEN
    #: The picture for ``image`` (a file path).
    image: str | None = None

    @field_validator("colour")
    @classmethod
    def _colour(cls, value: str) -> str:
        return check_colour(value)

    @model_validator(mode="after")
    def _image_given(self) -> StageBackground:
        if self.kind == "image" and not (self.image or "").strip():
            raise ValueError("choose an image for the background")
        return self

    @property
    def needs_alpha(self) -> bool:
        """The avatar must come on a transparent background for this one to show."""
        return self.kind != "default"

    def label(self) -> str:
        if self.kind == "colour":
            names = {CHROMA_GREEN: "chroma green", CHROMA_BLUE: "chroma blue"}
            return names.get(self.colour, f"colour {self.colour}")
        if self.kind == "image":
            return "image"
        return self.kind


class CaptionStyle(_Look):
    on: bool = False
    #: The text's height as a percentage of the stage's height.
    size_pct: Annotated[float, Field(ge=2, le=15)] = 4.5
    position: CaptionPosition = "bottom"
    colour: str = "#ffffff"
    #: The box behind the text (with alpha: ``#000000b3`` is black at 70 %).
    background: str = "#000000b3"

    @field_validator("colour", "background")
    @classmethod
    def _colours(cls, value: str) -> str:
        return check_colour(value)


__all__ = [
    "CHROMA_BLUE",
    "CHROMA_GREEN",
    "CaptionStyle",
    "StageBackground",
    "check_colour",
]
