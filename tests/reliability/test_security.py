"""Security: the API key never leaves the Python side, the page stays in its box, and the
simulator listens on loopback unless told otherwise.

The app runs against the simulator as if it were the cloud: the simulator demands a unique
canary key, the app holds it as its API key, a session goes live in the real QtWebEngine page
and speaks. Then every place the key could leak to is searched for the canary: what Python
sent the page, the page's DOM, globals, storage and network requests (both JS worlds), every
log record and the log file, the task-log database, the exports, every file under the app's
data and config dirs, error messages and reprs, and a crash report.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PySide6.QtWebEngineCore import QWebEngineUrlRequestInfo, QWebEngineUrlRequestInterceptor
from PySide6.QtWidgets import QApplication, QMessageBox

from avaturn_desktop import cli, logs
from avaturn_desktop.core import paths
from avaturn_desktop.core.errors import AppError
from avaturn_desktop.core.events import CommandResult
from avaturn_desktop.core.session_state import SessionState
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.core.tasks import TaskState
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.export import ExportFormat, export_log
from avaturn_desktop.simulator import cli as sim_cli
from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer
from avaturn_desktop.ui import crash
from avaturn_desktop.ui.web import view as view_module
from avaturn_desktop.ui.web.scheme import stage_url
from tests.reliability.rig import Rig, until
from tests.reliability.tally import Tally

CANARY = "sk-canary-" + uuid.uuid4().hex
ROOT = Path(__file__).resolve().parents[2]

#: Everything the page's script can reach, as one string (run in each JS world).
PAGE_DUMP_JS = """
(() => {
  const out = {html: document.documentElement.outerHTML, cookie: document.cookie,
               local: {}, session: {}, globals: {}, resources: [], url: location.href};
  try { for (let i = 0; i < localStorage.length; i++) {
    const k = localStorage.key(i); out.local[k] = localStorage.getItem(k); } } catch (e) {}
  try { for (let i = 0; i < sessionStorage.length; i++) {
    const k = sessionStorage.key(i); out.session[k] = sessionStorage.getItem(k); } } catch (e) {}
  try { out.resources = performance.getEntries().map((e) => e.name); } catch (e) {}
  for (const name of Object.getOwnPropertyNames(window)) {
    let value;
    try { value = window[name]; } catch (e) { continue; }
    if (typeof value === "function" || value === window) continue;
    try { out.globals[name] = JSON.stringify(value) ?? String(value); }
    catch (e) { try { out.globals[name] = String(value); } catch (e2) {} }
  }
  return JSON.stringify(out);
})()
"""


class RequestRecorder(QWebEngineUrlRequestInterceptor):
    """Every request the page makes: URL, method and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
        headers = {_text(k): _text(v) for k, v in info.httpHeaders().items()}
        method = _text(info.requestMethod())
        self.seen.append(f"{method} {info.requestUrl().toString()} {headers}")


def _text(data: Any) -> str:
    return data.data().decode("utf-8", "replace") if hasattr(data, "data") else str(data)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def app_logging(tmp_path: Path) -> Iterator[tuple[Capture, Path]]:
    """The app's own logging set-up (console + rotating file under the data dir), captured."""
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    noisy = {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "uvicorn", "asyncio")}
    log_file = logs.setup("DEBUG", paths.data_dir() / "logs")
    assert log_file is not None
    capture = Capture()
    root.addHandler(capture)
    yield capture, log_file
    logs.shutdown()
    for handler in root.handlers[:]:
        if handler not in before[1]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(before[0])
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


