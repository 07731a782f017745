"""The simulator as a server on the user's machine: what other pages, other programs and
rebinding domains can do to it, and the resources a client can hold.

The exposures come as classes: every route × every hostile origin, every form a ``Host``
header can take, HTTP and the WebSocket handshake, before and after the key.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from avaturn_desktop.simulator.cli import _this_machines_address
from avaturn_desktop.simulator.security import APP_STAGE_ORIGIN, host_allowed, split_host
from avaturn_desktop.simulator.server import SimulatorServer

STAGE = APP_STAGE_ORIGIN
HOSTILE_ORIGINS = [
    "https://evil.example",
    "http://127.0.0.1:8123",  # another local server's page
    "http://localhost",
    "null",  # sandboxed frames, file:// pages
    "avaturn://evil",
    "avaturn://stage.evil.example",
    "AVATURN://STAGE",  # origins are compared exactly, as browsers send them
]


def port_of(sim: SimulatorServer) -> int:
    return int(sim.base_url.rsplit(":", 1)[1])


def routes(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route of the simulator, with a body where it takes one."""
    return [
        ("GET", "/_sim/state", None),
        ("GET", "/_sim/faults", None),
        ("PUT", "/_sim/faults", {"error_rate": 1}),
        ("POST", f"/_sim/sessions/{session_id}/kill", None),
        ("POST", "/api/v1/sessions", None),
        ("POST", f"/api/v1/sessions/{session_id}/tasks", {"text": "Injected."}),
        ("DELETE", f"/api/v1/sessions/{session_id}", None),
        ("GET", "/_sdk/v0/sessions", None),
        ("POST", "/_sdk/v0/sessions/tasks", {"text": "Injected."}),
        ("POST", "/_sdk/v0/sessions/cancel_all_speech_tasks", None),
        ("POST", "/_sdk/v0/sessions/start_stream", None),
        ("PATCH", "/_sdk/v0/sessions/config", {}),
        ("GET", "/sim/web-sdk.js", None),
        ("GET", "/openapi.json", None),
        ("GET", "/_sim/llm", None),
        ("PUT", "/_sim/llm/faults", {}),
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", {"model": "sim-chat", "messages": []}),
    ]


@pytest.fixture
def locked(make_sim: Callable[..., SimulatorServer]) -> tuple[SimulatorServer, str]:
    """The in-app simulator: a random key per run, default origins (the stage's)."""
    key = secrets.token_urlsafe()
    return make_sim(api_key=key), key


def new_session(sim: SimulatorServer, key: str) -> dict[str, str]:
    answer = httpx.post(
        sim.base_url + "/api/v1/sessions", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200
    created: dict[str, str] = answer.json()
    return created


# -- the in-app simulator: other pages --------------------------------------------------------


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
def test_other_pages_reach_no_route_even_with_the_key(locked, origin):
    sim, key = locked
    created = new_session(sim, key)
    before = sim.snapshot()
    with httpx.Client(base_url=sim.base_url) as http:
        for method, path, body in routes(created["session_id"]):
            headers = {
                "Origin": origin,
                "X-Session-Token": created["token"],
                "Authorization": f"Bearer {key}",  # even a page that somehow knew the key
            }
            answer = http.request(method, path, json=body, headers=headers)
            assert answer.status_code == 403, (origin, method, path, answer.status_code)
            assert "access-control-allow-origin" not in answer.headers
            assert created["token"] not in answer.text and "Injected" not in answer.text
            # a preflight from that page is refused too
            preflight = http.options(
                path, headers={"Origin": origin, "Access-Control-Request-Method": method}
            )
            assert preflight.status_code == 403
    after = sim.snapshot()
    assert after["sessions"][0]["tasks"] == [] and after["sessions"][0]["end_reason"] is None
    assert len(after["sessions"]) == len(before["sessions"])
    assert sim.faults().error_rate == 0


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
def test_other_pages_cannot_open_the_event_channel(locked, origin):
    sim, key = locked
    created = new_session(sim, key)
    url = sim.base_url.replace("http", "ws") + f"/_sdk/v0/sessions/events?token={created['token']}"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=origin, open_timeout=5).close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert sim.snapshot()["sessions"][0]["viewers_seen"] == 0
    with connect(url, origin=STAGE, open_timeout=5):  # type: ignore[arg-type]
        pass
    with connect(url, open_timeout=5):  # a program: no Origin, the token is its credential
        pass
    assert sim.snapshot()["sessions"][0]["viewers_seen"] == 2


