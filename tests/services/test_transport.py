"""The runtime's transport: httpx's own TLS trust, read on a thread, not in start-up's path;
plain HTTP (the built-in simulator) never waits for it."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
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


@pytest.fixture
def closed_https_url() -> str:
    """An https URL on a loopback port nobody listens on (connecting is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"https://127.0.0.1:{port}/"


@pytest.fixture
def pools_made(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options of every httpx pool the transport makes."""
    made: list[dict[str, Any]] = []
    real = httpx.AsyncHTTPTransport

    def pool(**options: Any) -> httpx.AsyncHTTPTransport:
        made.append(options)
        return real(**options)

    monkeypatch.setattr(httpx, "AsyncHTTPTransport", pool)
    return made


@pytest.fixture
def trust_held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The trust is being read until the event is set."""
    release = threading.Event()
    real = httpx.create_ssl_context

    def slow() -> ssl.SSLContext:
        release.wait(10)
        return real()

    monkeypatch.setattr(httpx, "create_ssl_context", slow)
    yield release
    release.set()


def test_https_gets_httpx_trust_read_off_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch, pools_made: list[dict[str, Any]], closed_https_url: str
) -> None:
    made: list[tuple[threading.Thread, ssl.SSLContext]] = []
    real = httpx.create_ssl_context

    def create_ssl_context() -> ssl.SSLContext:
        context = real()
        made.append((threading.current_thread(), context))
        return context

    monkeypatch.setattr(httpx, "create_ssl_context", create_ssl_context)
    limits = httpx.Limits(max_connections=3)

    with pytest.raises(httpx.ConnectError):  # refused: nobody listens there
        _get(closed_https_url, BackgroundTlsTransport(limits=limits))

    [(thread, context)] = made
    assert thread is not threading.main_thread() and thread.name == "tls-trust"
    assert pools_made == [{"verify": context, "limits": limits}]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0


def test_plain_http_never_waits_for_the_trust(
    monkeypatch: pytest.MonkeyPatch,
    trust_held: threading.Event,
    pools_made: list[dict[str, Any]],
    simulator: Any,
) -> None:
    monkeypatch.setattr(transport_mod, "TRUST_WAIT_S", 0.05)  # a wait would fail the request
    response = _get(simulator.sdk_url, BackgroundTlsTransport())  # the trust is still read

    assert response.status_code == 200
    [options] = pools_made
    plain = options["verify"]
    # its context verifies and trusts nobody: a TLS connection through it would fail
    assert plain.verify_mode is ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.cert_store_stats()["x509_ca"] == 0


def test_a_trust_that_cannot_be_read_fails_https_not_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, closed_https_url: str, simulator: Any
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    background = BackgroundTlsTransport()  # made without an error: the app starts

    with pytest.raises(httpx.ConnectError, match="could not be read") as caught:
        _get(closed_https_url, background)
    assert str(caught.value.request.url) == closed_https_url
    assert _get(simulator.sdk_url, background).status_code == 200


def test_a_trust_still_being_read_past_the_limit_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch, trust_held: threading.Event, closed_https_url: str
) -> None:
    monkeypatch.setattr(transport_mod, "TRUST_WAIT_S", 0.05)

    with pytest.raises(httpx.ConnectError, match="not read in time"):
        _get(closed_https_url, BackgroundTlsTransport())


def test_closing_before_any_request_makes_no_pool(pools_made: list[dict[str, Any]]) -> None:
    asyncio.run(BackgroundTlsTransport().aclose())
    assert pools_made == []


@pytest.fixture
def trust_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every read of the trust."""
    reads: list[str] = []
    real = httpx.create_ssl_context

    def counted() -> ssl.SSLContext:
        reads.append(threading.current_thread().name)
        return real()

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    return reads


def test_a_plain_http_backend_never_reads_the_trust_until_https_is_asked_for(
    trust_reads: list[str], closed_https_url: str, simulator: Any
) -> None:
    background = BackgroundTlsTransport(read_trust_now=False)
    assert _get(simulator.sdk_url, background).status_code == 200
    assert trust_reads == []  # the simulator's session paid nothing for TLS

    with pytest.raises(httpx.ConnectError):  # refused: nobody listens there
        _get(closed_https_url, background)
    assert trust_reads == ["tls-trust"]  # read once, on its thread, when https came
    background.read_trust()
    assert trust_reads == ["tls-trust"]


@pytest.mark.parametrize(
    ("api_base", "reads_now"),
    [("https://api.avaturn.live", True), ("http://127.0.0.1:8765", False)],
)
def test_the_runtime_reads_the_trust_at_once_only_for_an_https_backend(
    monkeypatch: pytest.MonkeyPatch, api_base: str, reads_now: bool, tmp_path: Any
) -> None:
    from avaturn_desktop.core.backend import Backend
    from avaturn_desktop.core.settings import Settings
    from avaturn_desktop.services.runtime import Runtime
    from avaturn_desktop.services.settings_store import SettingsStore
    from avaturn_desktop.services.tasklog import TaskLogStore

    made: list[bool] = []

    class Recording(BackgroundTlsTransport):
        def __init__(self, *, read_trust_now: bool = True, **options: Any) -> None:
            made.append(read_trust_now)
            super().__init__(read_trust_now=read_trust_now, **options)

    monkeypatch.setattr("avaturn_desktop.services.runtime.BackgroundTlsTransport", Recording)
    runtime = Runtime.open(
        backend=Backend("cloud", api_base, api_base + "/sdk.js", "key"),
        settings=SettingsStore(Settings(), None),
        store=TaskLogStore(tmp_path / "log.sqlite3"),
        data_dir=tmp_path,
    )
    try:
        assert made == [reads_now]
    finally:
        asyncio.run(runtime.close())


def test_waiting_for_the_trust_does_not_hold_the_event_loop(
    trust_held: threading.Event, closed_https_url: str
) -> None:
    """The GUI thread runs the event loop: a first https request made while the trust is
    still read waits on a worker thread, and the loop goes on meanwhile."""
    threading.Timer(0.3, trust_held.set).start()
    ticks = 0

    async def go() -> None:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(tick())
        async with httpx.AsyncClient(transport=BackgroundTlsTransport()) as http:
            with pytest.raises(httpx.ConnectError):  # refused, once the trust is read
                await http.get(closed_https_url)
        ticking.cancel()

    asyncio.run(go())
    assert ticks >= 10  # about 30 in the 0.3 s the request waited