def test_the_api_key_reaches_no_page_log_file_or_report(
    loop: asyncio.AbstractEventLoop,
    make_sim: Any,
    tally: Tally,
    app_logging: tuple[Capture, Path],
    monkeypatch: pytest.MonkeyPatch,
    _isolated_home: Path,
) -> None:
    capture, log_file = app_logging
    sim: SimulatorServer = make_sim(api_key=CANARY)
    opened: list[str] = []
    monkeypatch.setattr(view_module, "open_externally", lambda url: opened.append(url.toString()))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    crash.install(CANARY)
    found: dict[str, bool] = {}

    def check(place: str, text: str) -> None:
        leaked = CANARY in text
        tally.checked(place, leaked)
        found[place] = found.get(place, False) or leaked

    async def js(rig: Rig, script: str, world: int) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answered(value: Any) -> None:
            if not done.done():
                done.set_result(value)

        rig.shell.view.page().runJavaScript(script, world, answered)
        return await asyncio.wait_for(done, 10)

    async def scenario() -> None:
        rig = Rig(sim, paths.data_dir() / "tasklog.sqlite3", kind="cloud", api_key=CANARY)
        commands: list[str] = []
        rig.shell.view.bridge.command.connect(commands.append)
        recorder = RequestRecorder()
        rig.shell.view.page().setUrlRequestInterceptor(recorder)
        try:
            await rig.open()
            rig.shell.start_session()  # as the panel does: saves the settings, then starts
            await rig.live()
            assert rig.type_and_queue("Secrets stay home. The key never leaves Python.")
            await until(
                lambda: [r.state for r in rig.rows()] == [TaskState.SPOKEN] * 2, 15, "speech"
            )
            page = rig.shell.view.page()
            for world, name in ((0, "main"), (1, "bridge")):
                dump = await js(rig, PAGE_DUMP_JS, world)
                assert isinstance(dump, str) and "<html" in dump
                check(f"page_{name}_world", dump)
            check("page_commands", "\n".join(commands))
            assert any('"type":"init"' in c.replace(" ", "") for c in commands)
            check("page_requests", "\n".join(recorder.seen))
            assert recorder.seen, "no request of the page was observed"

            # the page stays in its box, with a live session in it
            await js(rig, "location.href = 'https://example.org/elsewhere'; 1", 0)
            await js(rig, "window.open('https://example.org/popup'); 1", 0)
            await js(
                rig,
                "window.__probe = 'pending'; fetch('file:///etc/hostname').then("
                "() => { window.__probe = 'read'; }, (e) => { window.__probe = 'refused'; }); 1",
                0,
            )
            probe: list[Any] = ["pending"]

            async def read_probe() -> None:
                probe[0] = await js(rig, "window.__probe", 0)

            deadline = loop.time() + 10
            while probe[0] == "pending" and loop.time() < deadline:
                await read_probe()
            assert probe[0] == "refused", probe
            assert page.url() == stage_url()
            tally.checked("page_navigation_away", page.url() != stage_url())
            tally.checked("page_file_read", probe[0] != "refused")

            # errors and reprs
            check("reprs", repr(rig.client) + repr(rig.shell.backend) + repr(sim.config))
            await rig.controller.terminate()
        finally:
            rig.shell.view.page().setUrlRequestInterceptor(None)  # type: ignore[arg-type]
            await rig.close()

        # a server that echoes the key back: the message shown must not carry it
        def echo(request: httpx.Request) -> httpx.Response:
            key = request.headers.get("authorization", "")
            return httpx.Response(401, json={"detail": f"bad key {key}"})

        async with httpx.AsyncClient(transport=httpx.MockTransport(echo)) as http:
            client = AvaturnClient(http, api_key=CANARY, base_url="https://api.invalid")
            with pytest.raises(AppError) as refused:
                await client.create_session()
        check("error_messages", refused.value.user_message + str(refused.value))

    loop.run_until_complete(scenario())

    # a crash report: an exception whose message and locals hold the key
    def explode(secret: str) -> None:
        raise RuntimeError(f"something broke while holding {secret}")

    try:
        explode(CANARY)
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox)]
    assert boxes, "the crash hook showed no report"
    check("crash_report", "\n".join(b.detailedText() + b.text() for b in boxes))
    assert any("something broke" in b.detailedText() for b in boxes)
    for box in boxes:
        box.close()

    # exports, through the API and the command line
    exports = _isolated_home / "exports"
    exports.mkdir()
    from avaturn_desktop.services.tasklog import TaskLogStore

    with TaskLogStore(paths.data_dir() / "tasklog.sqlite3") as store:
        for fmt in ExportFormat:
            buffer = io.StringIO()
            assert export_log(store, fmt, buffer) >= 1 or fmt is ExportFormat.SRT
            check("exports", buffer.getvalue())
    for name in ("csv", "jsonl", "srt"):
        out = exports / f"log.{name}"
        assert cli.main(["log", "export", "--format", name, "-o", str(out)]) == 0
        check("exports", out.read_text(encoding="utf-8"))

    check("log_records", "\n".join(capture.lines))
    assert any("avaturn." in line for line in capture.lines)
    logs.flush()  # the file is written on a thread of its own
    check("log_file", log_file.read_text(encoding="utf-8", errors="replace"))
    files = [p for p in _isolated_home.rglob("*") if p.is_file()]
    assert any(p.name == "settings.json" for p in files), files
    for path in files:
        kind = "database" if "tasklog" in path.name else "data_and_config_files"
        check(kind, path.read_bytes().decode("utf-8", errors="replace"))
    assert not any(found.values()), {k: v for k, v in found.items() if v}
    # the page never left the stage; what it tried to open went to the system browser at most
    assert set(opened) <= {"https://example.org/elsewhere", "https://example.org/popup"}