def test_the_stage_page_and_programs_with_the_key_get_through(locked):
    sim, key = locked
    auth = {"Authorization": f"Bearer {key}"}
    created = new_session(sim, key)
    sdk = {"Origin": STAGE, "X-Session-Token": created["token"]}
    looked_up = httpx.get(sim.base_url + "/_sdk/v0/sessions", headers=sdk)
    assert looked_up.status_code == 200
    assert looked_up.headers["access-control-allow-origin"] == STAGE
    preflight = httpx.options(
        sim.base_url + "/_sdk/v0/sessions/tasks",
        headers={
            "Origin": STAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-session-token, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == STAGE
    module = httpx.get(sim.sdk_url, headers={"Origin": STAGE})
    assert module.status_code == 200 and "AvaturnHead" in module.text
    assert httpx.get(sim.base_url + "/_sim/state", headers=auth).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_sim/state"),
        ("GET", "/_sim/faults"),
        ("PUT", "/_sim/faults"),
        ("GET", "/_sim/llm"),  # a control route another router adds
        ("PUT", "/_sim/llm/faults"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer wrong", "Basic a2V5", "key"])
def test_the_controls_take_the_configured_key(locked, method, path, authorization):
    sim, key = locked
    headers = {} if authorization is None else {"Authorization": authorization}
    body = {} if method == "PUT" else None
    refused = httpx.request(method, sim.base_url + path, headers=headers, json=body)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert key not in refused.text
    allowed = httpx.request(
        method, sim.base_url + path, headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert allowed.status_code == 200


def test_kill_takes_the_configured_key(locked):
    sim, key = locked
    created = new_session(sim, key)
    kill = sim.base_url + f"/_sim/sessions/{created['session_id']}/kill"
    assert httpx.post(kill).status_code == 401
    assert httpx.post(kill, headers={"Authorization": "Bearer other"}).status_code == 401
    assert sim.snapshot()["sessions"][0]["end_reason"] is None
    assert httpx.post(kill, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_without_a_key_it_stays_open_as_the_contract_says(make_sim):
    sim = make_sim()
    assert httpx.get(sim.base_url + "/_sim/state").status_code == 200
    created = httpx.post(
        sim.base_url + "/api/v1/sessions",
        headers={"Authorization": "Bearer anything", "Origin": "https://any.example"},
    )
    assert created.status_code == 200
    assert created.headers["access-control-allow-origin"] == "*"


def test_explicit_origins_lock_the_pages_without_a_key(make_sim):
    sim = make_sim(allowed_origins=["http://127.0.0.1:9999"])
    ok = httpx.get(sim.base_url + "/_sim/state", headers={"Origin": "http://127.0.0.1:9999"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://127.0.0.1:9999"
    assert httpx.get(sim.base_url + "/_sim/state", headers={"Origin": STAGE}).status_code == 403
    any_origin = make_sim(api_key="k", allowed_origins=["*"])
    answer = httpx.get(
        any_origin.base_url + "/sim/web-sdk.js", headers={"Origin": "https://x.example"}
    )
    assert answer.status_code == 200


def test_the_default_origin_is_the_stage_page_s():
    scheme = pytest.importorskip("avaturn_desktop.ui.web.scheme")
    assert scheme.STAGE_ORIGIN == APP_STAGE_ORIGIN


# -- Host: DNS rebinding ----------------------------------------------------------------------


def raw_status(sim: SimulatorServer, request: bytes, address: str = "127.0.0.1") -> str:
    """Send ``request`` as bytes and return the answer's status line."""
    with socket.create_connection((address, port_of(sim)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def host_cases(port: int) -> dict[str, bool]:
    """Every form of ``Host`` and whether it names a loopback server on ``port``."""
    return {
        f"127.0.0.1:{port}": True,
        f"localhost:{port}": True,
        f"LOCALHOST:{port}": True,
        f"[::1]:{port}": True,
        f"127.0.0.2:{port}": True,  # all of 127/8 is this machine's loopback
        f"evil.example:{port}": False,  # a rebinding domain
        "evil.example": False,
        f"127.0.0.1.nip.io:{port}": False,
        f"localhost.evil.example:{port}": False,
        f"sub.localhost:{port}": False,
        f"127.0.0.1:{port + 1}": False,
        "127.0.0.1": port == 80,
        f"127.0.0.1:{port}@evil.example": False,
        f"evil.example@127.0.0.1:{port}": False,
        f"127.0.0.1:{port}/x": False,
        f"127.0.0.1 :{port}": False,
        f"127.0.0.1:{port}:{port}": False,
        f"127.0.0.1:-{port}": False,
        "127.0.0.1:99999": False,
        f"[::1:{port}": False,
        f"0x7f000001:{port}": False,
        f"2130706433:{port}": False,
        f"192.168.1.10:{port}": False,  # not the address the connection came in on
        f"ℓocalhost:{port}": False,
        "": False,
    }


@pytest.mark.parametrize("api_key", [None, "k"])
def test_only_hosts_the_server_listens_as_are_served(make_sim, api_key):
    sim = make_sim(api_key=api_key)
    cases = host_cases(port_of(sim))
    for host, allowed in cases.items():
        for path in ("/_sim/state", "/openapi.json", "/sim/web-sdk.js"):
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer k\r\nConnection: close\r\n\r\n"
            ).encode()
            status = raw_status(sim, request)
            expected = "200" if allowed else "403"
            assert status.split(" ")[1] == expected, (host, path, status)
        key = base64.b64encode(os.urandom(16)).decode()
        upgrade = (
            f"GET /_sdk/v0/sessions/events?token=nope HTTP/1.1\r\nHost: {host}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        # an allowed host reaches the route (404: no such session); a refused one gets 403
        assert raw_status(sim, upgrade).split(" ")[1] == ("404" if allowed else "403"), host
    no_host = raw_status(sim, b"GET /_sim/state HTTP/1.0\r\n\r\n")
    assert no_host.split(" ")[1] == "403"
    assert sim.snapshot()["sessions"] == []


def test_allowed_host_names_are_served(make_sim):
    sim = make_sim(allowed_hosts=["Sim.Test"])
    request = (
        f"GET /_sim/state HTTP/1.1\r\nHost: sim.test:{port_of(sim)}\r\nConnection: close\r\n\r\n"
    )
    assert raw_status(sim, request.encode()).split(" ")[1] == "200"


def test_bound_to_every_interface_a_client_names_the_address_it_used(make_sim):
    sim = make_sim(host="0.0.0.0")
    port = port_of(sim)
    assert sim.base_url == f"http://127.0.0.1:{port}"
    lan = _this_machines_address(4)
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    for host, expected in (
        (f"{lan}:{port}", "200"),
        (f"localhost:{port}", "403"),  # came in on the LAN address: not a loopback client
        (f"evil.example:{port}", "403"),
    ):
        request = f"GET /_sim/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        assert raw_status(sim, request.encode(), address=lan).split(" ")[1] == expected, host


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("Example.COM", ("example.com", 80)),
        ("a:b", None),
        ("", None),
        ("x@y:1", None),
    ],
)
def test_split_host(header, parsed):
    assert split_host(header) == parsed


def test_host_check_with_an_ipv4_mapped_local_address():
    # A dual-stack socket bound to "::" sees IPv4 connections on ::ffff:127.0.0.1.
    assert host_allowed("127.0.0.1:5", ("::ffff:127.0.0.1", 5), ())
    assert host_allowed("localhost:5", ("::ffff:127.0.0.1", 5), ())
    assert not host_allowed("evil.example:5", ("::ffff:127.0.0.1", 5), ())


# -- what one client can hold ------------------------------------------------------------------


def test_bodies_are_capped(make_sim):
    sim = make_sim(max_body_bytes=4096)
    url = sim.base_url + "/api/v1/sessions"
    big = b'{"avatar_id": "' + b"x" * 5000 + b'"}'
    auth = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    assert httpx.post(url, content=big, headers=auth).status_code == 413

    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    assert httpx.post(url, content=chunks(), headers=auth).status_code == 413
    lying = raw_status(
        sim,
        f"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port_of(sim)}\r\n"
        "Content-Length: 99999999999999999999\r\n\r\n".encode(),
    )
    assert lying.split(" ")[1] in ("400", "413")
    assert sim.snapshot()["sessions"] == []


def closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    """Wait (bounded) until the server closes ``sock``; True if it did."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_connections_that_send_nothing_or_half_a_request_are_closed(make_sim, viewer):
    sim = make_sim(request_head_timeout_s=0.5, keep_alive_s=1)
    port = port_of(sim)
    silent = socket.create_connection(("127.0.0.1", port))
    trickle = socket.create_connection(("127.0.0.1", port))
    trickle.sendall(f"GET /_sim/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-A: ".encode())
    idle = socket.create_connection(("127.0.0.1", port))
    idle.sendall(f"GET /_sim/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    try:
        assert closed_by_server(silent)
        assert closed_by_server(trickle)
        assert closed_by_server(idle)  # after its answer, once idle past keep-alive
    finally:
        for sock in (silent, trickle, idle):
            sock.close()


def test_an_open_event_channel_outlives_the_request_deadline(make_sim, until):
    import asyncio

    from tests.simulator.conftest import Viewer

    sim = make_sim(request_head_timeout_s=0.3)
    created = httpx.post(sim.base_url + "/api/v1/sessions", headers={"Authorization": "Bearer k"})
    token, session_id = created.json()["token"], created.json()["session_id"]

    async def run() -> list[dict[str, Any]]:
        async with Viewer(sim.base_url, token) as channel:
            # Another connection idles past the deadline and is closed: the deadline passed.
            probe = socket.create_connection(("127.0.0.1", port_of(sim)))
            try:
                closed = await asyncio.to_thread(closed_by_server, probe)
            finally:
                probe.close()
            assert closed
            async with httpx.AsyncClient() as http:
                await http.post(
                    sim.base_url + f"/api/v1/sessions/{session_id}/tasks",
                    headers={"Authorization": "Bearer k"},
                    json={"text": "Still here."},
                )
            return await channel.until("avatar_ended_speaking")

    events = asyncio.run(run())
    assert events[-1]["type"] == "avatar_ended_speaking"


def test_ended_sessions_are_freed(make_sim, until):
    sim = make_sim(ended_session_ttl_s=0.3, max_ended_sessions=3)
    auth = {"Authorization": "Bearer k"}
    with httpx.Client(base_url=sim.base_url, headers=auth) as http:
        created = [http.post("/api/v1/sessions").json() for _ in range(8)]
        for session in created:
            assert http.delete(f"/api/v1/sessions/{session['session_id']}").status_code == 200
        assert len(sim.snapshot()["sessions"]) <= 3  # at most max_ended kept on show
        live = http.post("/api/v1/sessions").json()
        until(lambda: [s["session_id"] for s in sim.snapshot()["sessions"]] == [live["session_id"]])
        gone = created[-1]
        assert http.delete(f"/api/v1/sessions/{gone['session_id']}").status_code == 404
        sdk = http.get("/_sdk/v0/sessions", headers={"X-Session-Token": gone["token"]})
        assert sdk.status_code == 404
    engine = sim.app.state.engine
    assert set(engine._by_token.values()) == set(engine.sessions.values())
