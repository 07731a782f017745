"""The simulated Web SDK in a real Chromium page served from another origin."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

pytest.importorskip("PySide6.QtWebEngineWidgets")

from PySide6.QtCore import QCoreApplication, QEvent, QUrl
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineSettings
from PySide6.QtWebEngineWidgets import QWebEngineView

from avaturn_desktop.core.catalog import VOICES
from avaturn_desktop.simulator.server import FaultConfig

pytestmark = pytest.mark.web

AUTH = {"Authorization": "Bearer k"}

# The page under test: imports the SDK module from the simulator (a cross-origin import) and
# reports everything through console.log as JSON, which the test page object collects.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>sim sdk</title></head>
<body><div id="root" style="width: 320px; height: 320px"></div>
<script type="module">
const report = (kind, data = null) => console.log(JSON.stringify({ kind, data }));
const EVENTS = [
  "avatar_started_speaking", "avatar_ended_speaking",
  "avatar_started_speaking_phrase", "avatar_ended_speaking_phrase",
  "error", "dispose", "init", "idle",
];
window.harness = {
  async start(sdkUrl, apiHost, sessionToken, extra = {}) {
    try {
      const { AvaturnHead } = await import(sdkUrl);
      const root = document.getElementById("root");
      const avatar = new AvaturnHead(root, { sessionToken, apiHost, ...extra });
      window.avatar = avatar;
      for (const name of EVENTS) {
        avatar.on(name, (payload) => report("event", { name, payload }));
      }
      const first = avatar.init({ timeout: 10000 });
      const second = avatar.init({ timeout: 10000 });
      await Promise.all([first, second]);
      report("inited", {
        same: first === second,
        inited: avatar.inited,
        session_id: avatar.session_id,
        drawn: root.children.length,
        stream: avatar.mediaStream instanceof MediaStream,
      });
    } catch (error) {
      report("failed", String((error && error.message) || error));
    }
  },
  async call(name, ...args) {
    try {
      const value = await window.avatar[name](...args);
      report("result", { name, value: value === undefined ? null : value });
    } catch (error) {
      const status = error && error.response ? error.response.status : null;
      report("rejected", { name, status, message: String((error && error.message) || error) });
    }
  },
  // What the audience would see and hear, sampled from the SDK's own mediaStream over `ms`:
  // its tracks, the loudest and the last RMS of its sound, the mean brightness of its picture
  // at the end and how much the picture changed over the last 400 ms (mean absolute difference
  // per channel, 0..255). The end of the window counts: a fault set just before it may reach
  // the page a moment after it began.
  async media(ms) {
    const stream = window.avatar.mediaStream;
    const video = document.createElement("video");
    video.muted = true;
    video.srcObject = new MediaStream(stream.getVideoTracks());
    await video.play();
    const canvas = document.createElement("canvas");
    canvas.width = 32;
    canvas.height = 32;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    const sample = () => {
      g.drawImage(video, 0, 0, 32, 32);
      return g.getImageData(0, 0, 32, 32).data;
    };
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    const audio = stream.getAudioTracks();
    if (audio.length) {
      context.createMediaStreamSource(new MediaStream(audio)).connect(analyser);
    }
    const frames = [[performance.now(), sample()]];
    const buffer = new Float32Array(analyser.fftSize);
    let rms = 0;
    let rmsLast = 0;
    const end = performance.now() + ms;
    while (performance.now() < end) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      analyser.getFloatTimeDomainData(buffer);
      rmsLast = Math.sqrt(buffer.reduce((sum, x) => sum + x * x, 0) / buffer.length);
      rms = Math.max(rms, rmsLast);
      frames.push([performance.now(), sample()]);
    }
    const [lastAt, last] = frames[frames.length - 1];
    const first = frames.find(([at]) => at >= lastAt - 400)[1];
    let luma = 0;
    let diff = 0;
    for (let i = 0; i < last.length; i += 4) {
      luma += (last[i] + last[i + 1] + last[i + 2]) / 3;
      for (let c = 0; c < 3; c += 1) {
        diff += Math.abs(last[i + c] - first[i + c]);
      }
    }
    const pixels = last.length / 4;
    await context.close();
    video.srcObject = null;
    report("media", {
      video_tracks: stream.getVideoTracks().length,
      audio_tracks: audio.length,
      rms,
      rms_last: rmsLast,
      luma: luma / pixels,
      diff: diff / (pixels * 3),
    });
  },
};
report("ready");
</script></body></html>
"""


