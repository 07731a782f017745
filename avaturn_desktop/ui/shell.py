"""The window door, assembled: one avatar slot's stage, presenters and panels, and the window.

The composition root (``app.py``) builds the :class:`~avaturn_desktop.services.runtime.Runtime`
first; the Shell makes the avatar page (the view and its stage), hands the stage to the runtime
as a slot, and builds the Qt parts over that slot. It owns nothing of the services: it shows
them and forwards what people do. Its teardown is the Qt side only; the runtime ends the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import qasync
from PySide6.QtWidgets import QMessageBox, QWidget

from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.session_state import SessionSnapshot, SessionState
from avaturn_desktop.core.settings import SessionDefaults, Settings
from avaturn_desktop.core.tasks import SessionRecord
from avaturn_desktop.services.runtime import AvatarSlot, Runtime
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.ui.bench import BenchUi
from avaturn_desktop.ui.docks.session_panel import SessionPanel
from avaturn_desktop.ui.main_window import ExposeWatch, MainWindow
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.presenters import SessionPresenter
from avaturn_desktop.ui.show import ShowUi
from avaturn_desktop.ui.speaking import SpeakingUi
from avaturn_desktop.ui.web.stage import Stage
from avaturn_desktop.ui.web.view import AvatarView

log = logging.getLogger("avaturn.ui")


class OrphanDialog:
    """Asks whether to end sessions a previous run left behind (tests replace ``ask``)."""

    @classmethod
    def ask(cls, parent: QWidget | None, records: list[SessionRecord]) -> bool:
        lines = "\n".join(f"• {r.session_id} (avatar {r.avatar_id})" for r in records[:10])
        more = f"\n… and {len(records) - 10} more" if len(records) > 10 else ""
        answer = QMessageBox.question(
            parent,
            "Sessions left running",
            f"The app stopped last time without ending {len(records)} session(s). They may "
            f"still be using your quota until they time out:\n\n{lines}{more}\n\n"
            "End them now?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.Yes,
        )
        return answer == QMessageBox.StandardButton.Yes


class SwitchBackendDialog:
    """Offers to use the cloud at once after a key was entered (tests replace ``ask``)."""

    @classmethod
    def ask(cls, parent: QWidget | None) -> bool:
        answer = QMessageBox.question(
            parent,
            "Use the Avaturn cloud now?",
            "The API key is stored. Sessions run on the built-in simulator in this run; "
            "switch to the Avaturn cloud now? (The next session is made there.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.Yes,
        )
        return answer == QMessageBox.StandardButton.Yes


class Shell:
    """The main window over the runtime's first slot (see the module docs)."""

    def __init__(self, runtime: Runtime, window: MainWindow | None = None) -> None:
        self.runtime = runtime
        self.backend = runtime.backend
        self.store = runtime.store
        self.client = runtime.client
        self.messages = MessageBus(runtime.notices)
        self.view = AvatarView()
        self.view.setObjectName("stage")
        self.stage = Stage(
            self.view.bridge,
            allow_media_origins=self.view.avatar_page.allow_media_origins,
            reload_page=self.view.reload_stage,
        )
        self.slot: AvatarSlot = runtime.add_slot(self.stage)
        self.controller: SessionController = self.slot.controller
        self.stage.event.connect(self.slot.handle_page_event)
        # the cause first: the supervisor hears of the crash before the page's bridge resets
        self.view.avatar_page.crashed.connect(self.slot.page_crashed)
        self.stage.set_watchdog(runtime.settings.value.kiosk.watchdog_command())
        # a touch or a key on the stage wakes a kiosk from its attract screen
        self.view.gestures.touched.connect(lambda: self.slot.wake("touch"))
        settings = runtime.settings.value
        self.session = SessionPresenter(self.slot, self.messages)
        self.session_panel = SessionPanel(
            settings.session, warn_before_end_s=settings.warn_before_end_s
        )
        #: The voice bench: more avatars, the voice library, A/B, metrics, sound.
        self.bench = BenchUi(runtime, self.messages)
        self.speaking = SpeakingUi(
            slot=self.slot,
            store=runtime.store,
            messages=self.messages,
            session_presenter=self.session,
            composer_presenter=self.bench.composer_target,
        )
        self.show_ui = ShowUi(
            slot=self.slot,
            view=self.view,
            messages=self.messages,
            settings=lambda: self.runtime.settings.value,
        )
        #: The window: the frame the app showed before the services were imported, if any.
        self.window = window if window is not None else MainWindow()
        self.window.attach(
            stage=self.show_ui.host,
            session_panel=self.session_panel,
            session=self.session,
            messages=self.messages,
            backend_label=runtime.backend.label,
            extra_docks=self.speaking.docks + self.show_ui.docks + self.bench.docks,
            confirm_terminate=lambda: self.runtime.settings.value.confirm_terminate,
            tab_with={"cues": "log"},
        )
        self.show_ui.install(
            self.window,
            composer=self.speaking.composer,
            queue_panel=self.speaking.queue_panel,
            session_panel=self.session_panel,
        )
        self.bench.attach(self)
        self.session_panel.create_requested.connect(self._create)
        self.window.settings_requested.connect(self.open_settings)
        #: The control API's URL when it listens (set by the composition root).
        self.control_url: str | None = None
        self._closed = asyncio.Event()
        self.window.closed.connect(self._closed.set)
        if self.window.was_closed:  # closed while the rest was being built
            self._closed.set()
        self._unsubscribe_settings: Callable[[], None] = runtime.settings.subscribe(
            self._settings_changed
        )
        if runtime.backend.kind == "simulator":
            self.messages.info(
                "No API key set: sessions run on the built-in simulator. "
                "Add a key in File → Settings to use the Avaturn cloud."
            )
        self.view.avatar_page.outside_link.connect(self._outside_link)
        # the page's policy is the backend's from the first load (no reload at the first start)
        self.view.avatar_page.allow_media_origins(
            [runtime.backend.api_base, runtime.backend.sdk_url]
        )
        self.view.load_stage()

    def _outside_link(self, url: str, opened: bool) -> None:
        if opened:
            self.messages.info(f"Opened {url} in your browser.")
        else:
            self.messages.warning(
                f"The avatar page tried to open {url}; refused, as nobody clicked in it."
            )

    @property
    def settings(self) -> Settings:
        return self.runtime.settings.value

    def show(self) -> None:
        self.window.show()

    def enter_kiosk(self) -> None:
        """Kiosk mode: the avatar alone, full screen; the console behind the staff PIN."""
        from avaturn_desktop.core.pin import PIN_FILE_NAME, StaffPin
        from avaturn_desktop.ui.kiosk import KioskChrome

        data = self.runtime.data_dir
        pin = StaffPin.open_default() if data is None else StaffPin(data / PIN_FILE_NAME)
        self.kiosk = KioskChrome(self.window, self.view, pin, self.messages)
        self.kiosk.lock()

    async def wait_exposed(self) -> None:
        """Until the window is on screen: its first expose (Qt paints it then)."""
        self.window.winId()  # the native window exists from here on
        handle = self.window.windowHandle()
        if handle is None or handle.isExposed():
            return
        exposed = asyncio.Event()
        watch = ExposeWatch(exposed.set, handle)
        try:
            await exposed.wait()
        finally:
            handle.removeEventFilter(watch)

    async def wait_stage_loaded(self) -> None:
        """Until the stage page has loaded (its bridge is ready)."""
        loaded = asyncio.Event()
        self.view.loadFinished.connect(lambda _ok: loaded.set())
        if not self.view.bridge.ready:
            await loaded.wait()

    async def wait_live_or_failed(self) -> bool:
        done = asyncio.Event()

        def on_snapshot(snap: SessionSnapshot) -> None:
            if snap.state in (SessionState.LIVE, SessionState.FAILED):
                done.set()

        unsubscribe = self.controller.subscribe(on_snapshot)
        try:
            if self.controller.state not in (SessionState.LIVE, SessionState.FAILED):
                await done.wait()
        finally:
            unsubscribe()
        return self.controller.state is SessionState.LIVE

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def start_session(self) -> None:
        self._create(self.settings.session)

    def _create(self, defaults: SessionDefaults) -> None:
        try:
            self.runtime.settings.update(session=defaults)
        except OSError as exc:
            self.messages.warning(f"Could not save the settings: {exc.strerror}")
        self.session.start(defaults)

    def open_settings(self) -> None:
        from avaturn_desktop.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(
            self.settings,
            parent=self.window,
            data_dir=self.runtime.data_dir,
            control_url=self.control_url,
        )
        dialog.saved.connect(self._settings_saved)
        dialog.key_stored.connect(self._key_stored)
        dialog.open()

    def _key_stored(self) -> None:
        """A key was entered in Settings: on the simulator, offer to use the cloud now."""
        if self.runtime.backend.kind != "simulator" or self.settings.backend == "simulator":
            return
        from avaturn_desktop.core.backend import Backend
        from avaturn_desktop.services.secrets import load_api_key

        key, _source = load_api_key()
        if not key:
            return
        if self.controller.state.busy:
            self.messages.info(
                "The key is stored. End the session, then restart the app to use the cloud."
            )
            return
        if not SwitchBackendDialog.ask(self.window):
            self.messages.info("The key is stored; the cloud is used from the next start.")
            return
        cloud = Backend("cloud", self.settings.api_base, self.settings.sdk_url, key)
        try:
            self.runtime.switch_backend(cloud)
        except AppError as exc:
            self.messages.warning(exc.user_message)
            return
        self.window.backend_status.setText(cloud.label)
        self.messages.info("Sessions now run on the Avaturn cloud.")

    def _settings_saved(self, new: Settings) -> None:
        old = self.settings
        try:
            self.runtime.settings.replace(new)
        except OSError as exc:
            self.messages.warning(f"Could not save the settings: {exc.strerror}")
        if (new.backend, new.api_base, new.sdk_url) != (old.backend, old.api_base, old.sdk_url):
            self.messages.info("Backend settings take effect the next time the app starts.")

    def _settings_changed(self, new: Settings, old: Settings) -> None:
        if new.kiosk.watchdog_command() != old.kiosk.watchdog_command():
            self.stage.set_watchdog(new.kiosk.watchdog_command())
        self.session_panel.set_warn_before_end(new.warn_before_end_s)
        self.speaking.settings_changed()
        self.show_ui.settings_changed()

    async def offer_orphans(self, *, ask: bool = True) -> None:
        """Sessions a crashed run left open: offer to end them (they burn quota otherwise).

        With ``ask`` false (headless, unattended) they are ended without asking.
        """

        async def confirm(records: list[SessionRecord]) -> bool:
            if not ask:
                return True
            return bool(await qasync.asyncWrap(lambda: OrphanDialog.ask(self.window, records)))

        await self.runtime.end_orphans(confirm)

    def close(self) -> None:
        """The Qt side's teardown (the runtime's shutdown ended the sessions before)."""
        self._unsubscribe_settings()
        self.show_ui.close()
        self.bench.close()
        self.speaking.close()
        self.session.close()
        self.messages.close()
        self.view.shutdown()
        self.window.deleteLater()
