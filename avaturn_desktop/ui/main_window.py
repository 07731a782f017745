"""The main window: the avatar stage in the middle, panels in docks around it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QWidget,
)

from avaturn_desktop import __version__
from avaturn_desktop.core.paths import resource
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.ui import window_state
from avaturn_desktop.ui.docks.session_panel import SessionPanel, format_duration
from avaturn_desktop.ui.frames import opaque
from avaturn_desktop.ui.messages import Level, MessageBus
from avaturn_desktop.ui.presenters import SessionPresenter
from avaturn_desktop.ui.status_text import StatusText

log = logging.getLogger("avaturn.ui")

APP_TITLE = "Avaturn Desktop"


def app_icon() -> QIcon:
    return QIcon(str(resource("icons", "avaturn-desktop.svg")))


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

    def __init__(
        self,
        *,
        stage: QWidget,
        session_panel: SessionPanel,
        session: SessionPresenter,
        messages: MessageBus,
        backend_label: str,
        extra_docks: tuple[tuple[str, str, QWidget, Qt.DockWidgetArea], ...] = (),
        confirm_terminate: Callable[[], bool] = lambda: True,
        tab_with: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.setObjectName("main_window")
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.resize(1280, 800)
        self._session = session
        self._messages = messages
        self._confirm_terminate_setting = confirm_terminate
        #: Whether Show mode is on (set by the show's parts): ending the session asks first.
        self.show_mode: Callable[[], bool] = lambda: False
        self.session_panel = session_panel
        self.stage = stage
        self.setCentralWidget(stage)

        self.docks: dict[str, QDockWidget] = {}
        self._add_dock("session", "Session", session_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        for name, title, widget, area in extra_docks:
            self._add_dock(name, title, widget, area)
        # docks that share a place, as tabs (the first named is shown on top)
        for name, other in (tab_with or {}).items():
            if name in self.docks and other in self.docks:
                self.tabifyDockWidget(self.docks[other], self.docks[name])
                self.docks[name].raise_()

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

        self._build_menus()
        self._connect_signals()
        self._render(session.snapshot)
        window_state.restore(self)
        messages.start_listening()

    def _add_dock(self, name: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock.{name}")
        dock.setWidget(opaque(widget))
        self.addDockWidget(area, dock)
        self.docks[name] = dock

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

        session_menu = bar.addMenu("&Session")
        self.create_action = QAction("&Create session", self)
        self.create_action.setShortcut(QKeySequence("Ctrl+Shift+N"))
        self.create_action.triggered.connect(self.session_panel.request_create)
        self.cancel_action = QAction("Ca&ncel start", self)
        self.cancel_action.triggered.connect(self._session.cancel)
        self.terminate_action = QAction("&Terminate session", self)
        self.terminate_action.setShortcut(QKeySequence("Ctrl+Shift+W"))
        self.terminate_action.triggered.connect(self._confirm_terminate)
        copy_id = QAction("Copy session &id", self)
        copy_id.triggered.connect(self.session_panel._copy_session_id)
        for action in (self.create_action, self.cancel_action, self.terminate_action, copy_id):
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
        timeout = 60_000 if level == Level.ERROR.value else 8000
        self.statusBar().showMessage(text, timeout)
        self._error_shown = level == Level.ERROR.value

    def _on_snapshot(self, snap: SessionSnapshot) -> None:
        if snap.state in (SessionState.CREATING, SessionState.LIVE) and self._error_shown:
            self.statusBar().clearMessage()
            self._error_shown = False

    def set_show_badge(self, on: bool) -> None:
        self.show_badge.setVisible(on)

    def _confirm_terminate(self) -> None:
        """Terminate, asking first while the avatar speaks or lines wait (a setting), and
        always in Show mode."""
        if self._session.snapshot.state is SessionState.LIVE:
            busy = self._session.busy_lines() if self._confirm_terminate_setting() else ""
            if not busy and self.show_mode():
                busy = "live and the show is on"
            if busy and not TerminateDialog.ask(self, busy):
                return
        self._session.terminate()

    def _live_show(self) -> bool:
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
        self.closed.emit()
        event.accept()
