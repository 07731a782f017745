"""The audience output: the avatar in a window of its own, on a chosen screen, full screen,
with no window chrome and no cursor; the console shows a live mirror of it.

Why the stage moves instead of being shown twice: the avatar is one WebRTC session in one
page (the Web SDK joins its room once; a second page would be a second participant, with the
audio twice and a second stream to pay for). So the one stage view is moved into the audience
window while it is open, and the console's stage area shows a mirror of it instead: a
thumbnail of the audience window grabbed a few times a second (a grab costs 1 to 5 ms at
1080p, measured in ``bench/cues.py``), so the presenter still sees at a glance what the
audience sees. Closing the output moves the view back.

The window paints nothing of its own: with a transparent stage background it has an alpha
channel (OBS window capture with transparency; a compositor is needed on X11).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QColor, QGuiApplication, QKeyEvent, QPainter, QPixmap
from PySide6.QtWidgets import QStackedWidget, QVBoxLayout, QWidget

from avaturn_desktop.services.outputs import AudienceState, Outputs
from avaturn_desktop.ui.web.look import StageLook

log = logging.getLogger("avaturn.ui")

#: How often the console's mirror is refreshed while the audience output is open.
MIRROR_INTERVAL_MS = 200


class AudienceWindow(QWidget):
    """A frameless, cursorless top-level window holding the stage view."""

    closed = Signal()

    def __init__(self, *, translucent: bool) -> None:
        super().__init__(None, Qt.WindowType.Window | Qt.WindowType.FramelessWindowHint)
        self.setObjectName("audience_window")
        self.setWindowTitle("Avaturn Desktop — audience")
        self.setCursor(Qt.CursorShape.BlankCursor)
        self.translucent = translucent
        if translucent:
            self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground, True)
        else:
            self.setAutoFillBackground(True)
            palette = self.palette()
            palette.setColor(self.backgroundRole(), QColor("black"))
            self.setPalette(palette)
        self.box = QVBoxLayout(self)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.box.setSpacing(0)
        self.locked: Callable[[], bool] = lambda: False

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Esc closes it, except in Show mode (a stray key must not take the avatar off screen).
        if event.key() == Qt.Key.Key_Escape and not self.locked():
            self.close()
            return
        super().keyPressEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closed.emit()
        super().closeEvent(event)


class StageMirror(QWidget):
    """In the console while the audience output is open: what the audience sees, scaled."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stage_mirror")
        self.pixmap: QPixmap | None = None
        self.caption = ""
        self.setMinimumSize(160, 90)

    def paintEvent(self, _event: object) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#0b0c0f"))
        if self.pixmap is not None and not self.pixmap.isNull():
            area = self.rect().adjusted(8, 8, -8, -28)
            scaled = self.pixmap.size().scaled(area.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(area.center())
            painter.drawPixmap(target, self.pixmap)
            painter.setPen(QColor("#e53935"))
            painter.drawRect(target.adjusted(0, 0, -1, -1))
        painter.setPen(QColor("#c9ccd4"))
        painter.drawText(
            self.rect().adjusted(8, 0, -8, -6),
            int(Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignHCenter),
            self.caption,
        )
        painter.end()


class StageHost(QStackedWidget):
    """The console's stage area: the stage view itself, or the mirror while it is away."""

    def __init__(self, view: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stage_host")
        self.view = view
        self.holder = QWidget()
        self.box = QVBoxLayout(self.holder)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.box.addWidget(view)
        self.mirror = StageMirror()
        self.addWidget(self.holder)
        self.addWidget(self.mirror)

    @property
    def away(self) -> bool:
        return self.currentWidget() is self.mirror

    def lend(self) -> QWidget:
        """The view, taken out of the console (the mirror shows instead)."""
        self.box.removeWidget(self.view)
        self.setCurrentWidget(self.mirror)
        return self.view

    def take_back(self) -> None:
        self.box.addWidget(self.view)
        self.view.show()
        self.setCurrentWidget(self.holder)


def screen_names() -> tuple[str, ...]:
    screens = QGuiApplication.screens()
    return tuple(
        f"{s.name() or 'screen'} {s.geometry().width()}×{s.geometry().height()}" for s in screens
    )


class AudienceOutput(QObject):
    """Renders the slot's ``outputs.audience``: opens, moves and closes the audience window."""

    def __init__(
        self,
        outputs: Outputs,
        host: StageHost,
        look: StageLook,
        *,
        locked: Callable[[], bool] = lambda: False,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._outputs = outputs
        self._host = host
        self._look = look
        self._locked = locked
        self.window: AudienceWindow | None = None
        self._shown: AudienceState | None = None
        self._mirror_timer = QTimer(self)
        self._mirror_timer.setInterval(MIRROR_INTERVAL_MS)
        self._mirror_timer.timeout.connect(self.update_mirror)
        app = QGuiApplication.instance()
        assert isinstance(app, QGuiApplication)
        app.screenAdded.connect(self._screens_changed)
        app.screenRemoved.connect(self._screens_changed)
        outputs.attach_window(screen_names())
        self._unsubscribe = outputs.subscribe(self._changed)

    @property
    def is_open(self) -> bool:
        return self.window is not None

    def _screens_changed(self, *_args: object) -> None:
        self._outputs.set_screens(screen_names())
        if self.window is not None:
            self._place(self.window, self._outputs.audience)

    def _changed(self, what: str) -> None:
        if what == "audience":
            self.render()
        elif what == "look" and self.window is not None:
            translucent = self._outputs.background.kind == "transparent"
            if translucent != self.window.translucent:
                self._close_window()  # the alpha channel is chosen when a window is made
                self.render()

    def render(self) -> None:
        state = self._outputs.audience
        if not state.open:
            self._close_window()
            return
        if self.window is None:
            self._open_window(state)
        elif state != self._shown:
            self._place(self.window, state)
        self._shown = state

    def _open_window(self, state: AudienceState) -> None:
        window = AudienceWindow(translucent=self._outputs.background.kind == "transparent")
        window.locked = self._locked
        window.box.addWidget(self._host.lend())
        window.closed.connect(self._closed_by_person)
        self.window = window
        self._look.set_audience(True)
        self._place(window, state)
        self._mirror_timer.start()
        log.info("Audience output open on screen %d", state.screen)

    def _place(self, window: AudienceWindow, state: AudienceState) -> None:
        screens = QGuiApplication.screens()
        screen = screens[state.screen] if state.screen < len(screens) else screens[0]
        window.setScreen(screen)
        geometry = screen.geometry()
        if state.fullscreen:
            window.setGeometry(geometry)
            window.showFullScreen()
        else:
            window.showNormal()
            width, height = min(1280, geometry.width()), min(720, geometry.height())
            window.setGeometry(
                geometry.x() + (geometry.width() - width) // 2,
                geometry.y() + (geometry.height() - height) // 2,
                width,
                height,
            )
            window.show()
        self._host.mirror.caption = (
            f"Audience output on screen {state.screen}: {screen.name() or 'screen'}"
            + (" (full screen)" if state.fullscreen else "")
        )
        self._shown = state

    def _closed_by_person(self) -> None:
        if self.window is not None:
            self._give_back()
            self._outputs.closed_by_window()

    def _close_window(self) -> None:
        if self.window is None:
            return
        window = self._give_back()
        window.closed.disconnect(self._closed_by_person)
        window.close()

    def _give_back(self) -> AudienceWindow:
        window = self.window
        assert window is not None
        self.window = None
        self._shown = None
        self._mirror_timer.stop()
        self._host.take_back()
        self._look.set_audience(False)
        window.deleteLater()
        log.info("Audience output closed")
        return window

    def update_mirror(self) -> None:
        """Grab what the audience sees into the console's mirror (only when the console is
        on screen)."""
        console = self._host.window()
        if self.window is None or not self._host.isVisible() or console.isMinimized():
            return
        view = self._host.view
        self._host.mirror.pixmap = view.grab()
        self._host.mirror.update()

    def close(self) -> None:
        self._unsubscribe()
        self._close_window()
        app = QGuiApplication.instance()
        if isinstance(app, QGuiApplication):
            app.screenAdded.disconnect(self._screens_changed)
            app.screenRemoved.disconnect(self._screens_changed)
