"""Where sessions are made: the Avaturn cloud with the user's key, or a simulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BackendKind = Literal["cloud", "simulator", "external"]


@dataclass(frozen=True)
class Backend:
    """The service the app talks to, the SDK the page loads, and the key for both calls."""

    kind: BackendKind
    api_base: str
    sdk_url: str
    api_key: str

    @property
    def label(self) -> str:
        if self.kind == "cloud":
            return "Backend: Avaturn cloud"
        if self.kind == "simulator":
            return "Backend: local simulator (no API key; nothing leaves this machine)"
        return f"Backend: {self.api_base}"

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"Backend(kind={self.kind!r}, api_base={self.api_base!r})"

    __str__ = __repr__
