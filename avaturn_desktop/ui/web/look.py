"""The stage's look on the page: the slot's outputs (background, caption style, the caption)
sent to the stage page as ``look`` / ``caption`` commands (``resources/web/look.js``).

Fire and forget: the page does not answer them (its messages to the app are rationed, and the
speech events need them), and captions are sent only while they are on. A page that loads
again (a reload, a crash) gets the look and the current caption again once it is ready.
"""

from __future__ import annotations

import base64
import itertools
import logging
from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor
from PySide6.QtWebEngineCore import QWebEnginePage

from avaturn_desktop.core.events import CaptionCommand, LookCommand
from avaturn_desktop.core.look import IMAGE_TYPES, MAX_IMAGE_BYTES, StageBackground
from avaturn_desktop.services.outputs import Outputs
from avaturn_desktop.ui.web.bridge import Bridge

log = logging.getLogger("avaturn.web")

#: Refs of look commands: far above the stage's own, so the two never meet.
_REFS = itertools.count(1_000_000_000)


class ImageError(ValueError):
    """The background image cannot be shown (its reason is a sentence)."""


def image_data_url(path: str | Path) -> str:
    """The picture at ``path`` as a base64 ``data:`` URL (the page reads no files)."""
    path = Path(path).expanduser()
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        kinds = ", ".join(sorted(IMAGE_TYPES))
        raise ImageError(f"{path.name} is not a picture the stage can show ({kinds}).")
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(
                f"{path.name} is {size // 1_000_000} MB; a background may be at most "
                f"{MAX_IMAGE_BYTES // 1_000_000} MB."
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"Could not read {path.name}: {exc.strerror or exc}.") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class StageLook(QObject):
    """Keeps one stage page looking as the slot's :class:`Outputs` say."""

    def __init__(
        self,
        bridge: Bridge,
        page: QWebEnginePage,
        outputs: Outputs,
        *,
        on_error: object = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._page = page
        self._outputs = outputs
        self._on_error = on_error
        self._audience = False
        self._image: tuple[str, float, str] | None = None  # path, mtime, data URL
        self._image_error: str | None = None
        self._sent_caption: str | None = None
        self._unsubscribe = outputs.subscribe(self._changed)
        bridge.ready_changed.connect(self._ready_changed)
        if bridge.ready:
            self.send_all()

    @property
    def audience(self) -> bool:
        return self._audience

    def set_audience(self, audience: bool) -> None:
        """The page is (or is no longer) what the audience sees."""
        if audience != self._audience:
            self._audience = audience
            self.send_look()

    def _ready_changed(self, ready: bool) -> None:
        if ready:
            self._sent_caption = None  # a new page shows none
            self.send_all()

    def _changed(self, what: str) -> None:
        if what == "look":
            self.send_look()
            self.send_caption()
        elif what == "caption" and self._outputs.captions.on:
            self.send_caption()

    def send_all(self) -> None:
        self.send_look()
        self.send_caption()

    def send_look(self) -> None:
        background = self._outputs.background
        captions = self._outputs.captions
        image = self._image_url(background)
        kind = background.kind if background.kind != "image" or image else "default"
        self._page.setBackgroundColor(
            QColor(Qt.GlobalColor.transparent) if kind == "transparent" else QColor("#15171c")
        )
        self._bridge.send(
            LookCommand(
                ref=next(_REFS),
                background=kind,
                background_colour=background.colour,
                background_image=image,
                captions=captions.on,
                caption_size_pct=float(captions.size_pct),
                caption_position=captions.position,
                caption_colour=captions.colour,
                caption_background=captions.background,
                audience=self._audience,
            )
        )

    def send_caption(self) -> None:
        text = self._outputs.caption if self._outputs.captions.on else None
        if text == self._sent_caption:
            return
        self._sent_caption = text
        self._bridge.send(CaptionCommand(ref=next(_REFS), text=text))

    def _image_url(self, background: StageBackground) -> str | None:
        if background.kind != "image" or not background.image:
            return None
        path = Path(background.image).expanduser()
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = -1.0
        if self._image is not None and self._image[:2] == (str(path), mtime):
            return self._image[2]
        try:
            url = image_data_url(path)
        except ImageError as exc:
            if self._image_error != str(exc):
                self._image_error = str(exc)
                log.warning("Background image: %s", exc)
                if callable(self._on_error):
                    self._on_error(f"The background image is not shown: {exc}")
            return None
        self._image_error = None
        self._image = (str(path), mtime, url)
        return url

    def close(self) -> None:
        self._unsubscribe()
