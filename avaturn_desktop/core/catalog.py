"""Presets: the avatars and ElevenLabs voices the panels offer and the simulator knows.

The real service validates voices against ElevenLabs; these are well-known premade voices.
"""

from __future__ import annotations

from typing import NamedTuple


class Preset(NamedTuple):
    id: str
    name: str


AVATARS: tuple[Preset, ...] = (
    Preset("jane_20240829", "Jane"),
    Preset("ann_20240901", "Ann"),
    Preset("max_20241010", "Max"),
    Preset("leo_20250115", "Leo"),
)

#: Avatars the simulator treats as retired (410), so the error path can be exercised.
RETIRED_AVATARS: tuple[str, ...] = ("bob_20230101",)

VOICES: tuple[Preset, ...] = (
    Preset("21m00Tcm4TlvDq8ikWAM", "Rachel"),
    Preset("EXAVITQu4vr4xnSDxMaL", "Sarah"),
    Preset("ErXwobaYiN019PkySvjV", "Antoni"),
    Preset("TxGEqnHWrfWFTfGW9XjX", "Josh"),
    Preset("pNInz6obpgDQGcFmaJgB", "Adam"),
    Preset("XB0fDUnXU5powFXDhCwa", "Charlotte"),
)

#: The voice a session speaks with when it is created without a conversation engine.
DEFAULT_VOICE_ID = VOICES[0].id
