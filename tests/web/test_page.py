"""The stage page in a real QtWebEngine: origin, worlds, navigation, files, bridge round trip."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, Qt, QUrl
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEnginePermission

from avaturn_desktop.core.events import Ready
from avaturn_desktop.ui.web import view as view_module
from avaturn_desktop.ui.web.scheme import STAGE_ORIGIN, resolve, stage_url
from avaturn_desktop.ui.web.view import AvatarView, media_permission_allowed, origin_of

RunJs = Callable[..., Any]


def test_stage_is_a_secure_context(view: AvatarView, run_js: RunJs) -> None:
    assert run_js(view, "window.isSecureContext") is True
    assert run_js(view, "location.origin") == STAGE_ORIGIN
    assert view.url() == stage_url()


def test_qt_is_hidden_from_the_page_world(view: AvatarView, run_js: RunJs) -> None:
    assert run_js(view, "typeof qt") == "undefined"
    assert run_js(view, "typeof QWebChannel") == "undefined"
    # ...it lives only in the bridge's isolated world
    assert run_js(view, "typeof qt", 1) == "object"


def test_placeholder_shows_when_no_session_is_live(view: AvatarView, run_js: RunJs) -> None:
    text = run_js(view, "document.getElementById('placeholder').innerText")
    assert "No session live" in text
    assert run_js(view, "document.getElementById('placeholder').hidden") is False
    assert run_js(view, "document.getElementById('message').hidden") is True


#: What a script in the page's main world might try to speak to the app with, each a forged
#: event that would matter if it got through (the old relay took any window CustomEvent).
FORGED_EVENTS = [
    {"type": "sdk_error", "code": "session_ended", "message": "forged"},
    {"type": "sdk_error", "code": "user_absent_timeout"},
    {"type": "disposed", "reason": "terminated"},
    {"type": "idle"},
    {"type": "avatar_started_speaking_phrase", "phrase_id": "t1"},
    {"type": "avatar_ended_speaking_phrase", "phrase_id": "t1"},
    {"type": "avatar_started_speaking"},
    {"type": "avatar_ended_speaking"},
    {"type": "result", "ref": 1, "ok": True, "data": {"task_id": "forged"}},
    {"type": "ready"},
]

#: Every way the main world can try to reach the bridge script: the old event names, the
#: handshake's names, and messages posted to the window.
FORGE_JS = """
(() => {
  const forged = %s;
  for (const event of forged) {
    const text = JSON.stringify(event);
    for (const name of ["avaturn:page-to-host", "avaturn:port", "avaturn:connect"]) {
      window.dispatchEvent(new CustomEvent(name, {detail: text}));
    }
    window.postMessage(text, "*");
    const channel = new MessageChannel();
    window.postMessage("avaturn:port", "*", [channel.port2]);
    channel.port1.postMessage(text);
  }
  return forged.length;
})()
"""


def _round_trip(view: AvatarView, qtbot: Any, run_js: RunJs) -> None:
    """Wait until everything the page queued before now has reached Python: a command's answer
    comes back on the same port, after whatever the page posted earlier."""
    from avaturn_desktop.core.events import CommandResult, DisposeCommand

    with qtbot.waitSignal(
        view.bridge.event_received,
        check_params_cb=lambda e: isinstance(e, CommandResult) and e.ref == 4242,
    ):
        view.bridge.send(DisposeCommand(ref=4242))


def test_main_world_scripts_cannot_post_to_the_app(
    view: AvatarView, qtbot: Any, run_js: RunJs
) -> None:
    import json

    got: list[Any] = []
    bad: list[str] = []
    view.bridge.event_received.connect(got.append)
    view.bridge.bad_message.connect(bad.append)
    assert run_js(view, FORGE_JS % json.dumps(FORGED_EVENTS)) == len(FORGED_EVENTS)
    _round_trip(view, qtbot, run_js)
    assert [type(e).__name__ for e in got] == ["CommandResult"]
    assert bad == []
    assert view.bridge.ready


def test_a_second_handshake_gets_no_port(view: AvatarView, qtbot: Any, run_js: RunJs) -> None:
    run_js(
        view,
        "window.__ports = 0; window.__done = false;"
        "window.addEventListener('message', (e) => {"
        "  if (e.data === 'marker') { window.__done = true; }"
        "  else { window.__ports += e.ports.length; }"
        "});"
        "window.dispatchEvent(new CustomEvent('avaturn:connect'));"
        "window.postMessage('marker', '*'); true",
    )
    qtbot.waitUntil(lambda: run_js(view, "window.__done") is True)
    assert run_js(view, "window.__ports") == 0


def test_reload_resets_readiness_and_handshakes_again(view: AvatarView, qtbot: Any) -> None:
    states: list[bool] = []
    view.bridge.ready_changed.connect(states.append)
    with qtbot.waitSignal(
        view.bridge.event_received, check_params_cb=lambda e: isinstance(e, Ready), timeout=20_000
    ):
        view.reload()
    assert states == [False, True]


def test_navigation_away_is_blocked(
    view: AvatarView, qtbot: Any, run_js: RunJs, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(view_module, "open_externally", lambda url: opened.append(url.toString()))
    page = view.avatar_page
    nav = QWebEnginePage.NavigationType
    assert not page.acceptNavigationRequest(
        QUrl("https://example.org/"), nav.NavigationTypeTyped, True
    )
    assert not page.acceptNavigationRequest(
        QUrl("avaturn://stage/bridge.js"), nav.NavigationTypeTyped, True
    )
    assert page.acceptNavigationRequest(stage_url(), nav.NavigationTypeReload, True)
    assert not page.acceptNavigationRequest(
        QUrl("file:///etc/passwd"), nav.NavigationTypeTyped, False
    )
    # a link the page follows by itself stays closed...
    assert not page.acceptNavigationRequest(
        QUrl("https://docs.avaturn.live/"), nav.NavigationTypeLinkClicked, True
    )
    assert opened == []
    # ...and goes to the system browser right after a person clicked in the view
    monkeypatch.setattr(page, "user_gesture", lambda: True)
    assert not page.acceptNavigationRequest(
        QUrl("https://docs.avaturn.live/"), nav.NavigationTypeLinkClicked, True
    )
    assert opened == ["https://docs.avaturn.live/"]
    # never a local file or another scheme, click or not
    assert not page.acceptNavigationRequest(
        QUrl("file:///etc/passwd"), nav.NavigationTypeLinkClicked, True
    )
    assert opened == ["https://docs.avaturn.live/"]
    run_js(view, "location.href = 'https://example.org/elsewhere'")
    assert run_js(view, "location.href") == stage_url().toString()
    assert view.url() == stage_url()


#: Ways the page's script can ask for an outside URL without anyone clicking.
SCRIPTED_OPENINGS = {
    "a link clicked by script": (
        "const a = document.createElement('a'); a.href = '{url}';"
        " document.body.append(a); a.click();"
    ),
    "a _blank link clicked by script": (
        "const b = document.createElement('a'); b.href = '{url}'; b.target = '_blank';"
        " document.body.append(b); b.click();"
    ),
    "window.open": "window.open('{url}');",
    "a mailto link": (
        "const m = document.createElement('a'); m.href = 'mailto:someone@example.org';"
        " document.body.append(m); m.click();"
    ),
}


def _block(code: str) -> str:
    """``code`` in a block of its own (its ``const`` names do not clash with earlier runs)."""
    return "{ " + code + " }"


@pytest.mark.parametrize("how", list(SCRIPTED_OPENINGS), ids=list(SCRIPTED_OPENINGS))
def test_page_script_opens_nothing_without_a_click(
    view: AvatarView,
    qtbot: Any,
    run_js: RunJs,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(view_module, "open_externally", lambda url: opened.append(url.toString()))
    told: list[tuple[str, bool]] = []
    view.avatar_page.outside_link.connect(lambda url, ok: told.append((url, ok)))
    url = "https://example.org/" + how.replace(" ", "-")
    marker = "https://example.org/marker"
    with caplog.at_level(logging.INFO, logger="avaturn.web"):
        run_js(view, _block(SCRIPTED_OPENINGS[how].replace("{url}", url)))
        # Some of these Chromium refuses itself (its pop-up blocker, its rule for mail links);
        # the rest reach the app, which refuses them. A scripted link after them reaches the
        # app for sure: once it is refused, the attempt before it has been dealt with too.
        run_js(view, _block(SCRIPTED_OPENINGS["a link clicked by script"].replace("{url}", marker)))
        qtbot.waitUntil(lambda: (marker, False) in told)
    assert opened == []
    assert all(not ok for _url, ok in told)
    for shown, _ok in told:
        assert any(
            shown in r.getMessage() and "not opened" in r.getMessage() for r in caplog.records
        )
    assert view.url() == stage_url()


def test_a_click_on_a_link_opens_it_outside_and_says_which(
    view: AvatarView,
    qtbot: Any,
    run_js: RunJs,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(view_module, "open_externally", lambda url: opened.append(url.toString()))
    told: list[tuple[str, bool]] = []
    view.avatar_page.outside_link.connect(lambda url, ok: told.append((url, ok)))
    run_js(
        view,
        "const l = document.createElement('a'); l.href = 'https://example.org/docs';"
        " l.textContent = 'docs'; l.id = 'link';"
        " l.style = 'position:fixed; inset:0; z-index:10; display:block';"
        " document.body.append(l);",
    )
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: run_js(view, "document.getElementById('link') !== null"))
    target = view.focusProxy()
    assert target is not None
    with caplog.at_level(logging.INFO, logger="avaturn.web"):
        qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=target.rect().center())
        qtbot.waitUntil(lambda: opened == ["https://example.org/docs"])
    assert told == [("https://example.org/docs", True)]
    assert any(
        "Opening https://example.org/docs in your browser" in r.getMessage() for r in caplog.records
    )
    assert view.url() == stage_url()


def test_a_gesture_is_real_input_and_soon_stale(qtbot: Any) -> None:
    from PySide6.QtCore import QEvent as E
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QWidget

    from avaturn_desktop.ui.web.view import GESTURE_WINDOW_S, GestureWatch

    now = [50.0]
    outer = QWidget()
    qtbot.addWidget(outer)
    watch = GestureWatch(outer, clock=lambda: now[0])
    inner = QWidget(outer)  # added later: watched once polished (before it is shown)
    outer.show()
    qtbot.waitExposed(outer)
    assert not watch.recent()
    # an event that code sends (not from the window system) is no gesture
    from PySide6.QtCore import QPointF
    from PySide6.QtWidgets import QApplication

    fake = QMouseEvent(
        E.Type.MouseButtonRelease,
        QPointF(1, 1),
        QPointF(1, 1),
        Qt.MouseButton.LeftButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(inner, fake)
    assert not watch.recent()
    qtbot.mouseClick(inner, Qt.MouseButton.LeftButton)
    assert watch.recent()
    now[0] += GESTURE_WINDOW_S + 0.01
    assert not watch.recent()
    qtbot.keyClick(outer, Qt.Key.Key_Return)
    assert watch.recent()


def test_page_cannot_read_local_files(view: AvatarView, run_js: RunJs, qtbot: Any) -> None:
    run_js(
        view,
        "window.__fileProbe = 'pending';"
        "fetch('file:///etc/hostname').then(() => { window.__fileProbe = 'read'; },"
        " (e) => { window.__fileProbe = 'refused: ' + e.name; });",
    )
    qtbot.waitUntil(lambda: run_js(view, "window.__fileProbe") != "pending")
    assert run_js(view, "window.__fileProbe").startswith("refused")


def test_scheme_serves_only_files_under_the_web_root(tmp_path: Path) -> None:
    root = tmp_path / "web"
    root.mkdir()
    (root / "stage.html").write_text("<p>hi</p>")
    (tmp_path / "secret.txt").write_text("no")
    assert resolve(root, QUrl("avaturn://stage/stage.html")) == (root / "stage.html").resolve()
    for bad in [
        "avaturn://stage/../secret.txt",
        "avaturn://stage/%2e%2e/secret.txt",
        "avaturn://stage/..%2fsecret.txt",
        "avaturn://other/stage.html",
        "avaturn://stage/",
        "avaturn://stage/missing.js",
        "https://stage/stage.html",
    ]:
        assert resolve(root, QUrl(bad)) is None, bad


def test_missing_resource_is_a_failed_load(
    view: AvatarView, run_js: RunJs, qtbot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="avaturn.web"):
        run_js(
            view,
            "window.__probe = 'pending'; import('avaturn://stage/nope.js').then("
            "() => { window.__probe = 'loaded'; }, () => { window.__probe = 'failed'; });",
        )
        qtbot.waitUntil(lambda: run_js(view, "window.__probe") != "pending")
    assert run_js(view, "window.__probe") == "failed"
    assert any("no such resource avaturn://stage/nope.js" in r.getMessage() for r in caplog.records)


def test_console_goes_to_the_js_logger(
    view: AvatarView, run_js: RunJs, qtbot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="avaturn.js"):
        run_js(view, "console.warn('hello from the stage')")
        qtbot.waitUntil(
            lambda: any("hello from the stage" in r.getMessage() for r in caplog.records)
        )
    record = next(r for r in caplog.records if "hello from the stage" in r.getMessage())
    assert record.name == "avaturn.js"
    assert record.levelno == logging.WARNING


def test_media_permissions_only_for_allowed_origins() -> None:
    kind = QWebEnginePermission.PermissionType
    allowed = {STAGE_ORIGIN, "http://127.0.0.1:8123"}
    assert media_permission_allowed(kind.MediaAudioCapture, STAGE_ORIGIN, allowed)
    assert media_permission_allowed(kind.MediaAudioVideoCapture, "http://127.0.0.1:8123", allowed)
    assert not media_permission_allowed(kind.MediaAudioCapture, "https://evil.example", allowed)
    assert not media_permission_allowed(kind.Geolocation, STAGE_ORIGIN, allowed)
    assert not media_permission_allowed(kind.Notifications, STAGE_ORIGIN, allowed)
    assert not media_permission_allowed(kind.DesktopVideoCapture, STAGE_ORIGIN, allowed)
    assert not media_permission_allowed(kind.MediaAudioCapture, "", allowed)
    assert origin_of("https://api.avaturn.live/x?y") == "https://api.avaturn.live"
    assert origin_of("https://esm.sh:443/@avaturn-live/web-sdk") == "https://esm.sh"
    assert origin_of("http://127.0.0.1:8123/sim/web-sdk.js") == "http://127.0.0.1:8123"
    assert origin_of("not a url") == ""


def test_page_allows_media_origins_it_is_told(make_view: Callable[[], AvatarView]) -> None:
    page = make_view().avatar_page
    assert page.media_origins == {STAGE_ORIGIN}
    page.allow_media_origins(["https://api.avaturn.live", "https://esm.sh/@avaturn-live/x"])
    assert page.media_origins == {STAGE_ORIGIN, "https://api.avaturn.live", "https://esm.sh"}


def test_playback_needs_no_gesture_and_no_file_access(make_view: Callable[[], AvatarView]) -> None:
    from PySide6.QtWebEngineCore import QWebEngineSettings

    settings = make_view().avatar_page.settings()
    attr = QWebEngineSettings.WebAttribute
    assert not settings.testAttribute(attr.PlaybackRequiresUserGesture)
    assert not settings.testAttribute(attr.LocalContentCanAccessFileUrls)
    assert make_view().avatar_page.profile().isOffTheRecord()


def test_shutdown_releases_page_before_profile(
    make_view: Callable[[], AvatarView], qtbot: Any, qtlog: Any
) -> None:
    view = make_view()
    with qtbot.waitSignal(view.bridge.ready_changed, timeout=20_000):
        view.load_stage()
    view.shutdown()
    view.shutdown()  # twice is fine
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert not any("Release of profile" in r.message for r in qtlog.records)


def test_popup_links_open_outside(
    view: AvatarView, qtbot: Any, run_js: RunJs, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(view_module, "open_externally", lambda url: opened.append(url.toString()))
    run_js(
        view,
        "const b = document.createElement('a'); b.href = 'https://example.org/new';"
        " b.target = '_blank'; b.textContent = 'docs'; b.id = 'popup-link';"
        " b.style = 'position:fixed; inset:0; z-index:10; display:block';"
        " document.body.append(b);",
    )
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: run_js(view, "document.getElementById('popup-link') !== null"))
    target = view.focusProxy()
    assert target is not None
    qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=target.rect().center())
    qtbot.waitUntil(lambda: opened == ["https://example.org/new"])
    assert view.avatar_page.user_gesture()
    assert view.url() == stage_url()
