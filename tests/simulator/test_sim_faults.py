"""Fault injection: each knob, set from the config, at run time, and over ``/_sim/faults``."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import pytest

from avaturn_desktop.simulator.server import FaultConfig

AUTH = {"Authorization": "Bearer k"}


def create(sim: Any) -> httpx.Response:
    return httpx.post(sim.base_url + "/api/v1/sessions", headers=AUTH)


def test_latency_delays_service_calls_only(make_sim):
    # a latency far above what a loaded machine adds to a loopback call: each call that is
    # not the service's is timed alone, on one client (no new TLS context per call)
    sim = make_sim(faults=FaultConfig(latency_ms=600))
    started = time.monotonic()
    assert create(sim).status_code == 200
    assert time.monotonic() - started >= 0.6
    with httpx.Client() as client:
        for url in (sim.base_url + "/_sim/state", sim.sdk_url):
            started = time.monotonic()
            assert client.get(url).status_code == 200
            assert time.monotonic() - started < 0.6, url


def test_jitter_stays_in_its_band(make_sim):
    sim = make_sim(faults=FaultConfig(latency_ms=60, jitter_ms=40))
    for _ in range(3):
        started = time.monotonic()
        create(sim)
        assert time.monotonic() - started >= 0.02


@pytest.mark.parametrize("status", [503, 500])
def test_error_rate_answers_5xx(make_sim, status):
    sim = make_sim(faults=FaultConfig(error_rate=1.0, error_status=status))
    response = create(sim)
    assert response.status_code == status and response.json()["detail"]
    token_call = httpx.get(sim.base_url + "/_sdk/v0/sessions", headers={"X-Session-Token": "t"})
    assert token_call.status_code == status
    assert httpx.get(sim.base_url + "/_sim/state").status_code == 200


def test_error_rate_is_a_fraction(make_sim):
    sim = make_sim(faults=FaultConfig(error_rate=0.5))
    with httpx.Client(base_url=sim.base_url, headers=AUTH) as client:
        statuses = {client.post("/api/v1/sessions").status_code for _ in range(40)}
    assert statuses == {200, 503}


def test_rate_limit_burst_then_recovery(make_sim):
    sim = make_sim(faults=FaultConfig(rate_limit_burst=2, retry_after_s=7))
    first, second, third = (create(sim) for _ in range(3))
    for response in (first, second):
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7" and response.json()["detail"]
    assert third.status_code == 200
    assert sim.faults().rate_limit_burst == 0


def test_faulted_answers_carry_cors_and_preflights_are_spared(make_sim):
    sim = make_sim(faults=FaultConfig(error_rate=1.0))
    origin = {"Origin": "http://page.test"}
    preflight = httpx.options(
        sim.base_url + "/_sdk/v0/sessions/tasks",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    failed = httpx.post(
        sim.base_url + "/_sdk/v0/sessions/tasks", headers=origin, json={"text": "a"}
    )
    assert failed.status_code == 503
    assert failed.headers["access-control-allow-origin"] == "*"


def test_reset_drops_the_connection_without_an_answer(make_sim):
    sim = make_sim(faults=FaultConfig(reset_rate=1.0))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as caught:
        create(sim)
    assert "reset" in str(caught.value).lower() or isinstance(
        caught.value, httpx.RemoteProtocolError
    )
    sim.set_faults(FaultConfig())
    assert create(sim).status_code == 200
    assert not sim.snapshot()["sessions"][1:]  # the reset call created nothing


def test_faults_at_run_time_over_http(sim):
    url = sim.base_url + "/_sim/faults"
    assert FaultConfig.model_validate(httpx.get(url).json()) == FaultConfig()
    answer = httpx.put(url, json={"error_rate": 1, "error_status": 502})
    assert answer.status_code == 200 and answer.json()["error_status"] == 502
    assert create(sim).status_code == 502
    assert httpx.put(url, json={"error_rate": 2}).status_code == 422
    assert httpx.put(url, json={"bogus": 1}).status_code == 422
    httpx.put(url, json={})
    assert create(sim).status_code == 200


def test_set_faults_from_another_thread(sim):
    sim.set_faults(FaultConfig(rate_limit_burst=1))
    assert sim.faults().rate_limit_burst == 1
    assert create(sim).status_code == 429
    assert create(sim).status_code == 200


def test_drop_event_channels_closes_viewers_but_keeps_the_session(sim, viewer):
    response = create(sim)
    session_id, token = response.json()["session_id"], response.json()["token"]

    async def watch() -> tuple[Any, ...]:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(sim.set_faults, FaultConfig(drop_event_channels=True))
            return await v.closed()

    code, reason, messages = asyncio.run(watch())
    assert (code, reason, messages) == (4100, "dropped", [])
    assert sim.faults().drop_event_channels is False  # a one-shot action
    state = sim.snapshot()["sessions"][0]
    assert state["session_id"] == session_id and state["end_reason"] is None

    async def rejoin() -> dict[str, Any]:
        async with viewer(sim.base_url, token) as v:
            await asyncio.to_thread(
                httpx.post,
                sim.base_url + f"/api/v1/sessions/{session_id}/tasks",
                headers=AUTH,
                json={"text": "back"},
            )
            return await v.next()

    assert asyncio.run(rejoin()) == {"type": "avatar_started_speaking"}


# -- seeded schedules ------------------------------------------------------------------------

MIXED = {
    "error_rate": 0.3,
    "reset_rate": 0.2,
    "rate_limit_rate": 0.2,
    "rate_limit_burst_len": 2,
    "retry_after_s": 0,
}


def statuses(sim: Any, n: int, path: str = "/api/v1/sessions") -> list[int | str]:
    """What ``n`` calls of one route get, in order (``reset`` for a dropped connection)."""
    seen: list[int | str] = []
    with httpx.Client(base_url=sim.base_url, headers=AUTH) as client:
        for _ in range(n):
            try:
                seen.append(client.post(path).status_code)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                seen.append("reset")
    return seen


def test_a_seed_fixes_each_calls_fate(make_sim):
    first = make_sim(faults=FaultConfig(seed=11, **MIXED))
    second = make_sim(faults=FaultConfig(seed=11, **MIXED))
    other = make_sim(faults=FaultConfig(seed=12, **MIXED))
    one = statuses(first, 30)
    assert set(one) >= {200, 429, 503, "reset"}  # every fault of the mix, in 30 calls
    assert statuses(second, 30) == one
    assert statuses(other, 30) != one
    # setting the faults again starts the schedule over
    first.set_faults(FaultConfig(seed=11, **MIXED))
    assert statuses(first, 30) == one


def test_a_seeded_route_keeps_its_schedule_whatever_other_routes_do(make_sim):
    quiet = make_sim(faults=FaultConfig(seed=5, **MIXED))
    busy = make_sim(faults=FaultConfig(seed=5, **MIXED))
    expected = statuses(quiet, 10)
    got: list[int | str] = []
    for _ in range(10):
        statuses(busy, 1, "/_sdk/v0/sessions/start_stream")  # another route in between
        got += statuses(busy, 1)
    assert got == expected


def test_a_one_shot_drop_leaves_the_schedule_running(make_sim):
    plain = make_sim(faults=FaultConfig(seed=3, **MIXED))
    dropped = make_sim(faults=FaultConfig(seed=3, **MIXED))
    expected = statuses(plain, 12)
    got = statuses(dropped, 6)
    dropped.set_faults(FaultConfig(seed=3, **MIXED, drop_event_channels=True))
    got += statuses(dropped, 6)
    assert got == expected


def test_error_burst_then_recovery(make_sim):
    sim = make_sim(faults=FaultConfig(error_burst=2, error_status=502))
    assert [create(sim).status_code for _ in range(3)] == [502, 502, 200]
    assert sim.faults().error_burst == 0


def test_rate_limit_rate_starts_bursts_of_the_set_length(make_sim):
    sim = make_sim(faults=FaultConfig(seed=1, rate_limit_rate=0.3, rate_limit_burst_len=3))
    seen = statuses(sim, 60)
    runs = "".join("x" if s == 429 else "." for s in seen).split(".")
    assert all(len(r) % 3 == 0 for r in runs)  # bursts of 3 (two may follow each other)
    assert seen.count(429) >= 3


@pytest.mark.parametrize(
    "value", ["inf", "1e400", "-5", "3600", "Fri, 31 Dec 2099 23:59:59 GMT", "soon", ""]
)
def test_retry_after_is_sent_verbatim(make_sim, value):
    sim = make_sim(faults=FaultConfig(rate_limit_burst=1, retry_after=value))
    response = create(sim)
    assert response.status_code == 429 and response.headers["retry-after"] == value


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "caf\u00e9", "x" * 201])
def test_retry_after_must_be_a_header_value(sim, value):
    answer = httpx.put(sim.base_url + "/_sim/faults", json={"retry_after": value})
    assert answer.status_code == 422


# -- faults after the service took the call ----------------------------------------------------


def _session(sim: Any) -> tuple[str, str]:
    body = create(sim).json()
    return body["session_id"], body["token"]


def _tasks(sim: Any, session_id: str) -> list[str]:
    (session,) = [s for s in sim.snapshot()["sessions"] if s["session_id"] == session_id]
    return [t["text"] for t in session["tasks"]]


@pytest.mark.parametrize("kind", ["empty_2xx", "html_2xx", "object_2xx", "502", "503", "504"])
@pytest.mark.parametrize("route", ["rest", "sdk"])
def test_after_accept_lies_about_a_task_it_queued(make_sim, kind, route):
    sim = make_sim()
    session_id, token = _session(sim)
    sim.set_faults(FaultConfig(after_accept_rate=1.0, after_accept=[kind]))
    if route == "rest":
        response = httpx.post(
            f"{sim.base_url}/api/v1/sessions/{session_id}/tasks", headers=AUTH, json={"text": "a"}
        )
    else:
        response = httpx.post(
            f"{sim.base_url}/_sdk/v0/sessions/tasks",
            headers={"X-Session-Token": token},
            json={"text": "a"},
        )
    assert _tasks(sim, session_id) == ["a"]  # the service has it, whatever it answered
    expected = {
        "empty_2xx": (200, b""),
        "html_2xx": (200, b"<html>"),
        "object_2xx": (200, b"{}"),
    }
    if kind in expected:
        status, start = expected[kind]
        assert response.status_code == status and response.content.startswith(start)
        assert "task_id" not in response.text
    else:
        assert response.status_code == int(kind)
    assert sim.app.state.faults.injected == {f"after_accept:{kind}": 1}


def test_after_accept_reset_drops_the_answer_of_a_queued_task(make_sim):
    sim = make_sim()
    session_id, _ = _session(sim)
    sim.set_faults(FaultConfig(after_accept_rate=1.0, after_accept=["reset"]))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(
            f"{sim.base_url}/api/v1/sessions/{session_id}/tasks", headers=AUTH, json={"text": "a"}
        )
    assert _tasks(sim, session_id) == ["a"]


def test_after_accept_hang_answers_only_after_the_client_gave_up(make_sim):
    sim = make_sim()
    session_id, _ = _session(sim)
    sim.set_faults(FaultConfig(after_accept_rate=1.0, after_accept=["hang"], hang_ms=20_000))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{sim.base_url}/api/v1/sessions/{session_id}/tasks",
            headers=AUTH,
            json={"text": "a"},
            timeout=0.3,
        )
    assert time.monotonic() - started < 5  # the server let go once the client did
    assert _tasks(sim, session_id) == ["a"]
    # a short hang is only a late answer
    sim.set_faults(FaultConfig(after_accept_rate=1.0, after_accept=["hang"], hang_ms=50))
    late = httpx.post(
        f"{sim.base_url}/api/v1/sessions/{session_id}/tasks", headers=AUTH, json={"text": "b"}
    )
    assert late.status_code == 200 and late.json()["task_id"]


def test_after_accept_spares_refusals_and_other_routes(make_sim):
    sim = make_sim(faults=FaultConfig(after_accept_rate=1.0, after_accept=["503"]))
    assert create(sim).status_code == 200  # not a task route
    missing = httpx.post(
        f"{sim.base_url}/api/v1/sessions/nope/tasks", headers=AUTH, json={"text": "a"}
    )
    assert missing.status_code == 404  # refused: nothing to lie about
    sim.set_faults(
        FaultConfig(after_accept_rate=1.0, after_accept=["503"], after_accept_routes="all")
    )
    assert create(sim).status_code == 503
    assert len(sim.snapshot()["sessions"]) == 2  # created all the same


def test_fault_flags_build_the_config():
    from avaturn_desktop.simulator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    faults = cli.config_from_args(
        parser.parse_args(
            [
                "--fault-seed",
                "42",
                "--error-burst",
                "2",
                "--rate-limit-rate",
                "0.2",
                "--rate-limit-burst-len",
                "3",
                "--retry-after",
                "Fri, 31 Dec 2099 23:59:59 GMT",
                "--after-accept-rate",
                "0.5",
                "--after-accept",
                "hang",
                "--after-accept",
                "empty_2xx",
                "--hang-ms",
                "500",
            ]
        )
    ).faults
    assert (faults.seed, faults.rate_limit_rate, faults.rate_limit_burst_len) == (42, 0.2, 3)
    assert faults.error_burst == 2
    assert faults.retry_after == "Fri, 31 Dec 2099 23:59:59 GMT"
    assert (faults.after_accept_rate, faults.after_accept, faults.hang_ms) == (
        0.5,
        ["hang", "empty_2xx"],
        500.0,
    )
    plain = cli.config_from_args(parser.parse_args(["--retry-after", "7"])).faults
    assert (plain.retry_after_s, plain.retry_after, plain.after_accept) == (7, None, ["503"])
