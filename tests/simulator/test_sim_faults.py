"""Fault injection: each knob, set from the config, at run time, and over ``/_sim/faults``."""

from __future__ import annotations

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
    sim = make_sim(faults=FaultConfig(latency_ms=150))
    started = time.monotonic()
    assert create(sim).status_code == 200
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    assert httpx.get(sim.base_url + "/_sim/state").status_code == 200
    assert httpx.get(sim.sdk_url).status_code == 200
    assert time.monotonic() - started < 0.15


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
