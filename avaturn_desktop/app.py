"""The composition root: start-up, the object graph, and shutdown in the right order."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avaturn_desktop import logs, qtenv
from avaturn_desktop.core import paths
from avaturn_desktop.core.backend import Backend

if TYPE_CHECKING:
    import asyncio  # imported where it is used: not before the window is on screen

    from avaturn_desktop import prestart
    from avaturn_desktop.control.server import ControlServer
    from avaturn_desktop.core import settings as settings_mod
    from avaturn_desktop.services.runtime import Runtime
    from avaturn_desktop.simulator.child import ChildSimulator
    from avaturn_desktop.simulator.server import SimulatorServer
    from avaturn_desktop.ui.main_window import MainWindow
    from avaturn_desktop.ui.shell import Shell

log = logging.getLogger("avaturn.app")

#: The key the app hands its own in-process simulator (it accepts any non-empty key).
SIMULATOR_KEY = "local-simulator"

__all__ = ["Backend", "LaunchOptions", "assemble", "choose_backend", "main", "run"]


def choose_backend(
    args: argparse.Namespace, settings: settings_mod.Settings, api_key: str | None
) -> Backend | None:
    """The backend from flags, settings and the key; None means: start the simulator."""
    sdk_url = args.sdk_url or settings.sdk_url
    if args.simulator:
        return None
    if args.api_base:
        return Backend("external", args.api_base.rstrip("/"), sdk_url, api_key or SIMULATOR_KEY)
    if settings.backend == "simulator" or not api_key:
        return None
    return Backend("cloud", settings.api_base, sdk_url, api_key)


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.headless:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    elif not qtenv.display_available():
        print(  # noqa: T201 (before logging and Qt: one plain line for the user)
            "avaturn-desktop: no display found (DISPLAY and WAYLAND_DISPLAY are unset). Run it "
            "in a desktop session, under xvfb-run, or with --headless.",
            file=sys.stderr,
        )
        return 2
    missing = qtenv.missing_packages()
    if missing:
        print(  # noqa: T201 (before logging and Qt: one plain line for the user)
            "avaturn-desktop: Qt needs system libraries that are missing here; install them "
            f"first: sudo apt install {' '.join(missing)}",
            file=sys.stderr,
        )
        return 3
    notes = qtenv.prepare_environment()
    notes += qtenv.scrub_secrets()  # before Qt (or anything else) starts a child process
    log_file = logs.setup(args.log_level, paths.data_dir() / "logs")
    for note in notes:
        log.info("%s", note)
    log.info("Log file: %s", log_file)

    from avaturn_desktop import instance

    data = paths.data_dir()
    lock = instance.InstanceLock(data)
    if not lock.acquire():
        return _second_start(data, lock)
    try:
        return _main_staged(args, started, data)
    finally:
        lock.release()


def _main_staged(args: argparse.Namespace, started: float, data: Path) -> int:
    # Stage 1: the window, with Qt alone imported. Its frame (menus, status bar, every dock at
    # its size) is painted before the services, the settings' models, the keyring, the event
    # loop's glue or the web engine's view exist; the shell fills it after.
    from PySide6.QtWidgets import QApplication

    from avaturn_desktop.ui.pyside_import import drop_feature_import

    drop_feature_import()  # before the app's own modules: see ``ui.pyside_import``
    from avaturn_desktop.ui import qtlog
    from avaturn_desktop.ui.web.scheme import register_schemes

    qtlog.install()
    register_schemes()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    app.setApplicationName("Avaturn Desktop")
    app.setOrganizationName("Avaturn Desktop")
    app.setDesktopFileName("avaturn-desktop")
    app.setQuitOnLastWindowClosed(False)
    from avaturn_desktop.ui.gui_priority import raise_gui_thread

    raise_gui_thread()  # where allowed, as the web engine's display threads
    frame = None
    if not args.kiosk:  # a kiosk shows the stage alone, full screen, once it is built
        frame = _show_frame()
        if args.exit_after == "shown":
            _report("window shown", started)

    # Stage 2: the rest, while the window is on screen. First the built-in simulator, when
    # this run will very probably use it (see ``prestart``): its half second of start-up then
    # runs beside the settings, the key lookup and the build, on the other core. Not before
    # the frame: on a loaded machine its imports slowed the window's first paint (0.26 to
    # 0.44 s in interleaved runs), for a few hundredths of a second won on the session.
    from avaturn_desktop import prestart
    from avaturn_desktop.services import secrets as app_secrets

    early = prestart.spawn_if_likely(
        args, paths.config_dir(), data, env_key=app_secrets.has_environment_key()
    )
    try:
        return _main_rest(args, started, data, app, frame, early)
    except BaseException:
        if early is not None:
            early.child.kill()  # killed twice at worst: the app's teardown stopped it already
        raise


def _main_rest(
    args: argparse.Namespace,
    started: float,
    data: Path,
    app: Any,
    frame: MainWindow | None,
    early: prestart.EarlyChild | None,
) -> int:
    """Stage 2 after the simulator's early start: the settings, the key, the backend, the
    event loop and the app's life (:func:`run`)."""
    from avaturn_desktop import instance, prestart

    # httpx imports its command-line tool at import time when click, rich and pygments are
    # installed (a development environment has them): ~70 ms the app never uses. A None entry
    # makes that one import fail, which httpx expects (its ``main`` then says to install
    # ``httpx[cli]``); nothing else of httpx changes.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from avaturn_desktop.core import settings as settings_mod
    from avaturn_desktop.services.secrets import load_api_key

    settings = settings_mod.load(paths.config_dir())
    api_key, source = load_api_key()
    backend = choose_backend(args, settings, api_key)
    child = _simulator_child(backend, settings, early)
    prestart.remember(data, "simulator" if backend is None else backend.kind)

    import asyncio

    import qasync

    from avaturn_desktop.ui import crash

    crash.install(api_key)
    if api_key:
        log.info("API key found in the %s", source)

    from avaturn_desktop.ui.gc_guard import MainThreadCollector

    collector = MainThreadCollector(parent=app)
    collector.start()
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        options = LaunchOptions(
            settings=settings,
            backend=backend,
            config_dir=paths.config_dir(),
            data_dir=data,
            control_port=args.control_port,
            control_host=args.control_host or "127.0.0.1",
            kiosk=args.kiosk,
            script=Path(args.script) if args.script else None,
            child_simulator=child,
            say=tuple(args.say),
            window=frame,
        )
        return runner.run(
            run(
                app,
                options,
                auto_start=args.auto_start or args.exit_after in ("live", "first-word"),
                exit_after=args.exit_after,
                started=started,
                headless=args.headless,
                instance_name=instance.server_name(data),
            )
        )


