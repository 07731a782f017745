"""The simulator's listening socket, made without the server's imports (FastAPI, uvicorn).

The app binds the built-in simulator's socket itself before it spawns the child and hands it
over (``--listen-fd``): the simulator's URL is then known at once, so the window is built
while the child imports its server, and a request made before the child is ready waits in
the socket's backlog instead of failing.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["SDK_PATH", "base_url", "bind"]

#: Where the simulator serves its Web SDK module.
SDK_PATH = "/sim/web-sdk.js"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port), non-blocking."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, proto, _, address = infos[0]
    # The protocol must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only
    # then, and without it every keep-alive call waits on a delayed ACK (~40 ms on loopback).
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket) -> str:
    """A URL that reaches the bound socket from this machine (loopback if it binds them all)."""
    address, port = sock.getsockname()[:2]
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_unspecified:
        ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{shown}:{port}"
