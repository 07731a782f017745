"""The runtime's HTTP transport, whose TLS trust is read only when, and where, it is needed.

httpx builds its TLS context when a client is made: it reads certifi's bundle of certificate
authorities (20-35 ms of CPU here) on the GUI thread, on the path to the first session, even
when that session runs on the built-in simulator over plain HTTP, while the two cores are
busy with the window, the simulator and the web engine. :class:`BackgroundTlsTransport` asks
httpx for the very same context (``httpx.create_ssl_context``: ``SSL_CERT_FILE``,
``SSL_CERT_DIR`` or certifi) on a thread of its own (OpenSSL parses the bundle without holding
the interpreter lock), started by :meth:`~BackgroundTlsTransport.read_trust`: at once when the
backend is reached over https, else at the first https request.

It keeps two of httpx's own pools, each made at its first request: one for ``https://``, over
that context (its first request waits for the context, off the event loop, if it is still
being read), and one for
plain ``http://`` (the built-in simulator, a local gateway), which never waits for it. The
plain pool is given a context that trusts nobody, so that a TLS connection it should never
make fails closed.

A failure to read the trust (a broken ``SSL_CERT_FILE``) is raised at the first https
request, as the connection error it is, instead of stopping the app at start.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import httpx

__all__ = ["BackgroundTlsTransport"]

#: How long a first request waits for the trust to be read before it gives up.
TRUST_WAIT_S = 30.0


class BackgroundTlsTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncHTTPTransport(**options)`` with its TLS context made on a thread (see
    the module)."""

    def __init__(self, *, read_trust_now: bool = True, **options: Any) -> None:
        self._options = options
        self._context: ssl.SSLContext | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._reading = threading.Lock()
        self._reader: threading.Thread | None = None
        self._tls: httpx.AsyncHTTPTransport | None = None
        self._plain: httpx.AsyncHTTPTransport | None = None
        if read_trust_now:
            self.read_trust()

    def read_trust(self) -> None:
        """Start reading the TLS trust on its thread, unless it was started already."""
        with self._reading:
            if self._reader is None:
                self._reader = threading.Thread(
                    target=self._read_trust, name="tls-trust", daemon=True
                )
                self._reader.start()

    def _read_trust(self) -> None:
        try:
            self._context = httpx.create_ssl_context()
        except BaseException as exc:  # handed to the first request, which raises it
            self._error = exc
        finally:
            self._ready.set()

    def _pool(self, request: httpx.Request) -> httpx.AsyncHTTPTransport:
        if request.url.scheme == "http":
            if self._plain is None:
                # verifies, with no authority to trust: a TLS connection here fails closed
                trusts_nobody = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self._plain = httpx.AsyncHTTPTransport(verify=trusts_nobody, **self._options)
            return self._plain
        if self._tls is None:
            if not self._ready.is_set():
                raise httpx.ConnectError(
                    "The TLS certificate authorities were not read in time", request=request
                )
            if self._context is None:
                raise httpx.ConnectError(
                    f"The TLS certificate authorities could not be read: {self._error}",
                    request=request,
                )
            self._tls = httpx.AsyncHTTPTransport(verify=self._context, **self._options)
        return self._tls

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http" and not self._ready.is_set():
            import anyio.to_thread

            self.read_trust()
            # waited for on a worker thread: the event loop (the GUI thread) goes on meanwhile
            await anyio.to_thread.run_sync(self._ready.wait, TRUST_WAIT_S)
        return await self._pool(request).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in (self._plain, self._tls):
            if pool is not None:
                await pool.aclose()
