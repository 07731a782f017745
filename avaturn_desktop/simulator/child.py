"""The simulator in a child process: its imports, memory, interpreter lock and garbage
collector are not the window's, and it dies with the app, even when the app is killed.

``start_child()`` spawns ``python -m avaturn_desktop simulator --port 0 ...`` and returns at
once; ``await child.started()`` (or ``child.wait_ready()``) waits for the two lines the
simulator prints once it listens, without holding the caller's loop. Then ``child.base_url``
and ``child.sdk_url`` are known. ``child.stop()`` ends it.

With ``prebind=True`` the caller binds the socket and hands it to the child (``--listen-fd``):
``child.address`` (its base URL) is known at once, and a request made before the child serves
waits in the socket's backlog. The app starts it so: its window is built while the child
imports its server, instead of after.

The API key travels on the child's standard input (``--api-key-stdin``), never on its command
line or in its environment, where other processes could read it; the user's own
``AVATURN_API_KEY`` is taken out of the child's environment too.

How the child follows its parent out, even after ``kill -9``:

* On Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child, right after the fork: the kernel
  kills it when the thread that started it dies. That is why it is only set up when the child
  is started from the main thread (a worker thread that ends would take the child with it).
* Everywhere: the child holds the read end of a pipe on its standard input and stops when it
  reads end-of-file (``--exit-on-stdin-eof``). The kernel closes the parent's end when the
  parent dies, however it dies; ``stop()`` closes it on purpose, for a clean exit.

Qt-free: the app may start it before Qt is even imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from avaturn_desktop.simulator import listen
from avaturn_desktop.simulator.listen import SDK_PATH

__all__ = ["ChildSimulator", "ChildSimulatorError", "start_child"]

log = logging.getLogger("avaturn.simulator")

#: What the child must not inherit: the user's key for the real service, and a key on its way.
SECRET_ENV = ("AVATURN_API_KEY", "AVATURN_SIMULATOR_API_KEY")
_LISTENING = re.compile(r"^Avaturn simulator listening on (http://\S+)$")
_SDK = re.compile(r"^Simulated Web SDK: (http://\S+)$")
_PR_SET_PDEATHSIG = 1


class ChildSimulatorError(RuntimeError):
    """The child simulator did not come up (its exit code and last words are in the message)."""


def _package_root() -> str:
    """The directory holding ``avaturn_desktop``, so the child runs this very code."""
    return str(Path(__file__).resolve().parents[2])


def _child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for name in SECRET_ENV:
        env.pop(name, None)
    root = _package_root()
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the kernel kill the child when its parent dies.

    Everything is looked up before the fork, so the child only makes one foreign call (no
    imports or library loading between fork and exec, where another thread's lock could be
    held). None elsewhere, or when not called from the main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        log.debug("child simulator started off the main thread: relying on its stdin alone")
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call above: follow it now
            os._exit(1)

    return preexec


class ChildSimulator:
    """A simulator running as a child process. Thread-safe; ``started`` works on any loop."""

    def __init__(
        self, proc: subprocess.Popen[bytes], spawned_at: float, address: str | None = None
    ) -> None:
        self._proc = proc
        self._address = address
        self._spawned_at = spawned_at
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._base_url: str | None = None
        self._sdk_url: str | None = None
        self._ready_at: float | None = None
        self._error: ChildSimulatorError | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._stopping = False
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read_stdout, args=(proc.stdout,), name="sim-child-out", daemon=True
            ),
            threading.Thread(
                target=self._read_stderr, args=(proc.stderr,), name="sim-child-err", daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    def __repr__(self) -> str:
        return f"ChildSimulator(pid={self.pid}, base_url={self._base_url!r})"

    # -- what callers read -----------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def address(self) -> str | None:
        """The base URL of the socket bound for it before the spawn (``prebind``), else None.

        Known at once; requests to it wait until the child serves (or fail if it died).
        """
        return self._address

    @property
    def address_sdk_url(self) -> str | None:
        """The Web SDK's URL at :attr:`address` (None without ``prebind``)."""
        return None if self._address is None else self._address + SDK_PATH

    @property
    def ready(self) -> bool:
        return self._base_url is not None and self._error is None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise ChildSimulatorError(str(self._error or "the child simulator is not up yet"))
        return self._base_url

    @property
    def sdk_url(self) -> str:
        if self._sdk_url is None:
            raise ChildSimulatorError(str(self._error or "the child simulator is not up yet"))
        return self._sdk_url

    @property
    def spawn_to_ready_s(self) -> float | None:
        """Seconds from the spawn to the URLs being known (None until then)."""
        return None if self._ready_at is None else self._ready_at - self._spawned_at

    # -- waiting ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the child listens; raise ``ChildSimulatorError`` if it died or is late."""
        if not self._ready.wait(timeout):
            raise ChildSimulatorError(f"the child simulator was not up within {timeout:g} s")
        if self._error is not None:
            raise self._error

    async def started(self) -> None:
        """Await the child listening, on any asyncio loop (qasync included), never blocking it.

        Raises ``ChildSimulatorError`` if it exits first. Bound the wait with
        ``asyncio.timeout`` (a child that hangs without exiting is not detected here).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            pending = not self._ready.is_set()
            if pending:
                self._waiters.append((loop, future))
        if not pending:
            self.wait_ready(0)
            return
        try:
            await future
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, future))

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the child: end its standard input (a clean exit), then SIGTERM, then SIGKILL.

        Returns its exit code. Safe to call more than once, and from ``__exit__``.
        """
        proc = self._proc
        self._stopping = True
        if proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
        for escalate in (None, proc.terminate, proc.kill):
            if escalate is not None and proc.poll() is None:
                with contextlib.suppress(OSError):
                    escalate()
            try:
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                log.warning("the child simulator (pid %d) did not stop: escalating", proc.pid)
        for reader in self._readers:
            reader.join(timeout)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._settle(ChildSimulatorError("the child simulator was stopped"))
        return proc.returncode

    def __enter__(self) -> ChildSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the reader threads ----------------------------------------------------------------

    def _read_stdout(self, stream: IO[bytes]) -> None:
        base_url: str | None = None
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if self._base_url is None:
                    if base_url is None and (match := _LISTENING.match(line)):
                        base_url = match.group(1)
                        continue
                    if base_url is not None and (match := _SDK.match(line)):
                        self._up(base_url, match.group(1))
                        continue
                log.info("simulator: %s", line)
        code = self._proc.wait()
        if not self._ready.is_set():
            last = " / ".join(self._stderr_tail) or "no output"
            self._settle(
                ChildSimulatorError(
                    f"the simulator exited before it was ready (exit code {code}): {last}"
                )
            )
        elif not self._stopping:
            log.error("the child simulator (pid %d) exited on its own (code %s)", self.pid, code)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    self._stderr_tail.append(line)
                    log.warning("simulator (pid %d): %s", self._proc.pid, line)

    def _up(self, base_url: str, sdk_url: str) -> None:
        self._ready_at = time.perf_counter()
        self._base_url, self._sdk_url = base_url, sdk_url
        log.info(
            "child simulator (pid %d) up at %s after %.0f ms",
            self._proc.pid,
            base_url,
            (self._ready_at - self._spawned_at) * 1000,
        )
        self._settle(None)

    def _settle(self, error: ChildSimulatorError | None) -> None:
        with self._lock:
            if self._ready.is_set():
                return
            self._error = error
            self._ready.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_resolve, future, error)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def start_child(
    *,
    api_key: str | None = None,
    allowed_origins: Iterable[str] | None = None,
    allowed_hosts: Iterable[str] = (),
    voices: Iterable[str] = (),
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    python: str | None = None,
    env: dict[str, str] | None = None,
    prebind: bool = False,
) -> ChildSimulator:
    """Spawn the simulator as a child process and return at once (see the module's doc).

    ``api_key``: the one key it accepts (the app passes ``secrets.token_urlsafe()``); it goes
    to the child on its standard input. ``allowed_origins``: the pages that may call it (by
    default, with a key: the app's stage). ``voices``: extra voice ids for its catalogue.
    ``extra_args``: more ``avaturn-desktop simulator`` flags (``--chars-per-second``, faults).
    ``prebind``: bind its socket here and hand it over, so :attr:`ChildSimulator.address` is
    known at once (POSIX; ignored on Windows).
    """
    command = [
        python or sys.executable,
        "-m",
        "avaturn_desktop",
        "simulator",
        "--port",
        "0",
        "--host",
        host,
        "--exit-on-stdin-eof",
    ]
    if api_key is not None:
        command.append("--api-key-stdin")
    for origin in allowed_origins or ():
        command += ["--allow-origin", origin]
    for name in allowed_hosts:
        command += ["--allow-host", name]
    for voice in voices:
        command += ["--voice", voice]
    command += list(extra_args)
    kwargs: dict[str, Any] = {}
    sock = None
    if prebind and sys.platform != "win32":  # no descriptor passing on Windows
        sock = listen.bind(host, 0)
        command += ["--listen-fd", str(sock.fileno())]
        kwargs["pass_fds"] = (sock.fileno(),)
    preexec = _pdeathsig_preexec()
    if preexec is not None:
        kwargs["preexec_fn"] = preexec
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        # Its own process group: Ctrl+C in the app's terminal must not stop it before the
        # app has ended its sessions on it.
        kwargs["start_new_session"] = True
    spawned_at = time.perf_counter()
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_child_env(env),
            close_fds=True,
            **kwargs,
        )
        address = None if sock is None else listen.base_url(sock)
    finally:
        if sock is not None:
            # The child holds the only copy from here: if it dies, connecting is refused
            # at once instead of waiting in a backlog nobody reads.
            sock.close()
    child = ChildSimulator(proc, spawned_at, address)
    assert proc.stdin is not None
    try:
        if api_key is not None:
            proc.stdin.write(api_key.encode("utf-8") + b"\n")
            proc.stdin.flush()
    except OSError:  # it died at once; its reader reports why
        log.warning("could not hand the child simulator its key: it exited")
    return child
