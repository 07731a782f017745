"""The app's Qt side, assembled: the stage, the presenters, the panels and the window.

The composition root (``app.run``) builds one Shell after the Qt-free services; the Shell
wires the Qt parts to them and owns their teardown order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import qasync
from PySide6.QtWidgets import QMessageBox, QWidget

from avaturn_desktop.core import paths
from avaturn_desktop.core import settings as settings_mod
from avaturn_desktop.core.errors import AppError, NotFoundError
from avaturn_desktop.core.settings import SessionDefaults
from avaturn_desktop.core.tasks import SessionRecord
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.session import SessionController
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.ui.docks.session_panel import SessionPanel
from avaturn_desktop.ui.main_window import MainWindow
from avaturn_desktop.ui.messages import MessageBus
from avaturn_desktop.ui.presenters import SessionPresenter
from avaturn_desktop.ui.speaking import SpeakingUi
from avaturn_desktop.ui.web.stage import Stage
from avaturn_desktop.ui.web.view import AvatarView

if TYPE_CHECKING:
    from avaturn_desktop.app import Backend

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


class Shell:
    def __init__(
        self,
        *,
        settings: settings_mod.Settings,
        backend: Backend,
        client: AvaturnClient,
        store: TaskLogStore,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.client = client
        self.store = store
        self.messages = MessageBus()
        self.view = AvatarView()
        self.view.setObjectName("stage")
        self.stage = Stage(
            self.view.bridge, allow_media_origins=self.view.avatar_page.allow_media_origins
        )
        self.controller = SessionController(
            client,
            self.stage,
            api_host=backend.api_base,
            sdk_url=backend.sdk_url,
            registry=store,
            init_timeout_s=settings.init_timeout_s,
            keep_alive=settings.keep_alive,
        )
        self.stage.event.connect(self.controller.handle_page_event)
        self.session = SessionPresenter(self.controller, self.messages)
        self.session_panel = SessionPanel(
            settings.session, warn_before_end_s=settings.warn_before_end_s
        )
        self.speaking = SpeakingUi(
            client=client,
            store=store,
            controller=self.controller,
            stage=self.stage,
            settings=settings,
            messages=self.messages,
            session_presenter=self.session,
        )
        self.window = MainWindow(
            stage=self.view,
            session_panel=self.session_panel,
            session=self.session,
            messages=self.messages,
            backend_label=backend.label,
            extra_docks=self.speaking.docks,
        )
        self.session_panel.create_requested.connect(self._create)
        self.window.settings_requested.connect(self.open_settings)
        self._closed = asyncio.Event()
        self.window.closed.connect(self._closed.set)
        if backend.kind == "simulator":
            self.messages.info(
                "No API key set: sessions run on the built-in simulator. "
                "Add a key in File → Settings to use the Avaturn cloud."
            )
        self.view.load_stage()

    def show(self) -> None:
        self.window.show()

    async def wait_exposed(self) -> None:
        """Until the window is on screen and the stage page has loaded."""
        loaded = asyncio.Event()
        self.view.loadFinished.connect(lambda _ok: loaded.set())
        if not self.view.bridge.ready:
            await loaded.wait()

    async def wait_live_or_failed(self) -> bool:
        from avaturn_desktop.core.session_state import SessionSnapshot, SessionState

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
        self.settings = self.settings.model_copy(update={"session": defaults})
        self._save_settings()
        self.session.start(defaults.to_request())

    def _save_settings(self) -> None:
        try:
            settings_mod.save(self.settings, paths.config_dir())
        except OSError as exc:
            self.messages.warning(f"Could not save the settings: {exc.strerror}")

    def open_settings(self) -> None:
        from avaturn_desktop.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, parent=self.window)
        dialog.saved.connect(self._settings_saved)
        dialog.open()

    def _settings_saved(self, new: Any) -> None:
        backend_changed = (new.backend, new.api_base, new.sdk_url) != (
            self.settings.backend,
            self.settings.api_base,
            self.settings.sdk_url,
        )
        self.settings = new
        self._save_settings()
        self.speaking.apply_settings(new)
        self.controller.keep_alive = new.keep_alive
        self.controller.init_timeout_s = new.init_timeout_s
        if backend_changed:
            self.messages.info("Backend settings take effect the next time the app starts.")

    async def offer_orphans(self, *, ask: bool = True) -> None:
        """Sessions a crashed run left open: offer to end them (they burn quota otherwise).

        With ``ask`` false (headless, unattended) they are ended without asking.
        """
        orphans = self.store.open_sessions()
        if not orphans:
            return
        wanted = (
            await qasync.asyncWrap(lambda: OrphanDialog.ask(self.window, orphans)) if ask else True
        )
        if not wanted:
            self.messages.info(
                f"{len(orphans)} session(s) from an earlier run left as they are; they end "
                "by themselves when nobody watches."
            )
            return
        ended = 0
        for record in orphans:
            if record.backend != self.backend.api_base:
                reason = "ended with the backend that ran it"
                if self.backend.kind != "simulator" and record.backend.startswith("https://"):
                    self.messages.warning(
                        f"Session {record.session_id} ran on {record.backend}, not on this "
                        "backend; it could not be ended from here."
                    )
                    continue
            else:
                try:
                    await self.client.terminate_session(record.session_id)
                    reason = "ended at the next start (orphan)"
                except NotFoundError:
                    reason = "already over at the next start"
                except AppError as exc:
                    self.messages.warning(
                        f"Could not end session {record.session_id}: {exc.user_message}"
                    )
                    continue
            self.store.end_session(record.session_id, reason)
            ended += 1
        self.messages.info(f"Ended {ended} session(s) left over from an earlier run.")

    async def shutdown(self) -> None:
        await self.speaking.shutdown()
        self.session.close()
        self.view.shutdown()
        self.window.deleteLater()
