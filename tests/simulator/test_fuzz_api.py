"""The simulator's own OpenAPI schema, fuzzed by schemathesis over real loopback HTTP: inputs
that fit the schema and inputs that break it, to every route, must never get a 5xx.

Half the cases aim at a live session (its id in the path, its token in ``X-Session-Token``),
so that the bodies reach the validation behind the 404. Injected faults are the simulator's
answers by design: a case that sets them is undone at once.

The default run tries ``AVATURN_API_FUZZ_EXAMPLES`` cases (150, a few seconds); the ``slow``
variant 2,000.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avaturn_desktop.simulator.faults import FaultConfig
from avaturn_desktop.simulator.server import SimulatorServer

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUICK = int(os.environ.get("AVATURN_API_FUZZ_EXAMPLES", "150"))


class Target:
    """A simulator with one live session kept alive for the fuzzer to aim at."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim
        self.http = httpx.Client(base_url=sim.base_url, headers=AUTH, timeout=10)
        self.session_id = ""
        self.token = ""
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[str] = []

    def live(self) -> tuple[str, str]:
        state = self.sim.snapshot()["sessions"]
        if not any(s["session_id"] == self.session_id and not s["end_reason"] for s in state):
            created = self.http.post("/api/v1/sessions").json()
            self.session_id, self.token = created["session_id"], created["token"]
        return self.session_id, self.token


@pytest.fixture
def target(make_sim: Callable[..., SimulatorServer]) -> Iterator[Target]:
    target = Target(make_sim(api_key=KEY))
    try:
        yield target
    finally:
        target.http.close()


def fuzz(target: Target, examples: int) -> None:
    sim = target.sim
    schema = schemathesis.openapi.from_url(sim.base_url + "/openapi.json")
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, aim=st.booleans())
    def run(case: Any, aim: bool) -> None:
        if aim:
            session_id, token = target.live()
            if case.path_parameters and "session_id" in case.path_parameters:
                case.path_parameters["session_id"] = session_id
            case.headers = {**(case.headers or {}), "X-Session-Token": token}
        headers = {} if case.headers and "Authorization" in case.headers else AUTH
        response = case.call(base_url=sim.base_url, headers=headers, timeout=10)
        operation = f"{case.operation.method.upper()} {case.operation.path}"
        if operation == "PUT /_sim/faults":
            sim.set_faults(FaultConfig())
        elif operation == "PUT /_sim/llm/faults":
            assert target.http.put("/_sim/llm/faults", json={}).status_code == 200
        target.statuses[response.status_code] += 1
        if response.status_code >= 500:
            target.server_errors.append(f"{operation}: {response.status_code} {response.text}")

    run()
    assert sum(target.statuses.values()) >= examples // 2, target.statuses
    assert target.server_errors == [], target.server_errors


def test_schema_lists_every_route(target: Target) -> None:
    schema = target.http.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}/tasks",
        "/api/v1/sessions/{session_id}",
        "/_sdk/v0/sessions",
        "/_sdk/v0/sessions/tasks",
        "/_sdk/v0/sessions/cancel_all_speech_tasks",
        "/_sdk/v0/sessions/config",
        "/_sdk/v0/sessions/start_stream",
        "/_sim/state",
        "/_sim/faults",
        "/_sim/sessions/{session_id}/kill",
    } <= paths
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])


def test_no_server_error_for_any_generated_request(target: Target) -> None:
    fuzz(target, QUICK)
    # Both kinds of answer were reached: refusals, and requests the simulator carried out.
    assert any(400 <= s < 500 for s in target.statuses), target.statuses
    assert target.statuses[200] > 0, target.statuses


@pytest.mark.slow
def test_no_server_error_for_any_generated_request_long_run(target: Target) -> None:
    fuzz(target, 2000)
