"""The control API's server: uvicorn on the app's own event loop, its token and its discovery
file (Qt-free).

The server runs as a task on the loop the window runs on (qasync's), so a request reaches the
runtime with no thread in between: no second thread ever touches the queue. It binds loopback
unless told otherwise, writes ``control.json`` (``{"url", "pid"}``) in the data directory once
it listens, and removes it when it stops.

The token is made on first use and kept in ``control-token`` in the data directory (mode
0600); ``AVATURN_DESKTOP_CONTROL_TOKEN`` overrides it. It is never logged, printed in a URL, or
put on a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from avaturn_desktop.control.api import EventHub, create_app
from avaturn_desktop.services.control_token import (
    DISCOVERY_FILE,
    TOKEN_ENV,
    load_token,
    read_discovery,
    renew_token,
)
from avaturn_desktop.services.runtime import Runtime

__all__ = ["TOKEN_ENV", "ControlServer", "load_token", "read_discovery"]

log = logging.getLogger("avaturn.control")

LOOPBACK = "127.0.0.1"


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handlers: the app owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlServer:
    """The control API listening on ``host:port`` (port 0: a free one) for ``runtime``."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        data_dir: Path,
        port: int = 0,
        host: str = LOOPBACK,
        token: str | None = None,
    ) -> None:
        self._runtime = runtime
        self._data_dir = data_dir
        self._host = host
        self._port = port
        self._token = token
        self.events = EventHub(runtime)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._allowed: frozenset[str] = frozenset()
        self.url = ""

    @property
    def exposed(self) -> bool:
        """Reachable from other machines (bound to something other than loopback)."""
        try:
            return not ipaddress.ip_address(self._host).is_loopback
        except ValueError:
            return self._host not in ("localhost",)

    @property
    def port(self) -> int:
        return self._port

    def token(self) -> str:
        """The token in force (read each time: Settings may have renewed it)."""
        if self._token is not None:
            return self._token
        return load_token(self._data_dir) or renew_token(self._data_dir)

    def renew_token(self) -> str:
        """A new token (the old one stops working at once)."""
        self._token = renew_token(self._data_dir)
        return self._token

    async def start(self) -> str:
        """Bind, serve on the running loop, write ``control.json``; returns the URL."""
        self.token()  # made now, on first use, so ctl finds it
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        sock.setblocking(False)
        self._socket = sock
        self._port = sock.getsockname()[1]
        self._allowed = self._allowed_hosts()
        shown_host = f"[{self._host}]" if ":" in self._host else self._host
        if self._host in ("0.0.0.0", "::"):
            shown_host = LOOPBACK
        self.url = f"http://{shown_host}:{self._port}"
        app = create_app(
            self._runtime,
            token=self.token,
            allowed_hosts=lambda: self._allowed,
            events=self.events,
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="websockets-sansio",
            ws_max_size=1 << 20,
            timeout_keep_alive=30,
            server_header=False,
            log_config=None,
        )
        self._server = _Server(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the control API stopped while starting")
            if loop.time() > deadline:
                raise RuntimeError("the control API did not start in time")
            await asyncio.sleep(0.01)
        self.events.watch()
        self._write_discovery()
        log.info("Control API listening at %s", self.url)
        if self.exposed:
            log.warning(
                "The control API is bound to %s: it is reachable from the network "
                "(anyone with the token can drive the avatar)",
                self._host,
            )
        return self.url

    def _allowed_hosts(self) -> frozenset[str]:
        port = self._port
        names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
        if self._host not in (LOOPBACK, "0.0.0.0", "::"):
            names.add(f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}")
        if self._host in ("0.0.0.0", "::"):
            names.add(f"{socket.gethostname().lower()}:{port}")
            with contextlib.suppress(OSError):
                for info in socket.getaddrinfo(socket.gethostname(), None):
                    address = str(info[4][0])
                    names.add(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        return frozenset(names)

    def _write_discovery(self) -> None:
        path = self._data_dir / DISCOVERY_FILE
        tmp = path.with_suffix(".tmp")
        body = json.dumps({"url": self.url, "pid": os.getpid()})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body + "\n")
        os.replace(tmp, path)

    async def stop(self) -> None:
        """Stop listening, close the event sockets, remove ``control.json``."""
        path = self._data_dir / DISCOVERY_FILE
        found = read_discovery(self._data_dir)
        if found is not None and found.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                path.unlink()
        self.events.close()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except TimeoutError:
                self._server.force_exit = True
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            except Exception:
                log.exception("The control API stopped with an error")
        if self._socket is not None:
            self._socket.close()