#: The same harness as a page of the stage: its policy allows no inline script.
HARNESS_JS = re.search(rb'<script type="module">(.*)</script>', PAGE, re.S).group(1)  # type: ignore[union-attr]
STAGE_HARNESS = (
    b'<!doctype html><html><head><meta charset="utf-8"><title>sim sdk</title></head><body>'
    b'<div id="root" style="width: 320px; height: 320px"></div>'
    b'<script type="module" src="harness.js"></script></body></html>'
)


class ConsolePage(QWebEnginePage):
    """Collects the page's JSON console reports (and keeps JS chatter out of Qt's log)."""

    def __init__(self, parent: Any, profile: Any = None) -> None:
        if profile is None:
            super().__init__(parent)
        else:
            super().__init__(profile, parent)
        self.reports: list[dict[str, Any]] = []
        self.other: list[str] = []

    def javaScriptConsoleMessage(self, level: Any, message: str, line: int, source: str) -> None:
        try:
            self.reports.append(json.loads(message))
        except ValueError:
            self.other.append(message)

    def find(self, kind: str, **match: Any) -> dict[str, Any] | None:
        for report in self.reports:
            data = report.get("data") or {}
            if report["kind"] == kind and all(data.get(k) == v for k, v in match.items()):
                return report
        return None

    def has(self, kind: str, **match: Any) -> bool:
        # waitUntil treats a None answer as "passed": conditions must return a real bool.
        return self.find(kind, **match) is not None

    def events(self) -> list[tuple[str, Any]]:
        return [
            (r["data"]["name"], r["data"]["payload"].get("phrase_id"))
            for r in self.reports
            if r["kind"] == "event" and isinstance(r["data"]["payload"], dict)
        ]

    def call(self, function: str, *args: Any) -> None:
        # Arguments go through JSON, never pasted into the script as raw text.
        self.runJavaScript(f"{function}({', '.join(json.dumps(a) for a in args)})")


