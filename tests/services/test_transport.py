"""The runtime's transport: httpx's own TLS trust, read on a thread, not in start-up's path."""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any

import httpx
import pytest

from avaturn_desktop.services import transport as transport_mod
from avaturn_desktop.services.transport import BackgroundTlsTransport


def _get(url: str, client_transport: httpx.AsyncBaseTransport) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=client_transport) as http:
            return await http.get(url)

    return asyncio.run(go())


def test_the_trust_is_httpx_own_and_read_off_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch, simulator: Any
) -> None:
    made: list[tuple[threading.Thread, ssl.SSLContext]] = []
    real = httpx.create_ssl_context

    def create_ssl_context() -> ssl.SSLContext:
        context = real()
        made.append((threading.current_thread(), context))
        return context

    given: list[dict[str, Any]] = []
    real_transport = httpx.AsyncHTTPTransport

    def transport(**options: Any) -> httpx.AsyncHTTPTransport:
        given.append(options)
        return real_transport(**options)

    monkeypatch.setattr(httpx, "create_ssl_context", create_ssl_context)
    monkeypatch.setattr(httpx, "AsyncHTTPTransport", transport)
    limits = httpx.Limits(max_connections=3)
    background = BackgroundTlsTransport(limits=limits)
    response = _get(simulator.sdk_url, background)

    assert response.status_code == 200
    [(thread, context)] = made
    assert thread is not threading.main_thread()
    assert thread.name == "tls-trust"
    # one pool, made at the first request, over that context and the options given
    assert given == [{"verify": context, "limits": limits}]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_a_trust_that_cannot_be_read_fails_the_request_not_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, simulator: Any
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    background = BackgroundTlsTransport()  # made without an error: the app starts

    with pytest.raises(httpx.ConnectError, match="could not be read") as caught:
        _get(simulator.sdk_url, background)
    assert caught.value.request.url == simulator.sdk_url


def test_a_trust_still_being_read_past_the_limit_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch, simulator: Any
) -> None:
    release = threading.Event()

    def slow() -> ssl.SSLContext:
        release.wait(10)
        return ssl.create_default_context()

    monkeypatch.setattr(httpx, "create_ssl_context", slow)
    monkeypatch.setattr(transport_mod, "TRUST_WAIT_S", 0.05)
    background = BackgroundTlsTransport()
    try:
        with pytest.raises(httpx.ConnectError, match="not read in time"):
            _get(simulator.sdk_url, background)
    finally:
        release.set()


def test_closing_before_any_request_makes_no_pool() -> None:
    background = BackgroundTlsTransport()
    asyncio.run(background.aclose())
    assert background._transport is None
