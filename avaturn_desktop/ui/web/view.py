"""The avatar view: a web view with its own profile, running the stage page.

- The page is served from ``avaturn://stage/`` (see :mod:`scheme`), a secure origin.
- Its console goes to the ``avaturn.js`` logger.
- It can never navigate away from the stage. An http(s) or mailto link, or a pop-up, opens in
  the system browser only right after a person clicked or pressed a key in the avatar view
  (Qt's own input events, which no page script can make); otherwise it is refused. Either way
  the URL is logged and announced on :attr:`AvatarPage.outside_link`.
- Sound and video play without a user gesture (a kiosk has nobody to click).
- Media capture is granted only to the stage itself and the configured SDK / API origins;
  every other permission is denied.
- It cannot read local files.

Tear down with :meth:`AvatarView.shutdown` before deleting the view: the page must be deleted
before its profile, or Qt WebEngine complains.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

from PySide6.QtCore import QChildEvent, QCoreApplication, QEvent, QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWebEngineCore import (
    QWebEnginePage,
    QWebEnginePermission,
    QWebEngineProfile,
    QWebEngineSettings,
)
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import QWidget

from avaturn_desktop.ui.web.bridge import Bridge, install_bridge
from avaturn_desktop.ui.web.scheme import (
    SCHEME_BYTES,
    STAGE_ORIGIN,
    STAGE_PAGE,
    StageSchemeHandler,
    origin_of,
    register_schemes,
    stage_policy,
    stage_url,
)

__all__ = ["AvatarPage", "AvatarView", "media_permission_allowed", "origin_of"]

log = logging.getLogger("avaturn.web")
js_log = logging.getLogger("avaturn.js")

_JS_LEVELS = {
    QWebEnginePage.JavaScriptConsoleMessageLevel.InfoMessageLevel: logging.INFO,
    QWebEnginePage.JavaScriptConsoleMessageLevel.WarningMessageLevel: logging.WARNING,
    QWebEnginePage.JavaScriptConsoleMessageLevel.ErrorMessageLevel: logging.ERROR,
}

_MEDIA_PERMISSIONS = frozenset(
    {
        QWebEnginePermission.PermissionType.MediaAudioCapture,
        QWebEnginePermission.PermissionType.MediaVideoCapture,
        QWebEnginePermission.PermissionType.MediaAudioVideoCapture,
    }
)

_EXTERNAL_SCHEMES = frozenset({"http", "https", "mailto"})

#: How long after a person's click or key press in the avatar view a link may open outside.
GESTURE_WINDOW_S = 1.0
#: The longest URL quoted in a log line or a message (a page may make them huge).
_URL_SHOWN = 300

_GESTURE_EVENTS = frozenset(
    {
        QEvent.Type.MouseButtonRelease,
        QEvent.Type.KeyPress,
        QEvent.Type.TouchEnd,
    }
)


def _termination_words(status: QWebEnginePage.RenderProcessTerminationStatus) -> str:
    kind = QWebEnginePage.RenderProcessTerminationStatus
    return {
        kind.NormalTerminationStatus: "ended",
        kind.AbnormalTerminationStatus: "crashed",
        kind.CrashedTerminationStatus: "crashed",
        kind.KilledTerminationStatus: "killed",
    }.get(status, status.name)


def media_permission_allowed(
    permission: QWebEnginePermission.PermissionType, origin: str, allowed: Iterable[str]
) -> bool:
    """Whether a permission request is granted: media capture only, from allowed origins."""
    return permission in _MEDIA_PERMISSIONS and bool(origin) and origin in set(allowed)


def open_externally(url: QUrl) -> bool:
    """Open ``url`` in the system's browser (tests replace this)."""
    return QDesktopServices.openUrl(url)


def _is_stage(url: QUrl) -> bool:
    stage = stage_url()
    return (
        url.scheme() == stage.scheme() and url.host() == stage.host() and url.path() == stage.path()
    )