@pytest.fixture
def page_origin() -> Iterator[str]:
    """A second origin (its own port) serving the test page."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def page(qtbot: Any, page_origin: str) -> Iterator[ConsolePage]:
    view = QWebEngineView()
    page = ConsolePage(view)
    # as the app's stage does: sound plays with nobody to click (the SDK's voice, its video)
    page.settings().setAttribute(QWebEngineSettings.WebAttribute.PlaybackRequiresUserGesture, False)
    view.setPage(page)
    view.resize(400, 400)
    try:
        with qtbot.waitSignal(page.loadFinished, timeout=15_000) as loaded:
            page.load(QUrl(page_origin))
        assert loaded.args == [True]
        qtbot.waitUntil(lambda: page.has("ready"), timeout=10_000)
        yield page
    finally:
        view.close()
        view.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_the_simulated_sdk_in_a_cross_origin_page(qtbot, simulator, page, page_origin):
    sim = simulator
    assert not sim.base_url.startswith(page_origin.rstrip("/"))
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH).json()
    session_id = created["session_id"]

    page.call("harness.start", sim.sdk_url, sim.base_url, created["token"])
    qtbot.waitUntil(lambda: page.has("inited") or page.has("failed"), timeout=15_000)
    assert page.find("failed") is None, page.reports
    inited = page.find("inited")["data"]
    assert inited == {
        "same": True,
        "inited": True,
        "session_id": session_id,
        "drawn": 1,
        "stream": True,
    }
    # Two init() calls, one event channel.
    assert sim.snapshot()["sessions"][0]["viewers"] == 1

    # task() from the page: the events reach the handlers with the official payloads.
    page.call("harness.call", "task", "Hello from the page.")
    qtbot.waitUntil(lambda: page.has("result", name="task"), timeout=10_000)
    task_id = page.find("result", name="task")["data"]["value"]["task_id"]
    qtbot.waitUntil(lambda: ("avatar_ended_speaking", None) in page.events(), timeout=10_000)
    assert page.events()[:4] == [
        ("init", None),
        ("avatar_started_speaking", None),
        ("avatar_started_speaking_phrase", task_id),
        ("avatar_ended_speaking_phrase", task_id),
    ]
    phrase_payload = next(
        r["data"]["payload"]
        for r in page.reports
        if r["kind"] == "event" and r["data"]["name"] == "avatar_started_speaking_phrase"
    )
    assert phrase_payload == {"type": "avatar_started_speaking_phrase", "phrase_id": task_id}

    # cancelAllTasks() cuts a long phrase sent over REST.
    long_id = httpx.post(
        sim.base_url + f"/api/v1/sessions/{session_id}/tasks",
        headers=AUTH,
        json={"text": "x" * 4000},
    ).json()["task_id"]
    qtbot.waitUntil(
        lambda: ("avatar_started_speaking_phrase", long_id) in page.events(), timeout=10_000
    )
    page.call("harness.call", "cancelAllTasks")
    qtbot.waitUntil(lambda: page.has("result", name="cancelAllTasks"), timeout=10_000)
    assert page.find("result", name="cancelAllTasks")["data"]["value"] == {"cancelled": 1}
    qtbot.waitUntil(
        lambda: ("avatar_ended_speaking_phrase", long_id) in page.events(), timeout=5_000
    )

    # changeVoice(): a bad voice is refused with the service's 400, a good one is applied.
    page.call("harness.call", "changeVoice", {"engine": "elevenlabs", "voice_id": "nope"})
    qtbot.waitUntil(lambda: page.has("rejected", name="changeVoice"), timeout=10_000)
    assert page.find("rejected", name="changeVoice")["data"]["status"] == 400
    page.call("harness.call", "changeVoice", {"engine": "elevenlabs", "voice_id": VOICES[4].id})
    qtbot.waitUntil(lambda: page.has("result", name="changeVoice"), timeout=10_000)
    assert sim.snapshot()["sessions"][0]["voice_id"] == VOICES[4].id

    # The backend ends the session: the page hears why, and the SDK disposes itself.
    httpx.delete(sim.base_url + f"/api/v1/sessions/{session_id}", headers=AUTH)
    qtbot.waitUntil(lambda: ("dispose", None) in page.events(), timeout=10_000)
    error = next(
        r["data"]["payload"]
        for r in page.reports
        if r["kind"] == "event" and r["data"]["name"] == "error"
    )
    assert error["code"] == "session_terminated"
    dispose = next(
        r["data"]["payload"]
        for r in page.reports
        if r["kind"] == "event" and r["data"]["name"] == "dispose"
    )
    assert dispose == {"reason": "terminated"}
    assert page.other == []  # no stray console output (uncaught errors would land here)


def test_init_rejects_for_an_ended_session_and_times_out(qtbot, simulator, page):
    sim = simulator
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH).json()
    httpx.delete(sim.base_url + f"/api/v1/sessions/{created['session_id']}", headers=AUTH)
    page.call("harness.start", sim.sdk_url, sim.base_url, created["token"])
    qtbot.waitUntil(lambda: page.has("failed"), timeout=15_000)
    assert "404" in page.find("failed")["data"]


def test_reconnects_after_a_drop_and_disposes_when_idle(qtbot, simulator, page):
    sim = simulator
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH).json()
    # idleTimeoutMs is the simulated SDK's only extra option: the 5 minute timer, shortened.
    page.call("harness.start", sim.sdk_url, sim.base_url, created["token"], {"idleTimeoutMs": 1500})
    qtbot.waitUntil(lambda: page.has("inited") or page.has("failed"), timeout=15_000)
    assert page.has("inited"), page.reports

    def viewers() -> tuple[int, int]:
        session = sim.snapshot()["sessions"][0]
        return session["viewers"], session["viewers_seen"]

    sim.set_faults(FaultConfig(drop_event_channels=True))
    qtbot.waitUntil(lambda: viewers() == (1, 2), timeout=10_000)  # back on a new channel
    assert ("dispose", None) not in page.events()

    qtbot.waitUntil(lambda: ("dispose", None) in page.events(), timeout=10_000)
    names = [name for name, _ in page.events()]
    assert names[-2:] == ["idle", "dispose"]
    dispose = page.reports[-1]["data"]["payload"]
    assert dispose == {"reason": "idle"}
    qtbot.waitUntil(lambda: viewers()[0] == 0, timeout=5_000)  # dispose left the channel
    assert sim.snapshot()["sessions"][0]["end_reason"] is None  # ... but did not end the session


# -- the locked simulator (the app's own: a key, the stage's origin only) ---------------------


@pytest.fixture
def make_stage_page(qtbot: Any, tmp_path: Any) -> Iterator[Callable[..., ConsolePage]]:
    """``make_stage_page(files, page, policy)``: ``files`` served as ``avaturn://stage/<name>``
    (the stage page's own origin, by the app's scheme handler with the Content-Security-Policy
    the app sends for the backend, in a profile of its own), and ``page`` of them loaded."""
    from PySide6.QtWebEngineCore import QWebEngineProfile

    from avaturn_desktop.ui.web.scheme import SCHEME_BYTES, StageSchemeHandler, stage_url

    made: list[tuple[Any, QWebEngineView, ConsolePage]] = []

    def make(files: dict[str, bytes], name: str, policy: str) -> ConsolePage:
        for file_name, data in files.items():
            (tmp_path / file_name).write_bytes(data)
        profile = QWebEngineProfile()
        handler = StageSchemeHandler(root=tmp_path, parent=profile)
        handler.policy = policy
        profile.installUrlSchemeHandler(SCHEME_BYTES, handler)
        view = QWebEngineView()
        page = ConsolePage(view, profile)
        page.settings().setAttribute(
            QWebEngineSettings.WebAttribute.PlaybackRequiresUserGesture, False
        )
        view.setPage(page)
        made.append((profile, view, page))
        with qtbot.waitSignal(page.loadFinished, timeout=15_000) as loaded:
            page.load(stage_url(name))
        assert loaded.args == [True]
        return page

    yield make
    for profile, view, page in made:
        view.setPage(QWebEnginePage(view))
        view.close()
        page.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        profile.deleteLater()
        view.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_the_stage_origin_drives_a_locked_simulator(qtbot, make_sim, make_stage_page):
    sim = make_sim(api_key="in-app-key")
    auth = {"Authorization": "Bearer in-app-key"}
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers=auth).json()
    from avaturn_desktop.ui.web.scheme import stage_policy

    page = make_stage_page(
        {"harness.html": STAGE_HARNESS, "harness.js": HARNESS_JS},
        "harness.html",
        stage_policy(sim.base_url, sim.sdk_url),
    )
    qtbot.waitUntil(lambda: page.has("ready"), timeout=10_000)
    page.call("harness.start", sim.sdk_url, sim.base_url, created["token"])
    qtbot.waitUntil(lambda: page.has("inited") or page.has("failed"), timeout=15_000)
    assert page.find("failed") is None, page.reports
    page.call("harness.call", "task", "Hello from the stage.")
    qtbot.waitUntil(lambda: ("avatar_ended_speaking", None) in page.events(), timeout=10_000)
    page.call("harness.call", "changeVoice", {"engine": "elevenlabs", "voice_id": VOICES[3].id})
    qtbot.waitUntil(lambda: page.has("result", name="changeVoice"), timeout=10_000)
    (session,) = sim.snapshot()["sessions"]
    assert [t["text"] for t in session["tasks"]] == ["Hello from the stage."]
    assert session["voice_id"] == VOICES[3].id


def test_another_page_cannot_use_a_locked_simulator(qtbot, make_sim, page):
    sim = make_sim(api_key="in-app-key")
    auth = {"Authorization": "Bearer in-app-key"}
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers=auth).json()
    # Even with a stolen session token, the module, the API and the channel are refused.
    page.call("harness.start", sim.sdk_url, sim.base_url, created["token"])
    qtbot.waitUntil(lambda: page.has("failed"), timeout=15_000)
    probe = """async (base, id) => {
      const r = {};
      for (const [name, url, init] of [
        ["state", `${base}/_sim/state`, {}],
        ["kill", `${base}/_sim/sessions/${id}/kill`, {method: "POST", mode: "no-cors"}],
        ["task", `${base}/_sdk/v0/sessions/tasks`, {method: "POST", mode: "no-cors",
          body: JSON.stringify({text: "Injected."}), headers: {"Content-Type": "text/plain"}}],
      ]) {
        try { r[name] = (await fetch(url, init)).status; } catch (e) { r[name] = "blocked"; }
      }
      console.log(JSON.stringify({kind: "probe", data: r}));
    }"""
    page.call(f"({probe})", sim.base_url, created["session_id"])
    qtbot.waitUntil(lambda: page.has("probe"), timeout=10_000)
    assert page.find("probe")["data"]["state"] == "blocked"  # the page cannot read the state
    (session,) = sim.snapshot()["sessions"]
    assert session["end_reason"] is None and session["tasks"] == []
    assert session["viewers_seen"] == 0


@pytest.mark.npm
def test_the_official_sdk_from_the_stage_origin_with_a_locked_simulator(
    qtbot, make_sim, make_stage_page
):
    official = pytest.importorskip("tests.web.test_official_sdk")
    dist = official._fetch_sdk()
    sim = make_sim(api_key="in-app-key")
    auth = {"Authorization": "Bearer in-app-key"}
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers=auth).json()
    html = b"""<!doctype html><meta charset="utf-8"><div id="root"></div>
