"""The voice bench in the window: avatars side by side, the voice library, A/B comparisons,
the live metrics and where each avatar's sound goes.

The Shell builds :class:`BenchUi` before the main window (its panels become docks) and
:meth:`BenchUi.attach` wires it to the window once that exists: the further avatars' docks (the
runtime's stage factory), the composer's "speak to" selector, the Avatars menu and the sound
controls of each avatar. Nothing here keeps state of its own about sessions or lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QWidget

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.services.runtime import AvatarSlot, Runtime
from avaturn_desktop.ui import window_state
from avaturn_desktop.ui.docks.audio_panel import AudioPanel, SlotAudio
from avaturn_desktop.ui.docks.metrics_panel import MetricsPanel
from avaturn_desktop.ui.lazy import LazyPanel
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.slots import SlotStages
from avaturn_desktop.ui.targets import ComposerTarget, TargetSelector

if TYPE_CHECKING:
    from avaturn_desktop.ui.docks.ab_panel import AbPanel
    from avaturn_desktop.ui.docks.voice_library_panel import VoiceLibraryPanel
    from avaturn_desktop.ui.shell import Shell

log = logging.getLogger("avaturn.ui")


class BenchUi:
    """The bench's panels over the runtime (see the module docs)."""

    def __init__(self, runtime: Runtime, messages: MessageBus) -> None:
        self.runtime = runtime
        self.messages = messages
        self.composer_target = ComposerTarget(runtime, messages)
        # Behind the log's tab by default and keeping nothing of their own from the start:
        # built when their dock is first shown (or :attr:`library` / :attr:`ab` is read).
        self.lazy_library = LazyPanel(lambda: _voice_library(runtime, messages))
        self.lazy_ab = LazyPanel(lambda: _ab(runtime, messages))
        # The metrics gather this run's lines from the start, hidden or not: built now.
        self.metrics = MetricsPanel(runtime)
        self.audio = AudioPanel()
        self.docks: tuple[tuple[str, str, QWidget | LazyPanel[Any], Qt.DockWidgetArea], ...] = (
            (
                "voices",
                "Voice library",
                self.lazy_library,
                Qt.DockWidgetArea.BottomDockWidgetArea,
            ),
            ("ab", "A/B", self.lazy_ab, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("metrics", "Metrics", self.metrics, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("audio", "Sound", self.audio, Qt.DockWidgetArea.LeftDockWidgetArea),
        )
        self.stages: SlotStages | None = None
        self.selector: TargetSelector | None = None
        self.add_action: QAction | None = None
        self._unsubscribe_settings: Callable[[], None] = lambda: None
        self._unsubscribe: list[Callable[[], None]] = []

    @property
    def library(self) -> VoiceLibraryPanel:
        """The voice library's panel (built now if its dock was never shown)."""
        return self.lazy_library.get()

    @property
    def ab(self) -> AbPanel:
        """The A/B panel (built now if its dock was never shown)."""
        return self.lazy_ab.get()

    def attach(self, shell: Shell) -> None:
        """Wire the bench to the window (call once the window exists)."""
        window = shell.window
        self.stages = SlotStages(
            self.runtime,
            window,
            self.messages,
            first=(shell.view, shell.stage),
            beside=lambda: window.docks.get("queue"),
        )
        self.stages.subscribe(self._slot_shown)
        self._speaking = shell.speaking
        self.selector = TargetSelector(self.composer_target)
        shell.speaking.composer.add_target_selector(self.selector)
        self.audio.add(
            SlotAudio(self.runtime.slot(0), shell.view, shell.stage, self.runtime, self.messages)
        )

        def wire_library(library: VoiceLibraryPanel) -> None:
            library.use_requested.connect(shell.session_panel.voice.set_value)

        self.lazy_library.on_built(wire_library)
        self._place_docks(window)
        self._add_menu(window)

    def _place_docks(self, window: QMainWindow) -> None:
        """The bench's docks as tabs beside the log and the session panel, unless the user's
        saved layout says otherwise."""
        docks = getattr(window, "docks", {})
        log_dock, session_dock = docks.get("log"), docks.get("session")

        def tabify(first: QDockWidget, second: QDockWidget) -> None:
            # The frame tabs them already. Tabbing them again would show the second for a
            # moment, which builds a panel that waits to be shown (``ui/lazy.py``).
            if second not in window.tabifiedDockWidgets(first):
                window.tabifyDockWidget(first, second)

        if log_dock is not None:
            for name in ("voices", "ab", "metrics"):
                if name in docks:
                    tabify(log_dock, docks[name])
            log_dock.raise_()
        if session_dock is not None and "audio" in docks:
            tabify(session_dock, docks["audio"])
            session_dock.raise_()
        window_state.restore(window)

    def _add_menu(self, window: QMainWindow) -> None:
        menu = window.menuBar().addMenu("&Avatars")
        self.add_action = QAction("&Add avatar", window)
        self.add_action.setShortcut(QKeySequence("Ctrl+Shift+A"))
        self.add_action.triggered.connect(self.add_avatar)
        menu.addAction(self.add_action)
        self._update_add()
        self._unsubscribe_settings = self.runtime.settings.subscribe(
            lambda _new, _old: self._update_add()
        )

    def _update_add(self) -> None:
        if self.add_action is not None:
            self.add_action.setEnabled(self.runtime.can_add_slot)
            self.add_action.setToolTip(
                f"{len(self.runtime.slots)} of {self.runtime.quota} avatar(s) side by side "
                "(the limit is in Settings)"
            )

    def add_avatar(self) -> AvatarSlot | None:
        """One more avatar beside the others, within the quota."""
        try:
            return self.runtime.add_next_slot()
        except AppError as exc:
            self.messages.warning(exc.user_message)
            return None

    def _slot_shown(self, slot: AvatarSlot) -> None:
        assert self.stages is not None
        # the task log is one: the rows of every avatar appear in it as they are written
        self._unsubscribe.append(slot.queue.subscribe_rows(self._row_written))
        if self.selector is not None:
            self.selector.refresh()
        self.audio.add(
            SlotAudio(
                slot,
                self.stages.view_of(slot.index),
                self.stages.stage_of(slot.index),
                self.runtime,
                self.messages,
            )
        )
        self._update_add()

    def _row_written(self, row_id: int, new: bool) -> None:
        self._speaking.log_model.row_written(row_id, new)
        self._speaking.log_panel.row_written(row_id, new)

    def close(self) -> None:
        """The Qt side's teardown (the runtime ended the sessions before)."""
        self._unsubscribe_settings()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self.metrics.close_panel()
        if (library := self.lazy_library.built) is not None:
            library.close_panel()
        if (ab := self.lazy_ab.built) is not None:
            ab.close_panel()
        if self.stages is not None:
            self.stages.close()


def _voice_library(runtime: Runtime, messages: MessageBus) -> VoiceLibraryPanel:
    from avaturn_desktop.ui.docks.voice_library_panel import VoiceLibraryPanel

    return VoiceLibraryPanel(runtime, messages)


def _ab(runtime: Runtime, messages: MessageBus) -> AbPanel:
    from avaturn_desktop.ui.docks.ab_panel import AbPanel

    return AbPanel(runtime, messages)