def test_simulator_binds_loopback_by_default(tally: Tally) -> None:
    assert SimulatorConfig().host == "127.0.0.1"
    parser = cli.build_parser()
    args = parser.parse_args(["simulator"])
    assert args.host == "127.0.0.1"
    sim_parser = __import__("argparse").ArgumentParser()
    sim_cli.add_arguments(sim_parser)
    assert sim_parser.parse_args([]).host == "127.0.0.1"
    server = SimulatorServer(SimulatorConfig(port=0))
    server.start()
    try:
        assert server.base_url.startswith("http://127.0.0.1:")
        state = httpx.get(server.base_url + "/_sim/state").json()
        assert "sessions" in state
    finally:
        server.stop()
    tally.checked("simulator_bind", False)


def test_settings_never_hold_the_key(tally: Tally, tmp_path: Path) -> None:
    from avaturn_desktop.core import settings as settings_mod

    raw = json.dumps({"api_key": CANARY, "session": {"api_key": CANARY}})
    (tmp_path / "settings.json").write_text(raw)
    loaded = settings_mod.load(tmp_path)
    settings_mod.save(loaded, tmp_path)
    text = (tmp_path / "settings.json").read_text()
    tally.checked("settings_files", CANARY in text)
    assert CANARY not in text and CANARY not in repr(loaded)


