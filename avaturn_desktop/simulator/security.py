"""What keeps other programs and web pages out of a simulator on the user's machine.

A server on loopback is reachable from every web page the user opens: a page can send it
simple requests (no preflight), open WebSockets to it (no CORS at all), and, through DNS
rebinding, make the browser treat it as the page's own origin. So, besides the API key:

* ``Host`` must name an address the server listens on: the local address the connection came
  in on (an IP literal), ``localhost`` and the loopback literals when it came in on loopback,
  or a name the operator allowed. A rebinding page's requests carry its own domain name there,
  and are refused with 403 before any route runs.
* With a list of allowed origins, a request that carries any other ``Origin`` is refused with
  403, WebSocket handshakes and simple requests included (CORS alone only hides the answer);
  requests without ``Origin`` (programs, not pages) pass, and still need the key.
* With a key configured, every path under ``/_sim`` needs it as a bearer (401 otherwise),
  whichever router added the path: the controls can read every text and end any session.
* Request bodies are capped (413), so one request cannot fill the memory.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

log = logging.getLogger("avaturn.simulator")

#: The origin of the app's stage page (``ui/web/scheme.py``: ``avaturn://stage``). Only the
#: test suite may import Qt to check the two agree.
APP_STAGE_ORIGIN = "avaturn://stage"
#: Tasks carry at most 5,000 characters: a megabyte is far more than any real request.
MAX_BODY_BYTES = 1 << 20
ANY_ORIGIN = "*"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

_LOOPBACK_NAMES = frozenset({"localhost"})


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d
    return ip


def split_host(value: str) -> tuple[str, int] | None:
    """``(name, port)`` of a ``Host`` header (port 80 if it names none), or None if malformed."""
    if not value or any(c in value for c in "/?#@\\ \t") or not value.isascii():
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name:
        return None
    return name, 80 if port is None else port


def host_allowed(
    header: str | None, server: tuple[str, int] | None, names: Collection[str]
) -> bool:
    """Whether ``Host: header`` names the server whose local address is ``server``.

    ``server`` is the ASGI scope's ``server``: the address and port the connection came in on.
    ``names`` are extra host names the operator allowed (lower case).
    """
    parsed = split_host(header or "")
    if parsed is None:
        return False
    name, port = parsed
    local = _ip(server[0]) if server else None
    if server is not None and port != server[1]:
        return False
    if name in names:
        return True
    if server is not None and local is None:  # not an IP socket (tests' in-memory transport)
        return name == server[0].lower()
    ip = _ip(name)
    if local is None or local.is_loopback:
        return name in _LOOPBACK_NAMES or (ip is not None and ip.is_loopback)
    return ip is not None and ip == local


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class Guard:
    """Pure ASGI middleware: the ``Host`` check, the ``Origin`` check and the body cap."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: Collection[str] = (),
        origins: Collection[str] | None = None,
        control_key: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self._control_key = None if control_key is None else control_key.encode()
        self.hosts = frozenset(h.lower() for h in hosts)
        self.origins = None if origins is None or ANY_ORIGIN in origins else frozenset(origins)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not host_allowed(host, scope.get("server"), self.hosts):
            log.warning("refused a request for host %r (DNS rebinding?)", (host or "")[:100])
            await _refuse(
                scope,
                receive,
                send,
                403,
                "Host not allowed: use the address the simulator listens on, or start it with "
                "--allow-host NAME",
            )
            return
        origin = _header(scope, b"origin")
        if self.origins is not None and origin is not None and origin not in self.origins:
            log.warning("refused a request from origin %r", origin[:100])
            await _refuse(scope, receive, send, 403, "Origin not allowed")
            return
        if self._control_key is not None and _is_control(scope["path"]):
            scheme, _, given = (_header(scope, b"authorization") or "").partition(" ")
            given_key = given.strip().encode("latin-1")
            if scheme.lower() != "bearer" or not given_key:
                missing = "Not authenticated: an API key is required"
                await _refuse(scope, receive, send, 401, missing, _UNAUTHENTICATED)
                return
            if not hmac.compare_digest(given_key, self._control_key):
                await _refuse(scope, receive, send, 401, "Invalid API key", _UNAUTHENTICATED)
                return
        if kind == "http":
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await _refuse(scope, receive, send, 413, "Request body too large")
                return
            receive = _capped(receive, self.max_body_bytes)
        await self.app(scope, receive, send)


def _is_control(path: str) -> bool:
    return path == "/_sim" or path.startswith("/_sim/")


class BodyTooLarge(HTTPException):
    """A chunked body outgrew the cap while it was read (FastAPI answers it as it stands)."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message: Message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return wrapped


_UNAUTHENTICATED = ((b"www-authenticate", b"Bearer"),)


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    if scope["type"] == "websocket":
        # Closing before the handshake is accepted makes the server answer it with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
