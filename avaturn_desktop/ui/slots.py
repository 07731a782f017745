"""Avatars side by side, in the window: a stage for each new slot, shown in a dock beside the
first avatar, with its own session controls.

The runtime makes slots (the window's "Add avatar", or the control API addressing a slot that
does not exist yet); it asks :meth:`SlotStages.make_stage` for the new slot's page, and tells
:meth:`SlotStages.slot_added` once the slot is there. The first slot's stage is the window's
central one (the Shell's); every further slot gets a dock ("Avatar 2", ...) holding its avatar
view and a session panel of its own, docked next to the central stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDockWidget,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from avaturn_desktop.core.settings import SessionDefaults
from avaturn_desktop.services.runtime import AvatarSlot, Runtime
from avaturn_desktop.ui.docks.session_panel import SessionPanel
from avaturn_desktop.ui.frames import opaque
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.presenters import SessionPresenter
from avaturn_desktop.ui.web.stage import Stage
from avaturn_desktop.ui.web.view import AvatarView

log = logging.getLogger("avaturn.ui")


def new_stage(index: int) -> tuple[AvatarView, Stage]:
    """An avatar page and its stage, loading."""
    view = AvatarView()
    view.setObjectName("stage" if index == 0 else f"stage.{index}")
    stage = Stage(
        view.bridge,
        allow_media_origins=view.avatar_page.allow_media_origins,
        reload_page=view.reload_stage,
    )
    view.load_stage()
    return view, stage


class SlotView(QWidget):
    """One further avatar: its view above, its session panel below."""

    def __init__(
        self,
        slot: AvatarSlot,
        view: AvatarView,
        messages: MessageBus,
        *,
        warn_before_end_s: int,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName(f"slot_view.{slot.index}")
        self.slot = slot
        self.view = view
        self._messages = messages
        self.session = SessionPresenter(slot, messages)
        self.session_panel = SessionPanel(slot.defaults(), warn_before_end_s=warn_before_end_s)
        self.session_panel.setObjectName(f"session_panel.{slot.index}")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.session_panel)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(view)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self.session.snapshot_changed.connect(self.session_panel.show_snapshot)
        self.session_panel.create_requested.connect(self._create)
        self.session_panel.cancel_requested.connect(self.session.cancel)
        self.session_panel.terminate_requested.connect(self.session.terminate)
        self.session_panel.show_snapshot(self.session.snapshot)

    def _create(self, defaults: SessionDefaults) -> None:
        try:
            self.slot.remember(defaults)
        except OSError as exc:
            self._messages.warning(f"Could not save the settings: {exc.strerror}")
        self.session.start(defaults)

    def close_slot(self) -> None:
        """The Qt side's teardown (the runtime ended the session before)."""
        self.session.close()
        self.view.shutdown()


class SlotStages:
    """The runtime's stage factory and the docks of the slots after the first."""

    def __init__(
        self,
        runtime: Runtime,
        window: QMainWindow,
        messages: MessageBus,
        *,
        first: tuple[AvatarView, Stage],
        beside: Callable[[], QDockWidget | None] = lambda: None,
    ) -> None:
        self._runtime = runtime
        self._window = window
        self._messages = messages
        self._beside = beside
        self.pages: dict[int, tuple[AvatarView, Stage]] = {0: first}
        self.views: dict[int, SlotView] = {}
        self.docks: dict[int, QDockWidget] = {}
        self._listeners: list[Callable[[AvatarSlot], None]] = []
        self._unsubscribe = runtime.subscribe_slots(self.slot_added)
        runtime.set_stage_factory(self.make_stage)

    def subscribe(self, listener: Callable[[AvatarSlot], None]) -> None:
        """Call ``listener`` once a further slot is shown."""
        self._listeners.append(listener)

    def stage_of(self, index: int) -> Stage:
        return self.pages[index][1]

    def view_of(self, index: int) -> AvatarView:
        return self.pages[index][0]

    def make_stage(self, index: int) -> Stage:
        view, stage = new_stage(index)
        self.pages[index] = (view, stage)
        return stage

    def slot_added(self, slot: AvatarSlot) -> None:
        if slot.index == 0 or slot.index not in self.pages:
            return
        view, stage = self.pages[slot.index]
        stage.event.connect(slot.handle_page_event)
        # as the first avatar's (the Shell's): its page's crashes and its watchdog
        view.avatar_page.crashed.connect(slot.page_crashed)
        stage.set_watchdog(self._runtime.settings.value.kiosk.watchdog_command())
        widget = SlotView(
            slot,
            view,
            self._messages,
            warn_before_end_s=self._runtime.settings.value.warn_before_end_s,
        )
        self.views[slot.index] = widget
        dock = QDockWidget(slot.label, self._window)
        dock.setObjectName(f"dock.slot{slot.index}")
        dock.setWidget(opaque(widget))
        self._window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        neighbour = self._beside()
        if neighbour is not None and not neighbour.isFloating():
            # the new avatar goes right beside the first one (the queue moves to its right)
            self._window.splitDockWidget(dock, neighbour, Qt.Orientation.Horizontal)
        self.docks[slot.index] = dock
        QTimer.singleShot(0, self._share_width)  # once the layout placed the new dock
        for listener in list(self._listeners):
            listener(slot)

    def _share_width(self) -> None:
        """The avatars share the width the central stage had (the first keeps one share)."""
        central = self._window.centralWidget()
        if central is None:
            return
        width = central.width() + sum(d.width() for d in self.docks.values() if d.isVisible())
        share = max(240, width // (len(self.docks) + 1))
        docks = list(self.docks.values())
        self._window.resizeDocks(docks, [share] * len(docks), Qt.Orientation.Horizontal)

    def close(self) -> None:
        self._unsubscribe()
        self._runtime.set_stage_factory(None)
        for widget in self.views.values():
            widget.close_slot()
        for index, (view, _stage) in self.pages.items():
            if index not in self.views and index != 0:
                view.shutdown()  # made, but its slot never shown