def _process_tree(root: int) -> dict[int, int]:
    """``root`` and every process below it, each with its parent, from ``/proc/<pid>/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = {root: 0}, [root]
    while todo:
        parent = todo.pop()
        for child in children.get(parent, []):
            tree[child] = parent
            todo.append(child)
    return tree


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes()
    except OSError:
        return None  # exited meanwhile, or not readable


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_key_reaches_no_process_environment_or_command_line(
    make_sim: Any, tally: Tally, tmp_path: Path
) -> None:
    """The app started as a user starts it, with the key in its environment: once a session is
    live in the page, neither the app nor any of its QtWebEngine processes (the renderer
    included) has the key in its environment or command line."""
    sim: SimulatorServer = make_sim(api_key=CANARY)
    env = {
        **os.environ,
        "AVATURN_API_KEY": CANARY,
        "AVATURN_DESKTOP_HOME": str(tmp_path / "home"),
        "QT_QPA_PLATFORM": "offscreen",
    }
    command = [
        *(sys.executable, "-m", "avaturn_desktop", "--headless", "--auto-start"),
        *("--api-base", sim.base_url, "--sdk-url", sim.sdk_url, "--log-level", "DEBUG"),
    ]
    app = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: dict[int, tuple[bytes, bytes]] = {}
    renderers: set[int] = set()

    def look() -> None:
        tree = _process_tree(app.pid)
        for pid, parent in tree.items():
            environ, cmdline = _read_proc(pid, "environ"), _read_proc(pid, "cmdline")
            if environ is None or cmdline is None:
                continue
            seen[pid] = (environ, cmdline)
            # A renderer is forked by Chromium's zygote and keeps the zygote's command line
            # (or says --type=renderer): a web engine process whose parent is one too.
            if b"QtWebEngineProcess" in cmdline and (
                b"--type=renderer" in cmdline
                or b"QtWebEngineProcess" in seen.get(parent, (b"", b""))[1]
            ):
                renderers.add(pid)

    try:
        deadline = time.monotonic() + 90
        while not renderers or sim.snapshot()["viewers"] < 1:
            assert app.poll() is None, f"the app exited early ({app.returncode})"
            assert time.monotonic() < deadline, "no live session with a renderer in 90 s"
            look()
            time.sleep(0.1)  # polling a process table: there is no signal to wait on
        look()  # the session is live in the page: every process once more, as it is now
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            output, _ = app.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            app.kill()
            output, _ = app.communicate()
    secret = CANARY.encode()
    engines = [pid for pid, (_env, cmd) in seen.items() if b"QtWebEngineProcess" in cmd]
    assert app.pid in seen and engines, seen.keys()
    assert renderers <= set(engines)
    leaks = {}
    for pid, (environ, cmdline) in seen.items():
        tally.checked("process_environments", secret in environ)
        tally.checked("command_lines", secret in cmdline)
        if secret in environ or secret in cmdline:
            leaks[pid] = cmdline.split(b"\0")[0].decode(errors="replace")
    tally.checked("console_output", CANARY in output)
    assert leaks == {}, f"the key is in the environment or command line of {leaks}"
    assert CANARY not in output
    # the app did hold the key: the simulator refuses any other, and a session went live
    assert "session" in output.lower()
    assert any(s["viewers_seen"] for s in sim.snapshot()["sessions"])


def test_the_withdrawn_key_stays_with_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from avaturn_desktop.services import secrets

    monkeypatch.setattr(secrets, "_withdrawn", {})
    monkeypatch.setenv(secrets.ENV_VAR, f"  {CANARY} ")
    monkeypatch.setenv(secrets.LLM_ENV_VAR, f"llm-{CANARY}")
    assert secrets.withdraw_from_environment() is True
    assert secrets.withdraw_from_environment(secrets.LLM_ENV_VAR) is True
    assert secrets.ENV_VAR not in os.environ and secrets.LLM_ENV_VAR not in os.environ
    assert secrets.load_api_key() == (CANARY, "environment")
    assert secrets.load_llm_api_key() == (f"llm-{CANARY}", "environment")
    assert secrets.withdraw_from_environment() is False  # nothing left to take
    assert secrets.load_api_key() == (CANARY, "environment")


#: Events a script in the page's main world forges, each of which the app once acted on: the
#: session ended by the service (the SDK's error, in the simulator's shape and the service's;
#: the avatar disposed; idle), and speech the service never started.
FORGED = [
    {"type": "avatar_started_speaking_phrase", "phrase_id": "forged-1", "at_ms": 1},
    {"type": "avatar_started_speaking", "at_ms": 1},
    {"type": "avatar_ended_speaking_phrase", "phrase_id": "forged-1", "at_ms": 2},
    {"type": "avatar_ended_speaking", "at_ms": 2},
    {"type": "sdk_error", "code": "session_ended", "message": "forged"},
    {"type": "sdk_error", "code": "session_terminated", "reason": "terminated"},
    {"type": "sdk_error", "code": "internal_error", "kind": "session_lifecycle_error"},
    {"type": "sdk_error", "code": "user_absent_timeout"},
    {"type": "disposed", "reason": "terminated"},
    {"type": "idle"},
]

#: The old relay's way in (a window CustomEvent), then the new one's (a port of one's own).
FORGE_JS = """(() => {
  const forged = %s;
  for (const event of forged) {
    const text = JSON.stringify(event);
    window.dispatchEvent(new CustomEvent("avaturn:page-to-host", {detail: text}));
    const channel = new MessageChannel();
    window.postMessage("avaturn:port", "*", [channel.port2]);
    channel.port1.postMessage(text);
    window.dispatchEvent(new CustomEvent("avaturn:connect"));
  }
  return forged.length;
})()"""


def test_forged_page_events_end_no_session_and_speak_no_line(
    loop: asyncio.AbstractEventLoop, make_sim: Any, ledger: Any, tmp_path: Path
) -> None:
    """A live session in the real page, a line the service has not taken yet (its request is
    held by the service's latency): events forged in the page's main world neither end the
    session nor move the line. Once the service takes the line, it is spoken as usual."""
    sim: SimulatorServer = make_sim()
    settings = Settings()
    settings = settings.model_copy(update={"keep_alive": False})  # so idle could end it

    async def js(rig: Rig, script: str) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        rig.shell.view.page().runJavaScript(script, 0, lambda v: done.done() or done.set_result(v))
        return await asyncio.wait_for(done, 10)

    async def round_trip(rig: Rig) -> None:
        """Everything the page posted before now has reached the app: a command the page does
        not know comes back answered, after it."""
        answered = asyncio.Event()
        bridge = rig.shell.view.bridge

        def on_event(event: Any) -> None:
            if isinstance(event, CommandResult) and event.ref == 987_654:
                answered.set()

        bridge.event_received.connect(on_event)
        try:
            bridge.command.emit('{"type": "no_such_command", "ref": 987654}')
            await asyncio.wait_for(answered.wait(), 10)
        finally:
            bridge.event_received.disconnect(on_event)

    async def scenario() -> None:
        rig = Rig(sim, tmp_path / "log.sqlite3", settings=settings)
        rig.controller.keep_alive = False
        try:
            await rig.open()
            session_id = await rig.start()
            rig.set_faults(latency_ms=4000)
            assert rig.type_and_queue("Held back by a slow service.")
            await until(lambda: len(rig.rows()) == 1, 5, "the line in the log")
            assert await js(rig, FORGE_JS % json.dumps(FORGED)) == len(FORGED)
            await round_trip(rig)
            (row,) = rig.rows()
            ledger.inject("page event forged in the main world", len(FORGED))
            assert rig.controller.state is SessionState.LIVE
            assert (row.state, row.task_id) == (TaskState.QUEUED, None)
            assert (await rig.sim_session(session_id))["state"] != "ended"
            rig.set_faults()
            await until(lambda: rig.rows()[0].state is TaskState.SPOKEN, 20, "the line spoken")
            assert rig.rows()[0].task_id
            assert rig.controller.state is SessionState.LIVE
            await rig.controller.terminate()
        finally:
            await rig.close()

    loop.run_until_complete(scenario())
