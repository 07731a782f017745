"""What an audience sees of one avatar slot: the audience output, the stage's look, and the
caption of the phrase being spoken (Qt-free).

The window door renders it (the audience window, the stage page's background and captions);
the control API changes it (``POST /api/v1/output/audience``, ``/output/captions``). Neither
keeps a copy: both read and change this object, and listen to it.

The caption is the text of the queue's item being spoken, from the moment the avatar starts
it until it ends (or is cut off). The queue matches the SDK's speaking events to its items
whether they come from the official Web SDK or the simulated one, so the captions do too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from avaturn_desktop.core.errors import AppError, ConfigError
from avaturn_desktop.core.look import CaptionStyle, StageBackground
from avaturn_desktop.core.queue import ItemState, QueueChange
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.settings_store import SettingsStore
from avaturn_desktop.services.speech_queue import SpeechQueue

log = logging.getLogger("avaturn.outputs")

#: What changed: ``"audience"``, ``"look"`` (background or caption style), ``"caption"``.
OutputListener = Callable[[str], None]


class NoWindowError(AppError):
    """The audience output was asked for in an app that has no window to show it."""


@dataclasses.dataclass(frozen=True)
class AudienceState:
    open: bool = False
    screen: int = 0
    fullscreen: bool = True


class Outputs:
    """See the module docs."""

    def __init__(self, queue: SpeechQueue, settings: SettingsStore) -> None:
        self._settings = settings
        value = settings.value
        self.audience = AudienceState(
            open=False, screen=value.audience_screen, fullscreen=value.audience_fullscreen
        )
        #: The screens the window door can put the audience output on (names, in order);
        #: empty until a window door says which there are.
        self.screens: tuple[str, ...] = ()
        self.has_window = False
        #: The phrase being spoken (None between phrases).
        self.caption: str | None = None
        self._caption_item: int | None = None
        self._listeners: list[OutputListener] = []
        self._unsubscribe = (
            queue.subscribe(self._on_queue),
            settings.subscribe(self._on_settings),
        )

    # -- reading ---------------------------------------------------------------------------

    @property
    def captions(self) -> CaptionStyle:
        return self._settings.value.captions

    @property
    def background(self) -> StageBackground:
        return self._settings.value.stage_background

    def state(self) -> dict[str, Any]:
        return {
            "audience": {**dataclasses.asdict(self.audience), "screens": list(self.screens)},
            "captions": self.captions.model_dump(),
            "background": self.background.model_dump(),
        }

    def subscribe(self, listener: OutputListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- the window door reports ------------------------------------------------------------

    def attach_window(self, screens: tuple[str, ...]) -> None:
        """A window door can show the audience output, on one of ``screens``."""
        self.has_window = True
        self.set_screens(screens)

    def set_screens(self, screens: tuple[str, ...]) -> None:
        self.screens = tuple(screens)
        self._notify("screens")

    # -- changing ---------------------------------------------------------------------------

    def set_audience(
        self,
        *,
        open: bool | None = None,
        screen: int | None = None,
        fullscreen: bool | None = None,
    ) -> AudienceState:
        """Open, close or move the audience output; the screen and full screen are kept for
        the next time."""
        if not self.has_window:
            raise NoWindowError("This app has no window to show an audience output in.")
        if screen is not None and (screen < 0 or (self.screens and screen >= len(self.screens))):
            names = ", ".join(f"{n}: {name}" for n, name in enumerate(self.screens))
            raise ConfigError(f"There is no screen {screen}; the screens are {names}.")
        current = self.audience
        new = AudienceState(
            open=current.open if open is None else open,
            screen=current.screen if screen is None else screen,
            fullscreen=current.fullscreen if fullscreen is None else fullscreen,
        )
        if new == current:
            return new
        self.audience = new
        if (new.screen, new.fullscreen) != (current.screen, current.fullscreen):
            self._save(audience_screen=new.screen, audience_fullscreen=new.fullscreen)
        self._notify("audience")
        return new

    def closed_by_window(self) -> None:
        """The audience window was closed by a person (not through :meth:`set_audience`)."""
        if self.audience.open:
            self.audience = dataclasses.replace(self.audience, open=False)
            self._notify("audience")

    def set_captions(self, **changes: Any) -> CaptionStyle:
        """Change the caption style (``on``, ``size_pct``, ``position``, ``colour``,
        ``background``); checked, saved and shown at once."""
        try:
            style = CaptionStyle.model_validate({**self.captions.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None
        if style != self.captions:
            self._save(captions=style)
        return style

    def set_background(self, **changes: Any) -> StageBackground:
        """Change what the stage paints behind the avatar (``kind``, ``colour``, ``image``)."""
        try:
            background = StageBackground.model_validate({**self.background.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None
        if background != self.background:
            self._save(stage_background=background)
        return background

    def _save(self, **changes: Any) -> None:
        try:
            self._settings.update(**changes)
        except OSError as exc:
            log.warning("The output settings could not be saved: %s", exc.strerror or exc)

    # -- listening --------------------------------------------------------------------------

    def _on_settings(self, new: Settings, old: Settings) -> None:
        if (new.captions, new.stage_background) != (old.captions, old.stage_background):
            self._notify("look")

    def _on_queue(self, change: QueueChange) -> None:
        item = change.item
        if item is None:
            return
        if item.state is ItemState.SPEAKING:
            if self._caption_item != item.item_id or self.caption != item.text:
                self._caption_item = item.item_id
                self.caption = item.text
                self._notify("caption")
        elif item.item_id == self._caption_item and item.state.finished:
            self._caption_item = None
            self.caption = None
            self._notify("caption")

    def _notify(self, what: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(what)
            except Exception:
                log.exception("An output listener failed")

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "is not valid"))
    return f"{where}: {message}." if where else f"{message}."


__all__ = ["AudienceState", "NoWindowError", "Outputs"]