def _simulator_child(
    backend: Backend | None, settings: settings_mod.Settings, early: prestart.EarlyChild | None
) -> tuple[ChildSimulator, str] | None:
    """The built-in simulator's child process and key when the run uses it (None: another
    backend). The one spawned early is kept when it was started with the settings' flags.

    The child runs in its own process so that its imports, memory and interpreter lock are
    not the window's. It dies with the app, even on kill -9; its key is new each run and never
    on a command line. Its socket is bound by the app: its URL is known at once.
    """
    from avaturn_desktop import prestart

    wanted = prestart.child_args(settings.llm.sim_tokens_per_second)
    if early is not None:
        if backend is None and early.args == wanted and early.child.running:
            return early.child, early.key
        log.info(
            "The simulator started early (pid %d) is not used by this run: ended",
            early.child.pid,
        )
        early.child.kill()
    if backend is not None:
        return None
    import secrets

    from avaturn_desktop.simulator.child import start_child

    key = secrets.token_urlsafe(24)
    return start_child(api_key=key, extra_args=wanted, prebind=True), key


def _default_settings() -> settings_mod.Settings:
    from avaturn_desktop.core.settings import Settings

    return Settings()


def _show_frame() -> MainWindow:
    """The main window's frame, shown, once it is on screen (its first expose)."""
    from PySide6.QtCore import QEventLoop, QTimer

    from avaturn_desktop.ui.main_window import ExposeWatch, MainWindow

    frame = MainWindow()
    frame.show()
    frame.winId()
    handle = frame.windowHandle()
    if handle is not None and not handle.isExposed():
        wait = QEventLoop()
        watch = ExposeWatch(wait.quit, handle)
        QTimer.singleShot(5000, wait.quit)  # never hang start-up on a platform that is late
        wait.exec()
        handle.removeEventFilter(watch)
    return frame


