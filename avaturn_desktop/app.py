"""The composition root: start-up, the object graph, and shutdown in the right order."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from avaturn_desktop import logs, qtenv
from avaturn_desktop.core import paths
from avaturn_desktop.core import settings as settings_mod

if TYPE_CHECKING:
    from avaturn_desktop.simulator.server import SimulatorServer

log = logging.getLogger("avaturn.app")

#: The key the app hands its own in-process simulator (it accepts any non-empty key).
SIMULATOR_KEY = "local-simulator"


@dataclass(frozen=True)
class Backend:
    """Where sessions are made: the cloud with the user's key, or a simulator."""

    kind: str  # "cloud" | "simulator" | "external"
    api_base: str
    sdk_url: str
    api_key: str

    @property
    def label(self) -> str:
        if self.kind == "cloud":
            return "Backend: Avaturn cloud"
        if self.kind == "simulator":
            return "Backend: local simulator (no API key; nothing leaves this machine)"
        return f"Backend: {self.api_base}"

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"Backend(kind={self.kind!r}, api_base={self.api_base!r})"


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

    from avaturn_desktop.services.secrets import load_api_key

    settings = settings_mod.load(paths.config_dir())
    api_key, source = load_api_key()
    backend = choose_backend(args, settings, api_key)

    import qasync
    from PySide6.QtWidgets import QApplication

    from avaturn_desktop.ui import crash, qtlog
    from avaturn_desktop.ui.web.scheme import register_schemes

    qtlog.install()
    register_schemes()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    app.setApplicationName("Avaturn Desktop")
    app.setOrganizationName("Avaturn Desktop")
    app.setDesktopFileName("avaturn-desktop")
    app.setQuitOnLastWindowClosed(False)
    crash.install(api_key)
    if api_key:
        log.info("API key found in the %s", source)

    from avaturn_desktop.ui.gc_guard import MainThreadCollector

    collector = MainThreadCollector(parent=app)
    collector.start()
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        return runner.run(
            run(
                app,
                settings,
                backend,
                auto_start=args.auto_start or args.exit_after == "live",
                exit_after=args.exit_after,
                started=started,
                headless=args.headless,
            )
        )


async def run(
    app: object,
    settings: settings_mod.Settings,
    backend: Backend | None,
    *,
    auto_start: bool = False,
    exit_after: str | None = None,
    started: float | None = None,
    headless: bool = False,
) -> int:
    """Build the graph, show the window, wait for quit, then shut down in order."""
    import httpx

    from avaturn_desktop.services.client import AvaturnClient
    from avaturn_desktop.services.session import SessionController
    from avaturn_desktop.services.tasklog import TaskLogStore
    from avaturn_desktop.ui.shell import Shell

    simulator: SimulatorServer | None = None
    if backend is None:
        from avaturn_desktop.simulator.server import SimulatorConfig, SimulatorServer

        simulator = SimulatorServer(SimulatorConfig(port=0))
        simulator.start()
        backend = Backend("simulator", simulator.base_url, simulator.sdk_url, SIMULATOR_KEY)
        log.info("No API key: running the local simulator at %s", simulator.base_url)
    log.info("Using %r", backend)

    store = TaskLogStore.open_default()
    http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        timeout=httpx.Timeout(10.0),
    )
    try:
        client = AvaturnClient(http, api_key=backend.api_key, base_url=backend.api_base)
        shell = Shell(settings=settings, backend=backend, client=client, store=store)
        controller: SessionController = shell.controller
        _close_on_signals(shell.window)
        shell.show()
        from avaturn_desktop.ui.gc_guard import MainThreadCollector

        MainThreadCollector.freeze_long_lived()
        if exit_after == "shown":
            await shell.wait_exposed()
            _report("window shown", started)
            shell.window.close()
        await shell.offer_orphans(ask=not headless)
        if auto_start:
            shell.start_session()
        if exit_after == "live":
            ok = await shell.wait_live_or_failed()
            _report("session live" if ok else "session failed", started)
            shell.window.close()
        await shell.wait_closed()
        await controller.shutdown()
        await shell.shutdown()
    finally:
        await http.aclose()
        store.close()
        if simulator is not None:
            simulator.stop()
    log.info("Bye")
    return 0


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


def _report(what: str, started: float | None) -> None:
    if started is not None:
        print(f"{what} after {time.perf_counter() - started:.3f} s", flush=True)  # noqa: T201
