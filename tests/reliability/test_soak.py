"""The kiosk soak (``soak.py``): at least 24 simulated hours in the slow run, a simulated hour
and a bit in the default one, of sessions ended every few simulated minutes by each cause in
turn while lines are queued and spoken. The figures are printed and written to
``.cache/reliability/soak-<variant>.json``; ``docs/reliability.md`` quotes the slow run's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import FaultLedger
from tests.reliability.soak import CAUSES, Figures, Plan, Soak
from tests.reliability.tally import REPO

pytestmark = [
    pytest.mark.web,
    # a killed renderer is a crash Qt reports; here it is the point
    pytest.mark.qt_log_ignore(r"Render process exited", r"renderer process"),
]

#: Figures of the runs of this session, by variant (the lost-lines check reads them).
RESULTS: dict[str, Figures] = {}

VARIANTS = [
    pytest.param("quick", 1.3, marks=pytest.mark.timeout(110), id="quick"),
    pytest.param("24h", 24.0, marks=[pytest.mark.slow, pytest.mark.timeout(2400)], id="24h"),
]


@pytest.mark.parametrize(("variant", "hours"), VARIANTS)
def test_a_kiosk_recovers_from_every_ending_for_hours_and_never_doubles_a_line(
    variant: str,
    hours: float,
    tmp_path: Path,
    loop: asyncio.AbstractEventLoop,
    ledger: FaultLedger,
) -> None:
    soak = Soak(Plan(sim_hours=hours), tmp_path / "kiosk")
    figures = loop.run_until_complete(soak.run())
    out = REPO / ".cache" / "reliability" / f"soak-{variant}.json"
    soak.write(out)
    RESULTS[variant] = figures
    print(json.dumps(figures.as_json(), indent=2))
    for cause, count in figures.injected.items():
        ledger.inject(f"soak:{cause}", count)

    assert figures.stuck == []
    assert figures.sim_hours >= hours
    assert all(figures.injected[cause] > 0 for cause in CAUSES), figures.injected
    # every ending was followed by a restart the supervisor counted
    assert sum(figures.restarts_by_reason.values()) >= sum(figures.injected.values())
    assert figures.restarts_by_reason.get("page_crashed", 0) >= figures.injected["renderer_crash"]
    assert figures.restarts_by_reason.get("heartbeat_lost", 0) >= figures.injected["frozen_video"]
    assert figures.stage_problems["frozen"] >= figures.injected["frozen_video"]
    back = figures.as_json()["back_live_s"]
    assert all(stats["max"] < 15 for stats in back.values()), back
    # what the audience heard: never a line twice to its end
    assert figures.lines_fed > 0 and figures.lines_spoken_once > 0
    assert figures.lines_doubled == 0
    # memory: bounded over the run
    start, end = figures.memory_mb["start"], figures.memory_mb["end"]
    assert end["app"] < start["app"] + 300, figures.memory_mb
    assert end["page_processes"] < start["page_processes"] + 600, figures.memory_mb


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_memory_per_session_with_one_renderer_all_along(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """Sessions ended on the service only (no renderer killed, none reloaded): how the app's
    and its page processes' memory grow per session (figures for the docs; bounded loosely)."""
    soak = Soak(Plan(sim_hours=5, causes=("kill",), memory_every_s=15), tmp_path / "kiosk")
    figures = loop.run_until_complete(soak.run())
    soak.write(REPO / ".cache" / "reliability" / "soak-memory.json")
    print(json.dumps(figures.as_json()["memory_timeline"]))
    (_, app0, page0), (_, app1, page1) = figures.memory_timeline[0], figures.memory_timeline[-1]
    sessions = figures.sessions_live
    app_mb, page_mb = (app1 - app0) / sessions, (page1 - page0) / sessions
    print(f"per session: app {app_mb:.1f} MB, page processes {page_mb:.1f} MB")
    assert figures.stuck == [] and figures.lines_doubled == 0
    assert app_mb < 10 and page_mb < 30


@pytest.mark.parametrize(("variant", "hours"), VARIANTS)
def test_the_soak_loses_no_line(variant: str, hours: float) -> None:
    figures: Any = RESULTS.get(variant)
    if figures is None:
        pytest.skip("the soak of this variant did not run")
    assert figures.lines_lost == 0, figures.lost_examples
    assert figures.lines_doubled == 0, figures.doubled_examples