def shown_url(url: QUrl) -> str:
    """``url`` for a log line or a message: no password, at most :data:`_URL_SHOWN` chars."""
    text = url.toDisplayString()  # without the password, if any
    return text if len(text) <= _URL_SHOWN else text[: _URL_SHOWN - 1] + "…"


class GestureWatch(QObject):
    """When a person last clicked or pressed a key in a widget (or any widget inside it).

    Only input from the window system counts (``QEvent.spontaneous``): the page's script
    cannot make such events, so a recent one is a real user gesture.
    """

    touched = Signal()
    """A person clicked, touched or pressed a key in the widget (a kiosk's wake-up)."""

    def __init__(self, widget: QWidget, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(widget)
        self._clock = clock
        self._last = -math.inf
        self._watch(widget)

    def _watch(self, widget: QWidget) -> None:
        widget.installEventFilter(self)
        for child in widget.findChildren(QWidget):
            child.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind in _GESTURE_EVENTS and event.spontaneous():
            self._last = self._clock()
            self.touched.emit()
        elif kind == QEvent.Type.ChildPolished:
            # Polished, not added: a child is reported as added from inside its constructor,
            # and wrapping a half-made object of a Python class (the page's bridge) made
            # PySide6 search its types for 45 ms of start-up. Only widgets are polished, and
            # before they are shown, so none takes input unwatched.
            child = event.child() if isinstance(event, QChildEvent) else None
            if isinstance(child, QWidget):
                self._watch(child)
        return False

    def recent(self, within_s: float = GESTURE_WINDOW_S) -> bool:
        """Whether a person clicked or typed in the widget within the last ``within_s``."""
        return self._clock() - self._last <= within_s


class _PopupCatcher(QWebEnginePage):
    """Stands in for a pop-up window: hands its first URL to the stage page, then goes away."""

    def __init__(self, profile: QWebEngineProfile, opener: AvatarPage) -> None:
        super().__init__(profile, opener)
        self._opener = opener

    def acceptNavigationRequest(
        self, url: QUrl | str, _type: QWebEnginePage.NavigationType, _is_main_frame: bool
    ) -> bool:
        self._opener.open_outside(QUrl(url), "pop-up")
        self.deleteLater()
        return False


class AvatarPage(QWebEnginePage):
    """The stage page: console to logging, navigation locked to the stage, narrow permissions."""

    policy_changed = Signal(str)
    """The page's Content-Security-Policy changed: the stage must be loaded again to use it."""

    crashed = Signal(str)
    """The page's process ended (a crash, killed, out of memory): said before the page is
    reloaded, and before its bridge resets, so a supervisor hears the cause first."""

    outside_link = Signal(str, bool)
    """The page asked to open a URL outside: the URL as shown to people, and whether it was
    opened (True) or refused for want of a click or key press in the view (False)."""

    def __init__(
        self,
        profile: QWebEngineProfile,
        parent: QObject | None = None,
        *,
        scheme_handler: StageSchemeHandler | None = None,
    ) -> None:
        super().__init__(profile, parent)
        self._media_origins: set[str] = {STAGE_ORIGIN}
        self._scheme_handler = scheme_handler
        #: Whether a person just clicked or typed in the view (its view sets it).
        self.user_gesture: Callable[[], bool] = lambda: False
        self.permissionRequested.connect(self._on_permission_requested)

    # -- permissions ---------------------------------------------------------------------------

    def allow_media_origins(self, urls: Iterable[str]) -> None:
        """Set the backend the page works with: ``[api_host, sdk_url]``.

        Media capture is allowed for their origins (besides the stage itself), and the page's
        Content-Security-Policy lets the SDK load from the SDK's origin and connect to the
        service (see :func:`~avaturn_desktop.ui.web.scheme.stage_policy`). A changed policy
        is announced on :attr:`policy_changed`, before this returns.
        """
        urls = list(urls)
        self._media_origins = {STAGE_ORIGIN} | {o for o in map(origin_of, urls) if o}
        if self._scheme_handler is None:
            return
        api_host = urls[0] if urls else None
        sdk_url = urls[1] if len(urls) > 1 else None
        policy = stage_policy(api_host, sdk_url)
        if policy != self._scheme_handler.policy:
            self._scheme_handler.policy = policy
            log.info("Stage page policy: %s", policy)
            self.policy_changed.emit(policy)

    @property
    def policy(self) -> str:
        """The Content-Security-Policy the stage is served with."""
        return self._scheme_handler.policy if self._scheme_handler is not None else ""

    @property
    def media_origins(self) -> frozenset[str]:
        return frozenset(self._media_origins)

    def _on_permission_requested(self, permission: QWebEnginePermission) -> None:
        kind = permission.permissionType()
        origin = origin_of(permission.origin())
        if media_permission_allowed(kind, origin, self._media_origins):
            log.info("granted %s to %s", kind.name, origin)
            permission.grant()
        else:
            log.warning("denied %s to %s", kind.name, origin or "an unknown origin")
            permission.deny()

    # -- navigation ----------------------------------------------------------------------------

    def acceptNavigationRequest(
        self, url: QUrl | str, nav_type: QWebEnginePage.NavigationType, is_main_frame: bool
    ) -> bool:
        url = QUrl(url)
        if not is_main_frame:
            # Frames the SDK may create; never local files or other app schemes.
            return url.scheme() in ("https", "http", "about", "blob", "data")
        if _is_stage(url):
            return True
        if nav_type == QWebEnginePage.NavigationType.NavigationTypeLinkClicked:
            self.open_outside(url, "link")
        else:
            log.warning("navigation away from the stage refused: %s", shown_url(url))
        return False

    def open_outside(self, url: QUrl, what: str) -> bool:
        """Open ``url`` in the system's browser if it is an outside link and a person just
        clicked or typed in the view; say which URL either way. True when it was opened."""
        shown = shown_url(url)
        if url.scheme() not in _EXTERNAL_SCHEMES:
            log.warning("%s to %s refused: not a web or mail address", what, shown)
            return False
        if not self.user_gesture():
            log.warning("%s to %s not opened: nobody clicked in the avatar view", what, shown)
            self.outside_link.emit(shown, False)
            return False
        log.info("Opening %s in your browser (%s in the avatar view)", shown, what)
        self.outside_link.emit(shown, True)
        open_externally(url)
        return True

    def createWindow(self, _type: QWebEnginePage.WebWindowType) -> QWebEnginePage:
        return _PopupCatcher(self.profile(), self)

    # -- console -------------------------------------------------------------------------------

    def javaScriptConsoleMessage(
        self,
        level: QWebEnginePage.JavaScriptConsoleMessageLevel,
        message: str,
        line: int,
        source: str,
    ) -> None:
        js_log.log(_JS_LEVELS.get(level, logging.INFO), "%s (%s:%d)", message, source, line)


class AvatarView(QWebEngineView):
    """The central avatar area. ``bridge`` is the typed door to the page; call :meth:`load_stage`.

    Call :meth:`shutdown` before the view is deleted.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        register_schemes()  # no-op when the app did it early, as it must
        super().__init__(parent)
        # Off the record: nothing (cookies, cache, permissions) is written to disk.
        self._profile: QWebEngineProfile | None = QWebEngineProfile(self)
        self._scheme_handler = StageSchemeHandler(parent=self._profile)
        self._profile.installUrlSchemeHandler(SCHEME_BYTES, self._scheme_handler)
        self._avatar_page: AvatarPage | None = AvatarPage(
            self._profile, self._profile, scheme_handler=self._scheme_handler
        )
        settings = self._avatar_page.settings()
        WA = QWebEngineSettings.WebAttribute
        settings.setAttribute(WA.PlaybackRequiresUserGesture, False)
        settings.setAttribute(WA.LocalContentCanAccessFileUrls, False)
        settings.setAttribute(WA.LocalContentCanAccessRemoteUrls, False)
        settings.setAttribute(WA.AllowRunningInsecureContent, False)
        settings.setAttribute(WA.JavascriptCanOpenWindows, False)
        settings.setAttribute(WA.PluginsEnabled, False)
        settings.setAttribute(WA.PdfViewerEnabled, False)
        settings.setAttribute(WA.ScreenCaptureEnabled, False)
        self._stage_requested = False
        #: The page's process died and its reload is due (see _on_render_process_gone).
        self._reload_pending = False
        self.gestures = GestureWatch(self)
        self._avatar_page.user_gesture = self.gestures.recent
        self.bridge = Bridge(self)
        self._channel = install_bridge(self._avatar_page, self.bridge)
        self._avatar_page.renderProcessTerminated.connect(self._on_render_process_gone)
        self._avatar_page.policy_changed.connect(self._reload_for_policy)
        self.setPage(self._avatar_page)

    @property
    def avatar_page(self) -> AvatarPage:
        if self._avatar_page is None:
            raise RuntimeError("the avatar view was shut down")
        return self._avatar_page

    def _on_render_process_gone(
        self, status: QWebEnginePage.RenderProcessTerminationStatus, code: int
    ) -> None:
        """The page's process died: tell the session, then bring the stage page back."""
        log.warning(
            "The avatar page's process ended (%s, code %d); reloading it", status.name, code
        )
        if self._avatar_page is not None:
            self._avatar_page.crashed.emit(
                f"the avatar page's process ended ({_termination_words(status)}, code {code})"
            )
        self.bridge.reset()
        if self._avatar_page is not None:
            self._reload_pending = True
            QTimer.singleShot(500, self._reload_after_crash)

    def _reload_for_policy(self, _policy: str) -> None:
        """A new backend: the stage is loaded again under its policy (a CSP cannot be relaxed
        in place). Readiness drops now, so nothing is sent to the old page meanwhile."""
        if self._avatar_page is None or not self._stage_requested:
            return  # not loaded yet: the first load gets the new policy anyway
        self.bridge.reset(replacing=True)
        self.load_stage()

    def reload_stage(self) -> None:
        """Load the stage page again now (a page that hung or shows nothing): readiness drops
        at once, and a ``ready`` from the old document is ignored."""
        if self._avatar_page is None:
            return
        self.bridge.reset(replacing=True)
        self.load_stage()

    def _reload_after_crash(self) -> None:
        # not when someone (the supervisor) loaded it again meanwhile: a second load would cut
        # the first one's new avatar short
        if self._avatar_page is not None and self._reload_pending:
            self.load_stage()

    def load_stage(self) -> None:
        """(Re)load the stage page; the bridge becomes ready when the page says so."""
        self._stage_requested = True
        self._reload_pending = False
        self.avatar_page.load(stage_url(STAGE_PAGE))

    def shutdown(self) -> None:
        """Delete the page, then its profile. Safe to call twice."""
        page, profile = self._avatar_page, self._profile
        if page is None or profile is None:
            return
        self._avatar_page = None
        self._profile = None
        self.bridge.reset()
        page.loadStarted.disconnect(self.bridge.reset)
        page.permissionRequested.disconnect(page._on_permission_requested)
        page.renderProcessTerminated.disconnect(self._on_render_process_gone)
        page.policy_changed.disconnect(self._reload_for_policy)
        # The view must not keep using the page we delete: give it an inert, default one.
        self.setPage(QWebEnginePage(self))
        # The page goes first, the profile after it: otherwise Qt warns that the profile was
        # released while a page still used it.
        page.destroyed.connect(profile.deleteLater)
        page.deleteLater()
        QCoreApplication.sendPostedEvents(page, QEvent.Type.DeferredDelete)