<script type="module" src="official.js"></script>"""
    harness = b"""
  import("./main.js").then(async ({ AvaturnHead }) => {
    const report = (kind, data) => console.log(JSON.stringify({ kind, data }));
    const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
    const avatar = new AvaturnHead(document.getElementById("root"), {
      sessionToken: cfg.token, apiHost: cfg.apiHost, immediatelyJoin: false, keepAlive: true,
    });
    avatar.init({ timeout: 60000 }).catch(() => {});
    while (!avatar.session_id) await new Promise((r) => setTimeout(r, 20));
    try {
      const task = await avatar.task("Hello from the official SDK on the stage.");
      await avatar.changeVoice({ engine: "elevenlabs", voice_id: "EXAVITQu4vr4xnSDxMaL" });
      report("done", { task_id: task.task_id, session_id: avatar.session_id });
    } catch (e) {
      report("failed", String(e));
    }
    avatar.dispose().catch(() => {});
  });
"""
    setup = json.dumps({"token": created["token"], "apiHost": sim.base_url})
    from urllib.parse import quote

    from avaturn_desktop.ui.web.scheme import stage_policy

    page = make_stage_page(
        {"official.html": html, "official.js": harness, "main.js": (dist / "main.js").read_bytes()},
        "official.html#" + quote(setup),
        stage_policy(sim.base_url, "avaturn://stage/main.js"),
    )
    qtbot.waitUntil(lambda: page.has("done") or page.has("failed"), timeout=30_000)
    assert page.find("failed") is None, page.reports
    assert page.find("done")["data"]["session_id"] == created["session_id"]
    (session,) = sim.snapshot()["sessions"]
    assert [t["text"] for t in session["tasks"]] == ["Hello from the official SDK on the stage."]
    assert session["voice_id"] == "EXAVITQu4vr4xnSDxMaL"


def _media(qtbot: Any, page: ConsolePage, ms: int = 800) -> dict[str, Any]:
    page.reports = [r for r in page.reports if r["kind"] != "media"]
    page.call("harness.media", ms)
    qtbot.waitUntil(lambda: page.has("media"), timeout=10_000)
    report = page.find("media")
    assert report is not None
    return dict(report["data"])


def test_the_simulated_sdk_plays_a_real_media_stream_and_its_faults(qtbot, simulator, page):
    """A video track that always moves, a voice heard only while speaking; the simulator's
    media faults freeze the picture, black it out, or mute the voice, and clear again."""
    sim = simulator
    # shown, as the stage is: a hidden page's timers run once a second (Chromium's throttling)
    page.parent().show()
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH).json()
    session_id = created["session_id"]
    page.call("harness.start", sim.sdk_url, sim.base_url, created["token"])
    qtbot.waitUntil(lambda: page.has("inited") or page.has("failed"), timeout=15_000)
    assert page.find("failed") is None, page.reports

    quiet = _media(qtbot, page)
    assert (quiet["video_tracks"], quiet["audio_tracks"]) == (1, 1)
    assert quiet["rms"] < 0.002, quiet  # silent while not speaking
    assert quiet["luma"] > 20 and quiet["diff"] > 0.05, quiet  # a picture, and it moves

    def speak() -> None:
        answer = httpx.post(
            sim.base_url + f"/api/v1/sessions/{session_id}/tasks",
            headers=AUTH,
            json={"text": "x" * 4000},  # ten seconds at 400 characters a second
        )
        assert answer.status_code == 200
        qtbot.waitUntil(lambda: sim.snapshot()["sessions"][0]["speaking"], timeout=5_000)

    speak()
    speaking = _media(qtbot, page)
    assert speaking["rms"] > 0.02, speaking

    sim.set_faults(FaultConfig(audio_fault="mute"))
    muted = _media(qtbot, page)
    assert sim.snapshot()["sessions"][0]["speaking"]
    assert muted["rms_last"] < 0.002 and muted["diff"] > 0.05, muted

    sim.set_faults(FaultConfig(video_fault="freeze"))
    frozen = _media(qtbot, page)
    assert frozen["diff"] == 0 and frozen["luma"] > 20, frozen
    assert frozen["rms_last"] > 0.01, frozen  # the voice is back while the picture stands still

    sim.set_faults(FaultConfig(video_fault="black"))
    black = _media(qtbot, page)
    assert black["luma"] < 1, black

    sim.set_faults(FaultConfig())
    back = _media(qtbot, page)
    assert back["luma"] > 20 and back["diff"] > 0.05, back
    assert page.other == []
