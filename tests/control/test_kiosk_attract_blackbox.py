"""Kiosk mode's attract screen from outside: ``--headless --kiosk`` with the attract screen
after a few idle seconds (the settings file). The session ends by itself, no restart is
counted, and a ``say`` through the control API brings a live session back that speaks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.blackbox import Api, simulator, spoken_texts, start_app, stop, wait_for

pytestmark = [pytest.mark.web, pytest.mark.timeout(180)]
__all__ = ["simulator"]  # the fixture, used by name


def test_an_idle_kiosk_shows_the_attract_screen_and_a_say_wakes_it(
    tmp_path: Path, simulator: str
) -> None:
    home = tmp_path / "kiosk"
    config = home / "config"
    config.mkdir(parents=True)
    settings = {"kiosk": {"attract_after_min": 0.05, "attract_text": "Say hello!"}}  # 3 s
    (config / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    app = start_app(home, simulator, "--kiosk")
    try:
        api = Api(home)
        first = wait_for(
            lambda: api.state()["session"]["state"] == "live" and api.state()["session"]["id"],
            "a live session",
            30,
        )
        state = wait_for(
            lambda: (
                (s := api.state())["attract"]["state"] == "attract"
                and s["session"]["state"] == "ended"
                and s
            ),
            "the attract screen",
            20,
        )
        assert state["session"]["reason"] == "nobody used the kiosk"
        assert state["supervisor"]["status"] == "paused"
        assert state["supervisor"]["restarts"] == 0  # an ending on purpose, not a recovery

        said = api.http.post("/api/v1/say", json={"text": "Welcome back."})
        assert said.status_code == 200, said.text
        second = wait_for(
            lambda: (
                (s := api.state()["session"])["state"] == "live" and s["id"] != first and s["id"]
            ),
            "a live session again",
            10,
        )
        assert api.state()["attract"]["state"] == "live"
        wait_for(
            lambda: ("Welcome back.", "spoken") in spoken_texts(simulator, second),
            "the line to be spoken",
            15,
        )
        assert api.state()["supervisor"]["restarts"] == 0
        api.http.close()
    finally:
        stop(app)