@dataclass
class LaunchOptions:
    """What a start of the app is asked for: the same for the command line, tests, the bench
    and the screenshot script (they all build the app through :func:`assemble`)."""

    settings: settings_mod.Settings = field(default_factory=_default_settings)
    #: None: start the built-in simulator (the offline default).
    backend: Backend | None = None
    #: Where the settings are saved when changed (None: kept in memory only).
    config_dir: Path | None = None
    #: The data directory (task log, control.json, the control token); default: the app's.
    data_dir: Path | None = None
    #: The control API's port (0: a free one); None: off unless the settings turn it on.
    control_port: int | None = None
    control_host: str = "127.0.0.1"
    kiosk: bool = False
    #: httpx event hooks on the runtime's client (the bench times requests with them).
    http_hooks: dict[str, list[Callable[..., Any]]] | None = None
    #: The HTTP transport (tests count or break requests with their own).
    http_transport: Any = None
    #: How often the client retries a call that is safe to retry.
    max_retries: int = 3
    #: A script to open in the cue list at start (``--script FILE``).
    script: Path | None = None
    #: The built-in simulator already started as a child process, and its key (``main``
    #: starts it before Qt); None with no backend: an in-process one, for tests and tools.
    child_simulator: tuple[ChildSimulator, str] | None = None
    #: Texts to queue at start (``--say``), spoken once a session is live.
    say: tuple[str, ...] = ()
    #: The main window's frame, already on screen (``main`` shows it before it imports the
    #: services); None: the shell makes it.
    window: MainWindow | None = None


@dataclass
class Assembled:
    """The app, built: the runtime and its two doors (and the simulator it started, if any)."""

    runtime: Runtime
    shell: Shell
    control: ControlServer | None = None
    simulator: SimulatorServer | None = None
    data_dir: Path | None = None


def build(options: LaunchOptions) -> Assembled:
    """The runtime over its backend (starting the simulator when there is none) and the
    window over the runtime; the control API is opened by :func:`open_doors`."""
    from avaturn_desktop.services.runtime import Runtime
    from avaturn_desktop.services.settings_store import SettingsStore
    from avaturn_desktop.services.tasklog import DEFAULT_FILE_NAME, TaskLogStore
    from avaturn_desktop.ui.shell import Shell

    data = options.data_dir or paths.data_dir()
    simulator: SimulatorServer | None = None
    backend = options.backend
    closers: list[Callable[[], Any]] = []
    if backend is None and options.child_simulator is not None:
        child, key = options.child_simulator
        if child.address is not None and child.address_sdk_url is not None:
            # its socket is bound: requests wait in its backlog until it serves (see assemble)
            backend = Backend("simulator", child.address, child.address_sdk_url, key)
        else:
            child.wait_ready()  # started before Qt: normally up already (see assemble)
            backend = Backend("simulator", child.base_url, child.sdk_url, key)
        closers.append(child.stop)
        log.info("No API key: the local simulator runs at %s (pid %d)", backend.api_base, child.pid)
    elif backend is None:
        import secrets

        from avaturn_desktop.simulator.llm import LlmConfig
        from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

        llm = LlmConfig(tokens_per_second=options.settings.llm.sim_tokens_per_second)
        key = secrets.token_urlsafe(24)
        simulator = SimulatorServer(SimulatorConfig(port=0, llm=llm, api_key=key))
        simulator.start()
        backend = Backend("simulator", simulator.base_url, simulator.sdk_url, key)
        closers.append(simulator.stop)
        log.info("No API key: running the local simulator at %s", simulator.base_url)
    log.info("Using %r", backend)
    runtime = Runtime.open(
        backend=backend,
        settings=SettingsStore(options.settings, options.config_dir),
        store=TaskLogStore(data / DEFAULT_FILE_NAME),
        kiosk=options.kiosk,
        http_hooks=options.http_hooks,
        http_transport=options.http_transport,
        max_retries=options.max_retries,
        data_dir=data,
        on_close=closers,
    )
    shell = Shell(runtime, window=options.window)
    return Assembled(runtime, shell, simulator=simulator, data_dir=data)


