"""The official Web SDK, fetched from npm at test time (never committed), against the simulator.

Its code is proprietary: it is downloaded into the git-ignored ``.cache/`` directory and served
from loopback to a real QtWebEngine page on another origin. It cannot join a WebRTC room here,
so the test does what its session lookup enables: ``task``, ``cancelAllTasks``, ``changeVoice``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QUrl
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile
from PySide6.QtWebEngineWidgets import QWebEngineView

pytestmark = [pytest.mark.web, pytest.mark.npm]

ROOT = Path(__file__).resolve().parents[2]
SDK_PACKAGE = "@avaturn-live/web-sdk@0.3.7"
CACHE = ROOT / ".cache" / "npm" / "web-sdk-0.3.7"

PAGE = """<!doctype html><meta charset="utf-8"><title>official sdk</title>
<div id="root" style="width:320px;height:240px"></div>
<script type="module">
  window.results = {log: []};
  window.sdkReady = import("./main.js").then((m) => { window.AvaturnHead = m.AvaturnHead; });
</script>
"""


def _fetch_sdk() -> Path:
    """``npm pack`` the pinned SDK into the cache once; returns its dist directory."""
    dist = CACHE / "package" / "dist"
    if (dist / "main.js").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the official Web SDK cannot be fetched")
    CACHE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "pack", SDK_PACKAGE, "--silent", "--pack-destination", str(CACHE)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    tarballs = sorted(CACHE.glob("*.tgz"))
    if result.returncode != 0 or not tarballs:
        pytest.skip(f"npm could not fetch {SDK_PACKAGE}: {result.stderr.strip()[:200]}")
    with tarfile.open(tarballs[-1]) as tar:
        tar.extractall(CACHE, filter="data")
    return dist


class _Handler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        # as a CDN does: the stage (another origin) imports the module in CORS mode
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def sdk_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dist = _fetch_sdk()
    site = tmp_path_factory.mktemp("sdk-site")
    shutil.copy(dist / "main.js", site / "main.js")
    (site / "index.html").write_text(PAGE, encoding="utf-8")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(site)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def plain_view(qtbot: Any) -> Iterator[QWebEngineView]:
    """A plain page on its own origin (not the stage: the SDK alone), torn down in order."""
    profile = QWebEngineProfile()
    page = QWebEnginePage(profile)
    view = QWebEngineView()
    view.setPage(page)
    yield view
    view.setPage(QWebEnginePage(view))
    view.close()
    page.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    profile.deleteLater()
    view.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


#: Records the page's Content-Security-Policy violations (none on a plain page).
WATCH_VIOLATIONS = """(() => {
  window.violations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.violations.push(e.effectiveDirective + " " + e.blockedURI);
  });
  return true;
})()"""


def _official_flow(view: QWebEngineView, qtbot: Any, simulator: Any) -> dict[str, Any]:
    """Drive the SDK in ``view`` (``window.AvaturnHead`` must come): session lookup, ``task``,
    ``cancelAllTasks``, ``changeVoice`` (a good voice and a bad one). Returns the results."""
    created = httpx.post(
        f"{simulator.base_url}/api/v1/sessions", headers={"Authorization": "Bearer test"}
    ).json()

    def js(code: str) -> Any:
        with qtbot.waitCallback(timeout=20_000) as callback:
            view.page().runJavaScript(code, 0, callback)
        return callback.args[0]

    def wait_js(condition: str) -> None:
        qtbot.waitUntil(lambda: js(condition) is True, timeout=20_000)

    wait_js("typeof window.AvaturnHead === 'function'")
    setup = {"token": created["token"], "apiHost": simulator.base_url}
    js(
        f"""(() => {{
        const cfg = {json.dumps(setup)};
        const r = window.results;
        const avatar = new window.AvaturnHead(document.getElementById("root"), {{
          sessionToken: cfg.token, apiHost: cfg.apiHost, immediatelyJoin: false, keepAlive: true,
        }});
        window.avatar = avatar;
        // init() looks the session up, then waits for WebRTC video that cannot come here.
        avatar.init({{timeout: 60000}}).catch((e) => r.log.push("init: " + e));
        return true;
      }})()"""
    )
    wait_js("window.avatar.session_id !== ''")
    assert js("window.avatar.session_id") == created["session_id"]
    js(
        """(async () => {
        const r = window.results;
        try {
          r.task = await window.avatar.task("Hello from the official SDK.");
          r.cancel = await window.avatar.cancelAllTasks();
          await window.avatar.changeVoice({engine: "elevenlabs", voice_id: "EXAVITQu4vr4xnSDxMaL"});
          r.voice = "ok";
          try {
            await window.avatar.changeVoice({engine: "elevenlabs", voice_id: "no-such-voice"});
            r.badVoice = "accepted";
          } catch (e) {
            r.badVoice = e.response ? e.response.status : String(e);
          }
        } catch (e) {
          r.error = String(e);
        }
        r.done = true;
      })(); true"""
    )
    wait_js("window.results.done === true")
    results: dict[str, Any] = json.loads(js("JSON.stringify(window.results)"))
    assert "error" not in results, results
    assert results["task"]["task_id"]
    assert isinstance(results["cancel"], dict)
    assert results["voice"] == "ok"
    assert results["badVoice"] == 400
    state = simulator.snapshot()
    (session,) = [s for s in state["sessions"] if s["session_id"] == created["session_id"]]
    assert session["voice_id"] == "EXAVITQu4vr4xnSDxMaL"
    assert [t["text"] for t in session["tasks"]] == ["Hello from the official SDK."]
    js("window.avatar.dispose().catch(() => {}); true")
    results["violations"] = json.loads(js("JSON.stringify(window.violations || [])"))
    return results


def test_official_sdk_task_cancel_and_change_voice(
    simulator: Any, sdk_site: str, plain_view: QWebEngineView, qtbot: Any
) -> None:
    view = plain_view
    with qtbot.waitSignal(view.loadFinished, timeout=20_000) as loaded:
        view.page().load(QUrl(sdk_site))
    assert loaded.args == [True]
    _official_flow(view, qtbot, simulator)


def test_official_sdk_works_in_the_stage_under_its_policy(
    simulator: Any, sdk_site: str, view: Any, qtbot: Any
) -> None:
    """The same flow in the real stage page, under the Content-Security-Policy the app gives
    it for this backend: the SDK's module from its origin, its calls to the service."""
    from avaturn_desktop.ui.web.view import AvatarView
    from tests.web.helpers import use_backend

    assert isinstance(view, AvatarView)
    sdk_url = sdk_site.replace("index.html", "main.js")
    use_backend(view, qtbot, simulator.base_url, sdk_url)
    assert "'unsafe" not in view.avatar_page.policy

    def js(code: str) -> Any:
        with qtbot.waitCallback(timeout=20_000) as callback:
            view.page().runJavaScript(code, 0, callback)
        return callback.args[0]

    js(WATCH_VIOLATIONS)
    js(
        "window.results = {log: []};"
        "const root = document.createElement('div'); root.id = 'root';"
        "document.getElementById('avatar-root').append(root);"
        f"import({json.dumps(sdk_url)}).then((m) => {{ window.AvaturnHead = m.AvaturnHead; }},"
        " (e) => { window.results.importError = String(e); }); true"
    )
    results = _official_flow(view, qtbot, simulator)
    assert results["violations"] == []


def test_the_stage_policy_refuses_the_sdk_from_an_origin_it_was_not_given(
    simulator: Any, sdk_site: str, view: Any, qtbot: Any
) -> None:
    """The check above is a real one: the same import under a policy for another SDK origin
    is refused."""
    from tests.web.helpers import use_backend

    sdk_url = sdk_site.replace("index.html", "main.js")
    use_backend(view, qtbot, simulator.base_url, "https://esm.sh/@avaturn-live/web-sdk@0.3.7")

    def js(code: str) -> Any:
        with qtbot.waitCallback(timeout=20_000) as callback:
            view.page().runJavaScript(code, 0, callback)
        return callback.args[0]

    js(WATCH_VIOLATIONS)
    js(
        "window.outcome = 'pending';"
        f"import({json.dumps(sdk_url)}).then(() => {{ window.outcome = 'loaded'; }},"
        " () => { window.outcome = 'refused'; }); true"
    )
    qtbot.waitUntil(lambda: js("window.outcome") != "pending", timeout=20_000)
    assert js("window.outcome") == "refused"
    assert any("script-src" in v for v in json.loads(js("JSON.stringify(window.violations)")))
