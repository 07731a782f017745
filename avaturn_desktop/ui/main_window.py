"""The main window: the avatar stage in the middle, panels in docks around it.

It is built in two steps, so that it is on screen before the services are even imported:
``MainWindow()`` is the frame (title, menus, status bar, and every dock in its place and at
its size, holding a placeholder; the stage's place is dark), and :meth:`MainWindow.attach`
puts the stage and the panels in and wires them. This module imports Qt alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence, QWindow
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QWidget,
)

from avaturn_desktop import __version__
from avaturn_desktop.core.paths import resource
from avaturn_desktop.ui import window_state
from avaturn_desktop.ui.frames import opaque
from avaturn_desktop.ui.lazy import LazyPanel
from avaturn_desktop.ui.status_text import StatusText

if TYPE_CHECKING:
    from avaturn_desktop.core.session_state import SessionSnapshot
    from avaturn_desktop.ui.docks.session_panel import SessionPanel
    from avaturn_desktop.ui.messages import MessageBus
    from avaturn_desktop.ui.presenters import SessionPresenter

log = logging.getLogger("avaturn.ui")

APP_TITLE = "Avaturn Desktop"

_L, _R, _B = (
    Qt.DockWidgetArea.LeftDockWidgetArea,
    Qt.DockWidgetArea.RightDockWidgetArea,
    Qt.DockWidgetArea.BottomDockWidgetArea,
)
#: Every dock of the window, as the frame lays them out before their panels exist: name,
#: title, area, and the panel's size hint and minimum size hint (so the docks take at the
#: first paint the sizes they keep once filled; ``tests/ui/test_app_stages.py`` holds the
#: two equal).
DOCKS: tuple[tuple[str, str, Qt.DockWidgetArea, tuple[int, int], tuple[int, int]], ...] = (
    ("session", "Session", _L, (439, 330), (439, 330)),
    ("composer", "Composer", _B, (440, 258), (421, 187)),
    ("queue", "Speech queue", _R, (545, 258), (545, 136)),
    ("log", "Task log", _B, (595, 266), (595, 144)),
    ("cues", "Cue list", _B, (452, 322), (452, 200)),
    ("voices", "Voice library", _B, (618, 314), (618, 192)),
    ("ab", "A/B", _B, (652, 551), (620, 307)),
    ("metrics", "Metrics", _B, (544, 424), (544, 424)),
    ("audio", "Sound", _L, (415, 114), (415, 100)),
)
#: The stage's size hint and minimum size hint (``ui/audience.py``'s ``StageHost``).
STAGE_HINTS = ((640, 480), (160, 90))
#: Docks that share a place, as tabs: (the dock on top, the others).
TABS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("log", ("cues", "voices", "ab", "metrics")),
    ("session", ("audio",)),
)


class Placeholder(QWidget):
    """What a dock (or the stage) holds until its panel is built: empty, at the panel's size."""

    def __init__(
        self, hint: tuple[int, int], minimum: tuple[int, int], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("placeholder")
        self._hint, self._minimum = QSize(*hint), QSize(*minimum)

    def sizeHint(self) -> QSize:
        return self._hint

    def minimumSizeHint(self) -> QSize:
        return self._minimum


def app_icon() -> QIcon:
    return QIcon(str(resource("icons", "avaturn-desktop.svg")))


class ExposeWatch(QObject):
    """Calls ``on_exposed`` at the window's first expose event while it is exposed."""

    def __init__(self, on_exposed: Callable[[], None], handle: QWindow) -> None:
        super().__init__(handle)
        self._on_exposed = on_exposed
        self._handle = handle
        handle.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Expose and self._handle.isExposed():
            self._on_exposed()
        return False


class TerminateDialog:
    """Asks before ending a session the avatar is still using (tests replace ``ask``)."""

    @classmethod
    def ask(cls, parent: QWidget | None, busy: str) -> bool:
        answer = QMessageBox.question(
            parent,
            "End the session?",
            f"The avatar is {busy}. End the session now? (This question can be turned off "
            "in File → Settings.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes


class MainWindow(QMainWindow):
    """Owns docking and wiring; panels are plain widgets that never import services."""

    #: The user asked to quit (the composition root ends the session, then exits).
    closed = Signal()
    settings_requested = Signal()

    def __init__(self, *, backend_label: str = "Starting…") -> None:
        """The frame: everything but the stage and the panels (see the module's doc)."""
        super().__init__()
        self.setObjectName("main_window")
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.resize(1280, 800)
        self.attached = False
        #: Whether the window was closed (before :meth:`attach`, nobody listened yet).
        self.was_closed = False
        #: Whether Show mode is on (set by the show's parts): ending the session asks first.
        self.show_mode: Callable[[], bool] = lambda: False
        stage = Placeholder(*STAGE_HINTS)
        stage.setObjectName("stage.placeholder")
        stage.setStyleSheet("background: #20242a;")
        self.setCentralWidget(stage)
        self.docks: dict[str, QDockWidget] = {}
        for name, title, area, hint, minimum in DOCKS:
            self._add_dock(name, title, Placeholder(hint, minimum), area)
        for top, others in TABS:
            for other in others:
                self.tabifyDockWidget(self.docks[top], self.docks[other])
            self.docks[top].raise_()

        self.backend_status = QLabel(backend_label)
        self.backend_status.setObjectName("status.backend")
        # the time left ticks every second: text that never lays the window out again
        self.state_status = StatusText(chars=34, align=Qt.AlignmentFlag.AlignRight)
        self.state_status.setObjectName("status.state")
        self.show_badge = QLabel(" SHOW ")
        self.show_badge.setObjectName("status.show")
        self.show_badge.setStyleSheet("background: #c62828; color: white; font-weight: bold;")
        self.show_badge.setToolTip("Show mode: nothing can be changed by a stray key")
        self.show_badge.hide()
        self.statusBar().addPermanentWidget(self.show_badge)
        self.statusBar().addPermanentWidget(self.backend_status)
        self.statusBar().addPermanentWidget(self.state_status)
        self.state_status.setText("Session: starting…")
        self._build_menus()
        window_state.restore(self)

    def attach(
        self,
        *,
        stage: QWidget,
        session_panel: SessionPanel,
        session: SessionPresenter,
        messages: MessageBus,
        backend_label: str,
        extra_docks: tuple[tuple[str, str, QWidget | LazyPanel[Any], Qt.DockWidgetArea], ...] = (),
        confirm_terminate: Callable[[], bool] = lambda: True,
        tab_with: dict[str, str] | None = None,
    ) -> None:
        """The stage and the panels in their places, wired to the session (once).

        A :class:`LazyPanel` among ``extra_docks`` is built when its dock is first visible
        (see ``ui/lazy.py``); until then the frame's placeholder keeps its place."""
        assert not self.attached, "the window's panels are attached once"
        self.attached = True
        self._session = session
        self._messages = messages
        self._confirm_terminate_setting = confirm_terminate
        self.session_panel = session_panel
        self.stage = stage
        self.setCentralWidget(stage)  # the placeholder goes
        stage.show()  # a child added to a window on screen is shown explicitly
        self.backend_status.setText(backend_label)
        self._add_dock("session", "Session", session_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        for name, title, widget, area in extra_docks:
            if isinstance(widget, LazyPanel):
                self._add_lazy_dock(name, title, widget, area)
            else:
                self._add_dock(name, title, widget, area)
        # docks that share a place, as tabs (the first named is shown on top)
        for name, other in (tab_with or {}).items():
            if name in self.docks and other in self.docks:
                self.tabifyDockWidget(self.docks[other], self.docks[name])
                self.docks[name].raise_()
        self._wire_session_menu()
        self._connect_signals()
        self._render(session.snapshot)
        messages.start_listening()

    def _add_dock(self, name: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        """A dock for ``widget``; the frame's dock of that name takes it in its placeholder's
        place (same place, same size, no new dock)."""
        dock = self.docks.get(name)
        if dock is not None:
            old = dock.widget()
            dock.setWidget(opaque(widget))
            widget.show()  # a child added to a window on screen is shown explicitly
            if isinstance(old, Placeholder):
                old.deleteLater()
            return
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock.{name}")
        dock.setWidget(opaque(widget))
        self.addDockWidget(area, dock)
        self.docks[name] = dock

    def _add_lazy_dock(
        self, name: str, title: str, panel: LazyPanel[Any], area: Qt.DockWidgetArea
    ) -> None:
        """The frame's dock of that name takes the panel once it is built: when the dock is
        first visible (at once if it is now), or when code asks for the panel."""
        dock = self.docks.get(name)
        if dock is None:  # not a dock of the frame: no placeholder holds its place
            self._add_dock(name, title, panel.get(), area)
            return
        panel.on_built(lambda widget: self._add_dock(name, title, widget, area))

        def visibility(visible: bool) -> None:
            if visible:
                panel.get()

        # Qt says when a dock's tab is selected or not with this signal (``isVisible`` stays
        # true for a dock behind another's tab)
        dock.visibilityChanged.connect(visibility)
        if dock.isVisible() and not dock.visibleRegion().isEmpty():
            panel.get()

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = self.file_menu = bar.addMenu("&File")
        settings = self.settings_action = QAction("&Settings…", self)
        settings.setShortcut(QKeySequence.StandardKey.Preferences)
        settings.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        settings.triggered.connect(self.settings_requested)
        file_menu.addAction(settings)
        file_menu.addSeparator()
        quit_action = self.quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        quit_action.triggered.connect(self.request_quit)
        file_menu.addAction(quit_action)

        session_menu = self.session_menu = bar.addMenu("&Session")
        self.create_action = QAction("&Create session", self)
        self.create_action.setShortcut(QKeySequence("Ctrl+Shift+N"))
        self.cancel_action = QAction("Ca&ncel start", self)
        self.terminate_action = QAction("&Terminate session", self)
        self.terminate_action.setShortcut(QKeySequence("Ctrl+Shift+W"))
        self.copy_id_action = QAction("Copy session &id", self)
        for action in (
            self.create_action,
            self.cancel_action,
            self.terminate_action,
            self.copy_id_action,
        ):
            action.setEnabled(False)  # until the session is attached
            session_menu.addAction(action)

        view_menu = bar.addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        full = self.full_screen_action = QAction("&Full screen", self)
        full.setShortcut(QKeySequence.StandardKey.FullScreen)
        full.setCheckable(True)
        full.toggled.connect(lambda on: self.showFullScreen() if on else self.showNormal())
        view_menu.addAction(full)

        help_menu = self.help_menu = bar.addMenu("&Help")
        about = QAction("&About Avaturn Desktop", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _wire_session_menu(self) -> None:
        self.create_action.triggered.connect(self.session_panel.request_create)
        self.cancel_action.triggered.connect(self._session.cancel)
        self.terminate_action.triggered.connect(self._confirm_terminate)
        self.copy_id_action.triggered.connect(self.session_panel._copy_session_id)
        self.copy_id_action.setEnabled(True)

    def _connect_signals(self) -> None:
        """The one place where panels meet presenters."""
        self._session.snapshot_changed.connect(self._render)
        self._session.snapshot_changed.connect(self.session_panel.show_snapshot)
        self.session_panel.cancel_requested.connect(self._session.cancel)
        self.session_panel.terminate_requested.connect(self._confirm_terminate)
        self._messages.message.connect(self._show_message)
        self._session.snapshot_changed.connect(self._on_snapshot)
        self._error_shown = False
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(lambda: self._render(self._session.snapshot))
        self._clock.start()

    def _render(self, snap: SessionSnapshot) -> None:
        from avaturn_desktop.core.session_state import SessionState
        from avaturn_desktop.ui.docks.session_panel import format_duration

        state = snap.state
        text = f"Session: {state.label}"
        if state is SessionState.LIVE:
            left = snap.time_left(time.time())
            text += f" · {format_duration(left)} left"
        elif state in (SessionState.ENDED, SessionState.FAILED) and snap.reason:
            text += f" ({snap.reason})"
        self.state_status.setText(text)
        live = state is SessionState.LIVE
        self.setWindowTitle(f"{APP_TITLE} — live" if live else APP_TITLE)
        self.create_action.setEnabled(not state.busy)
        self.cancel_action.setEnabled(state in (SessionState.CREATING, SessionState.CONNECTING))
        self.terminate_action.setEnabled(live)

    def paint_now(self) -> None:
        """Lay out and paint at once (what the next loop turn would do)."""
        QCoreApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        layout = self.layout()
        if layout is not None:
            layout.activate()
        self.repaint()

    def show_control(self, url: str, *, exposed: bool) -> None:
        """The control API listens at ``url``: say so in the status bar (and loudly when it
        is reachable from the network)."""
        label = QLabel(f"Control API: {url}" + (" (reachable from the network)" if exposed else ""))
        label.setObjectName("status.control")
        if exposed:
            label.setStyleSheet("color: #b45309; font-weight: bold;")
        self.statusBar().addPermanentWidget(label)

    def _show_message(self, level: str, text: str) -> None:
        # An error stays until it is read or the situation changed (a later session went
        # live clears it, see _on_snapshot); it also goes after a minute at most.
        from avaturn_desktop.ui.messages import Level

        timeout = 60_000 if level == Level.ERROR.value else 8000
        self.statusBar().showMessage(text, timeout)
        self._error_shown = level == Level.ERROR.value

    def _on_snapshot(self, snap: SessionSnapshot) -> None:
        from avaturn_desktop.core.session_state import SessionState

        if snap.state in (SessionState.CREATING, SessionState.LIVE) and self._error_shown:
            self.statusBar().clearMessage()
            self._error_shown = False

    def set_show_badge(self, on: bool) -> None:
        self.show_badge.setVisible(on)

    def _confirm_terminate(self) -> None:
        """Terminate, asking first while the avatar speaks or lines wait (a setting), and
        always in Show mode."""
        from avaturn_desktop.core.session_state import SessionState

        if self._session.snapshot.state is SessionState.LIVE:
            busy = self._session.busy_lines() if self._confirm_terminate_setting() else ""
            if not busy and self.show_mode():
                busy = "live and the show is on"
            if busy and not TerminateDialog.ask(self, busy):
                return
        self._session.terminate()

    def _live_show(self) -> bool:
        from avaturn_desktop.core.session_state import SessionState

        if not self.attached:
            return False
        return self.show_mode() and self._session.snapshot.state is SessionState.LIVE

    def request_quit(self) -> None:
        """File → Quit: in Show mode with a session live, ask first (quitting ends it)."""
        if self._live_show() and not TerminateDialog.ask(
            self, "live and the show is on; quitting ends the session"
        ):
            return
        self.close()

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About Avaturn Desktop",
            f"<b>Avaturn Desktop</b> {__version__}<br>A control panel for Avaturn Live "
            "talking avatars driven by text.",
        )

    def sizeHint(self) -> QSize:
        return QSize(1280, 800)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Closed by a person with the window's own button: in Show mode, ask first.
        if (
            event.spontaneous()
            and self._live_show()
            and not TerminateDialog.ask(self, "live and the show is on; closing ends the session")
        ):
            event.ignore()
            return
        window_state.save(self)
        self.was_closed = True
        self.closed.emit()
        event.accept()