async def open_doors(app: Assembled, options: LaunchOptions) -> None:
    """Open the script asked for, then the control API when asked for (flag, or the
    settings' switch)."""
    if options.script is not None:
        from avaturn_desktop.core.errors import AppError

        try:
            app.runtime.slot(0).cues.load_path(options.script)
        except AppError as exc:
            app.runtime.notices.error(f"The script was not opened: {exc.user_message}")
    port = options.control_port
    if port is None and (options.settings.control_enabled or options.kiosk):
        port = options.settings.control_port
    if port is not None:
        assert app.data_dir is not None
        app.control = await _open_control(
            app.runtime, app.shell, app.data_dir, port, options.control_host
        )


async def teardown(app: Assembled) -> None:
    """In order: the control API stops taking calls, the runtime ends its sessions and queues
    (the page is still there for them), the window's Qt side goes, then the HTTP pool, the
    task log and the simulator close."""
    if app.control is not None:
        await app.control.stop()
    try:
        await app.runtime.stop()
    finally:
        app.shell.close()
        await app.runtime.close()


@contextlib.asynccontextmanager
async def assemble(options: LaunchOptions) -> AsyncIterator[Assembled]:
    """:func:`build`, :func:`open_doors`, and :func:`teardown` on the way out.

    A child simulator whose socket was bound before the spawn is not waited for: the window
    is built meanwhile, and a child that fails to come up is reported in the window.
    """
    import asyncio

    child = None if options.child_simulator is None else options.child_simulator[0]
    if child is not None and child.address is None:
        try:
            async with asyncio.timeout(30):
                await child.started()  # without blocking the loop
        except BaseException:
            child.stop()
            raise
    try:
        app = build(options)
    except BaseException:
        if child is not None:
            child.stop()
        raise
    watch = None
    if child is not None and child.address is not None:
        watch = asyncio.ensure_future(_watch_child(child, app.runtime))
    try:
        await open_doors(app, options)
        yield app
    finally:
        if watch is not None:
            watch.cancel()
        await teardown(app)


async def _watch_child(child: ChildSimulator, runtime: Runtime) -> None:
    """Say in the window when the built-in simulator does not come up (sessions would fail)."""
    import asyncio

    from avaturn_desktop.simulator.child import ChildSimulatorError

    try:
        async with asyncio.timeout(30):
            await child.started()
    except (ChildSimulatorError, TimeoutError) as exc:
        runtime.notices.error(  # logged there too
            f"The built-in simulator did not start ({exc}); sessions cannot be created. "
            "Restart the app; if it happens again, see the log file."
        )


async def _open_control(
    runtime: Runtime, shell: Shell, data: Path, port: int, host: str
) -> ControlServer | None:
    from avaturn_desktop.control.server import ControlServer

    control = ControlServer(runtime, data_dir=data, port=port, host=host)
    try:
        await control.start()
    except OSError as exc:
        if not runtime.kiosk or port == 0:
            runtime.notices.error(
                f"The control API could not listen on {host}:{port} ({exc.strerror}); "
                "it is off for this run."
            )
            return None
        # a kiosk is always reachable: another port, said in the log and control.json
        runtime.notices.warning(
            f"The control API could not listen on {host}:{port} ({exc.strerror}); "
            "it took a free port instead (see control.json)."
        )
        control = ControlServer(runtime, data_dir=data, port=0, host=host)
        await control.start()
    shell.window.show_control(control.url, exposed=control.exposed)
    shell.control_url = control.url
    if control.exposed:
        runtime.notices.warning(
            f"The control API listens on {host}: it is reachable from the network."
        )
    return control


