"""A dock's panel built when it is first needed, not at start.

Docks hidden behind another's tab (the voice library, A/B) cost memory and start-up time
for a panel most runs never show. Their docks still exist from the first frame (the saved
layout is restored over every dock by name), holding a placeholder at the panel's size; the
window builds the panel the first time its dock becomes visible (a tab raised, the View
menu, a restored layout that shows it), or code that needs it asks for it (:meth:`get`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from PySide6.QtWidgets import QWidget

W = TypeVar("W", bound=QWidget)


class LazyPanel(Generic[W]):
    """A panel made by ``build`` on the first :meth:`get`; ``on_built`` listeners (the dock
    that shows it, the wiring to other panels) hear of it once, as it is made."""

    def __init__(self, build: Callable[[], W]) -> None:
        self._build: Callable[[], W] | None = build
        self._panel: W | None = None
        self._listeners: list[Callable[[W], None]] = []

    @property
    def built(self) -> W | None:
        """The panel if it was made, else None (nothing is built)."""
        return self._panel

    def get(self) -> W:
        """The panel, made now if it was not yet."""
        if self._panel is None:
            assert self._build is not None
            build, self._build = self._build, None
            self._panel = panel = build()
            for listener in self._listeners:
                listener(panel)
        return self._panel

    def on_built(self, listener: Callable[[W], None]) -> None:
        """Call ``listener`` with the panel once it is made (at once if it is)."""
        if self._panel is not None:
            listener(self._panel)
        else:
            self._listeners.append(listener)
