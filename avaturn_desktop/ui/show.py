"""The show, assembled: the cue list dock, GO and its keys, the Edit / Show switch, the
audience output and the stage's look, over one avatar slot.

Like ``speaking.py`` it builds nothing of the services: the slot has the cue player and the
outputs; this module adapts them to Qt and adds the window's menus and keys.

Show mode: nothing can be changed by a stray key. The cue list cannot be edited, no script
opened or saved, the queue's waiting lines cannot be removed or moved, the session form and
the settings are locked, Esc does not close the audience output, and ending the session (or
quitting while it is live) always asks first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QKeyEvent
from PySide6.QtWidgets import QColorDialog, QFileDialog, QMenu, QWidget
from qasync import asyncSlot

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.look import CHROMA_BLUE, CHROMA_GREEN, IMAGE_TYPES
from avaturn_desktop.core.script import SCRIPT_SUFFIXES
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services.cues import CueView
from avaturn_desktop.services.runtime import AvatarSlot
from avaturn_desktop.ui.audience import AudienceOutput, StageHost
from avaturn_desktop.ui.docks.cue_panel import CuePanel
from avaturn_desktop.ui.keys import KeyMap, KeysHelp
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.web.look import StageLook
from avaturn_desktop.ui.web.view import AvatarView

log = logging.getLogger("avaturn.ui")

SCRIPT_FILTER = "Scripts ({})".format(" ".join(f"*{s}" for s in sorted(SCRIPT_SUFFIXES)))
IMAGE_FILTER = "Images ({})".format(" ".join(f"*{s}" for s in sorted(IMAGE_TYPES)))


class CuePresenter(QObject):
    """The slot's cue player as the cue list sees it; errors are reported as messages."""

    changed = Signal()

    def __init__(
        self, slot: AvatarSlot, messages: MessageBus, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._cues = slot.cues
        self._messages = messages
        self._unsubscribe = slot.cues.subscribe(self.changed.emit)

    # -- reading ---------------------------------------------------------------------------

    def cues(self) -> list[CueView]:
        return self._cues.cues()

    @property
    def standby(self) -> int | None:
        return self._cues.standby

    @property
    def path(self) -> Path | None:
        return self._cues.path

    @property
    def dirty(self) -> bool:
        return self._cues.dirty

    @property
    def measured(self) -> bool:
        return self._cues.measured

    def elapsed_s(self, now: float) -> float | None:
        return self._cues.elapsed_s(now)

    def time_left_s(self, now: float) -> float:
        return self._cues.time_left_s(now)

    # -- actions ---------------------------------------------------------------------------

    def _doing(self, call: Callable[[], Any]) -> bool:
        try:
            call()
        except AppError as exc:
            self._messages.warning(exc.user_message)
            return False
        return True

    def go(self) -> bool:
        return self._doing(self._cues.go)

    async def go_now(self) -> bool:
        try:
            await self._cues.go_now()
        except AppError as exc:
            self._messages.warning(exc.user_message)
            return False
        return True

    @asyncSlot()
    async def request_go_now(self) -> None:
        await self.go_now()

    def back(self) -> bool:
        return self._doing(self._cues.back)

    def skip(self) -> bool:
        return self._doing(self._cues.skip)

    def set_standby(self, index: int) -> bool:
        return self._doing(lambda: self._cues.set_standby(index))

    def edit(self, index: int, source: str) -> bool:
        return self._doing(lambda: self._cues.edit(index, source))

    def open_path(self, path: str | Path) -> bool:
        if self._doing(lambda: self._cues.load_path(path)):
            self._messages.info(f"Script opened: {Path(path).name} ({self._cues.count} cues).")
            return True
        return False

    def save(self, path: str | Path | None = None) -> bool:
        saved: list[Path] = []
        if self._doing(lambda: saved.append(self._cues.save(path))):
            self._messages.info(f"Script saved: {saved[0]}")
            return True
        return False

    def reload(self) -> bool:
        return self._doing(self._cues.reload)

    def close(self) -> None:
        self._unsubscribe()


class _ShowLock(QObject):
    """Swallows the editing keys of a widget while Show mode is on."""

    KEYS = frozenset({Qt.Key.Key_Delete, Qt.Key.Key_Backspace})

    def __init__(self, locked: Callable[[], bool], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._locked = locked

    def eventFilter(self, _watched: QObject, event: QEvent) -> bool:
        if self._locked() and event.type() == QEvent.Type.KeyPress:
            assert isinstance(event, QKeyEvent)
            alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
            if event.key() in self.KEYS or (
                alt and event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down)
            ):
                return True
        return False


class ShowUi(QObject):
    """The show's parts over one slot; :meth:`install` adds its menus and keys to the window."""

    #: Show mode turned on (True) or off.
    show_mode_changed = Signal(bool)

    def __init__(
        self,
        *,
        slot: AvatarSlot,
        view: AvatarView,
        messages: MessageBus,
        settings: Callable[[], Settings],
    ) -> None:
        super().__init__()
        self.slot = slot
        self._settings = settings
        self._messages = messages
        self.presenter = CuePresenter(slot, messages)
        self.panel = CuePanel(self.presenter)
        self.host = StageHost(view)
        self.look = StageLook(
            view.bridge, view.page(), slot.outputs, on_error=messages.warning, parent=self
        )
        self.audience = AudienceOutput(
            slot.outputs, self.host, self.look, locked=lambda: self.show_mode, parent=self
        )
        self.show_mode = False
        self.keymap: KeyMap | None = None
        self._window: Any = None
        self._lock = _ShowLock(lambda: self.show_mode, self)
        self._unsubscribe = slot.outputs.subscribe(self._outputs_changed)
        self.panel.open_requested.connect(self.open_script)
        self.docks: tuple[tuple[str, str, QWidget, Qt.DockWidgetArea], ...] = (
            ("cues", "Cue list", self.panel, Qt.DockWidgetArea.BottomDockWidgetArea),
        )

    # -- the window ------------------------------------------------------------------------

    def install(self, window: Any, *, composer: Any, queue_panel: Any, session_panel: Any) -> None:
        """Menus, actions and keys on the main window (after it is built)."""
        self._window = window
        self._composer = composer
        self._queue_panel = queue_panel
        self._session_panel = session_panel
        queue_panel.list.installEventFilter(self._lock)
        keymap = self.keymap = KeyMap(window)

        def action(name: str, text: str, slot: Callable[..., Any], *, checkable: bool = False):
            act = QAction(text, window)
            act.setObjectName(f"action.{name}")
            act.setCheckable(checkable)
            (act.toggled if checkable else act.triggered).connect(slot)
            return act

        self.open_action = action("open_script", "&Open script…", self.open_script)
        self.save_action = action("save_script", "&Save script", lambda: self.presenter.save())
        self.save_as_action = action("save_as", "Save script &as…", self.save_script_as)
        self.reload_action = action("reload", "&Reload script", lambda: self.presenter.reload())
        before = window.settings_action
        window.file_menu.insertActions(
            before, [self.open_action, self.save_action, self.save_as_action, self.reload_action]
        )
        window.file_menu.insertSeparator(before)

        self.go_action = action("go", "&GO", self.presenter.go)
        self.go_now_action = action("go_now", "GO &now (cut in)", self.presenter.request_go_now)
        self.back_action = action("back", "&Back", self.presenter.back)
        self.skip_action = action("skip", "S&kip", self.presenter.skip)
        self.stop_action = composer.stop_shortcut
        self.speak_now_action = action(
            "speak_now", "Speak the composer's text now", composer._on_speak_now
        )
        self.show_mode_action = action(
            "show_mode", "S&how mode", self.set_show_mode, checkable=True
        )
        self.audience_action = action(
            "audience", "&Audience output", self._toggle_audience, checkable=True
        )
        self.captions_action = action(
            "captions", "&Captions", self._toggle_captions, checkable=True
        )
        self.captions_action.setChecked(self.slot.outputs.captions.on)

        show_menu = QMenu("S&how", window)
        show_menu.setObjectName("menu.show")
        for act in (self.go_action, self.go_now_action, self.back_action, self.skip_action):
            show_menu.addAction(act)
        show_menu.addSeparator()
        show_menu.addAction(self.speak_now_action)
        show_menu.addSeparator()
        show_menu.addAction(self.show_mode_action)
        show_menu.addAction(self.audience_action)
        self.screen_menu = show_menu.addMenu("Audience &screen")
        self.screen_menu.aboutToShow.connect(self._fill_screens)
        show_menu.addAction(self.captions_action)
        self.background_menu = show_menu.addMenu("Stage &background")
        self._fill_backgrounds(self.background_menu)
        window.menuBar().insertMenu(window.help_menu.menuAction(), show_menu)
        self.show_menu = show_menu

        keys_help = QAction("&Keyboard shortcuts", window)
        keys_help.triggered.connect(self.show_keys)
        window.help_menu.insertAction(window.help_menu.actions()[0], keys_help)

        for name, target in (
            ("go", self.go_action),
            ("go_now", self.go_now_action),
            ("back", self.back_action),
            ("skip", self.skip_action),
            ("stop", self.stop_action),
            ("speak_now", self.speak_now_action),
            ("create", window.create_action),
            ("terminate", window.terminate_action),
            ("audience", self.audience_action),
            ("captions", self.captions_action),
            ("show_mode", self.show_mode_action),
            ("open_script", self.open_action),
            ("save_script", self.save_action),
            ("full_screen", window.full_screen_action),
        ):
            keymap.add(name, target)
        keymap.apply(self.slot_settings_keys())
        self.panel.go_button.setToolTip(
            f"Speak the standby cue (Space in the list, {self._key('go')})"
        )
        window.show_mode = lambda: self.show_mode

    def slot_settings_keys(self) -> dict[str, str]:
        return dict(self._settings().keys)

    def _key(self, name: str) -> str:
        return self.keymap.keys.get(name, "") if self.keymap is not None else ""

    def settings_changed(self) -> None:
        if self.keymap is not None:
            self.keymap.apply(self.slot_settings_keys())
        self.captions_action.setChecked(self.slot.outputs.captions.on)

    def show_keys(self) -> None:
        assert self.keymap is not None
        KeysHelp(self.keymap, self._window).open()

    # -- Show mode -------------------------------------------------------------------------

    def set_show_mode(self, on: bool) -> None:
        if on == self.show_mode:
            return
        self.show_mode = on
        self.show_mode_action.setChecked(on)
        self.panel.set_editable(not on)
        for act in (self.open_action, self.save_action, self.save_as_action, self.reload_action):
            act.setEnabled(not on)
        if self._window is not None:
            self._window.settings_action.setEnabled(not on)
            self._window.set_show_badge(on)
        for button in (
            self._queue_panel.remove_button,
            self._queue_panel.up_button,
            self._queue_panel.down_button,
            self._queue_panel.clear_button,
        ):
            button.setVisible(not on)
        panel = self._session_panel
        for field in (
            panel.avatar,
            panel.voice,
            panel.background,
            panel.render_model,
            panel.absent_timeout,
            panel.max_duration,
        ):
            field.setEnabled(not on)
        self._messages.info(
            "Show mode: nothing can be changed by a stray key." if on else "Edit mode."
        )
        self.show_mode_changed.emit(on)

    # -- outputs ---------------------------------------------------------------------------

    def _outputs_changed(self, what: str) -> None:
        if what == "audience":
            self.audience_action.setChecked(self.slot.outputs.audience.open)
        elif what == "look":
            self.captions_action.setChecked(self.slot.outputs.captions.on)

    def _toggle_audience(self, on: bool) -> None:
        if on != self.slot.outputs.audience.open:
            self._doing(lambda: self.slot.outputs.set_audience(open=on))

    def _toggle_captions(self, on: bool) -> None:
        if on != self.slot.outputs.captions.on:
            self._doing(lambda: self.slot.outputs.set_captions(on=on))

    def _doing(self, call: Callable[[], Any]) -> None:
        try:
            call()
        except AppError as exc:
            self._messages.warning(exc.user_message)

    def _fill_screens(self) -> None:
        menu = self.screen_menu
        menu.clear()
        outputs = self.slot.outputs
        group = QActionGroup(menu)
        for number, name in enumerate(outputs.screens):
            act = menu.addAction(f"{number}: {name}")
            act.setCheckable(True)
            act.setChecked(number == outputs.audience.screen)
            act.triggered.connect(
                lambda _c=False, n=number: self._doing(lambda: outputs.set_audience(screen=n))
            )
            group.addAction(act)
        menu.addSeparator()
        full = menu.addAction("Full screen")
        full.setCheckable(True)
        full.setChecked(outputs.audience.fullscreen)
        full.toggled.connect(lambda on: self._doing(lambda: outputs.set_audience(fullscreen=on)))

    def _fill_backgrounds(self, menu: QMenu) -> None:
        outputs = self.slot.outputs
        for label, changes in (
            ("Default", {"kind": "default"}),
            ("Transparent (for OBS window capture)", {"kind": "transparent"}),
            ("Chroma green", {"kind": "colour", "colour": CHROMA_GREEN}),
            ("Chroma blue", {"kind": "colour", "colour": CHROMA_BLUE}),
        ):
            act = menu.addAction(label)
            act.triggered.connect(
                lambda _c=False, ch=changes: self._doing(lambda: outputs.set_background(**ch))
            )
        menu.addAction("Colour…").triggered.connect(self.pick_colour)
        menu.addAction("Image…").triggered.connect(self.pick_image)

    def pick_colour(self) -> None:
        current = QColor(self.slot.outputs.background.colour)
        colour = QColorDialog.getColor(current, self._window, "Stage background colour")
        if colour.isValid():
            self._doing(
                lambda: self.slot.outputs.set_background(kind="colour", colour=colour.name())
            )

    def pick_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self._window, "Stage background image", "", IMAGE_FILTER
        )
        if path:
            self._doing(lambda: self.slot.outputs.set_background(kind="image", image=path))

    # -- scripts ---------------------------------------------------------------------------

    def open_script(self) -> None:
        if self.show_mode:
            return
        start = str(self.presenter.path.parent) if self.presenter.path is not None else ""
        path, _ = QFileDialog.getOpenFileName(self._window, "Open script", start, SCRIPT_FILTER)
        if path:
            self.presenter.open_path(path)

    def save_script_as(self) -> None:
        if self.show_mode:
            return
        start = str(self.presenter.path) if self.presenter.path is not None else "script.md"
        path, _ = QFileDialog.getSaveFileName(self._window, "Save script", start, SCRIPT_FILTER)
        if path:
            self.presenter.save(path)

    def close(self) -> None:
        self._unsubscribe()
        self.audience.close()
        self.look.close()
        self.presenter.close()