async def run(
    app: object,
    options: LaunchOptions,
    *,
    auto_start: bool = False,
    exit_after: str | None = None,
    started: float | None = None,
    headless: bool = False,
    instance_name: str | None = None,
) -> int:
    """The app's life: assemble, show, offer leftovers, wait for quit, tear down in order."""
    import asyncio

    async with assemble(options) as parts:
        shell = parts.shell
        _close_on_signals(shell.window)
        if instance_name is not None:
            from avaturn_desktop.ui.single import FrontDoor

            FrontDoor(instance_name, shell.window)
        if options.kiosk:
            shell.enter_kiosk()
        else:
            shell.show()
        if exit_after == "shown":
            await shell.wait_exposed()
            if options.window is None:  # else main said so at the frame's first expose
                _report("window shown", started)
            shell.window.paint_now()  # the panels in place and painted
            _report("window filled", started)
            shell.window.close()
        await shell.offer_orphans(ask=not headless and not options.kiosk)
        if options.kiosk:
            for slot in parts.runtime.slots:
                slot.supervise()
        elif auto_start:
            shell.start_session()
        first_word = _say_at_start(parts, options.say)
        from avaturn_desktop.ui.gc_guard import MainThreadCollector

        # Start-up is done: freeze what it made, in the next loop turn, so that the session's
        # first request is on its way (its answer is awaited meanwhile) rather than behind it.
        asyncio.get_running_loop().call_soon(MainThreadCollector.freeze_long_lived)
        if exit_after == "first-word":
            if first_word is None:
                _report("nothing to say (give --say TEXT)", None)
            else:
                await first_word
                _report("first word", started)
            shell.window.close()
        if exit_after == "live":
            ok = await shell.wait_live_or_failed()
            _report("session live" if ok else "session failed", started)
            shell.window.close()
        await shell.wait_closed()
    log.info("Bye")
    return 0


def _say_at_start(parts: Assembled, texts: tuple[str, ...]) -> asyncio.Future[None] | None:
    """Queue ``--say`` texts on the first slot (held until a session is live); the future is
    done when the first of them starts speaking."""
    if not texts:
        return None
    import asyncio

    from avaturn_desktop.core.errors import AppError
    from avaturn_desktop.core.queue import ItemState

    slot = parts.runtime.slot(0)
    speaking: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    first: set[int] = set()

    def on_change(change: Any) -> None:
        item = change.item
        started = item is not None and item.state is ItemState.SPEAKING
        if started and item.item_id in first and not speaking.done():
            speaking.set_result(None)

    unsubscribe = slot.queue.subscribe(on_change)
    speaking.add_done_callback(lambda _f: unsubscribe())
    for text in texts:
        try:
            batch = slot.speaker.say(text)
        except AppError as exc:
            parts.runtime.notices.warning(f"--say was not queued: {exc.user_message}")
            continue
        if not first:
            first.update(item.item_id for item in batch.items[:1])
    return speaking


def _close_on_signals(window: Any) -> None:
    """SIGTERM / SIGINT close the window: the session is ended and the app quits cleanly."""
    import signal

    from PySide6.QtCore import QTimer

    def close(signum: int, _frame: object) -> None:
        log.info("Signal %s: closing", signal.Signals(signum).name)
        QTimer.singleShot(0, window.close)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, close)
    # Python runs signal handlers only between bytecodes: wake it up now and then.
    heartbeat = QTimer(window)
    heartbeat.setInterval(250)
    heartbeat.timeout.connect(lambda: None)
    heartbeat.start()


def _second_start(data: Path, lock: Any) -> int:
    """Another app runs on this data directory: bring it to the front, say so, exit 0."""
    from avaturn_desktop import instance

    pid = lock.owner_pid()
    who = f" (pid {pid})" if pid else ""
    reached = False
    try:
        from PySide6.QtCore import QCoreApplication

        from avaturn_desktop.ui.single import knock

        _core = QCoreApplication.instance() or QCoreApplication([sys.argv[0]])
        reached = knock(instance.server_name(data))
    except Exception:  # Qt missing pieces: the message below still holds
        log.debug("Could not reach the running app", exc_info=True)
    front = "; its window was brought to the front" if reached else ""
    print(  # noqa: T201 (the one line a second start prints)
        f"avaturn-desktop: already running for {data}{who}{front}. Use "
        "'avaturn-desktop ctl ...' to drive it.",
        flush=True,
    )
    return 0


def _report(what: str, started: float | None) -> None:
    if started is not None:
        print(f"{what} after {time.perf_counter() - started:.3f} s", flush=True)  # noqa: T201
