"""The built-in simulator started early: when the app guesses it will be used,
and what happens when the guess was wrong."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from avaturn_desktop import prestart
from tests.test_startup import _zombie, run_app


def _args(**flags: object) -> argparse.Namespace:
    return argparse.Namespace(**{"api_base": None, "simulator": False, **flags})


@pytest.mark.parametrize(
    ("flags", "raw", "last", "env_key", "expected"),
    [
        ({}, {}, None, False, True),  # a first run: nothing says there is a key
        ({}, {}, "simulator", False, True),
        ({}, {}, "cloud", False, False),  # its key is probably in the keyring
        ({}, {}, "external", False, False),
        ({}, {}, None, True, False),  # a key in the environment
        ({}, {"backend": "simulator"}, "cloud", True, True),  # the settings insist
        ({"simulator": True}, {}, "cloud", True, True),  # so does --simulator
        ({"api_base": "http://127.0.0.1:9"}, {"backend": "simulator"}, None, False, False),
    ],
)
def test_the_guess_follows_what_is_cheap_to_read(
    tmp_path: Path,
    flags: dict[str, object],
    raw: dict[str, object],
    last: str | None,
    env_key: bool,
    expected: bool,
) -> None:
    if last is not None:
        prestart.remember(tmp_path, last)
    assert prestart.likely_simulator(_args(**flags), raw, tmp_path, env_key) is expected


def test_the_last_backend_is_remembered(tmp_path: Path) -> None:
    prestart.remember(tmp_path, "cloud")
    assert (tmp_path / prestart.LAST_BACKEND_FILE).read_text() == "cloud\n"
    prestart.remember(tmp_path, "simulator")
    assert (tmp_path / prestart.LAST_BACKEND_FILE).read_text() == "simulator\n"


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"llm": 3}', '{"llm": {"sim_tokens_per_second": true}}'],
)
def test_an_unreadable_settings_file_gives_the_default_speed(tmp_path: Path, text: str) -> None:
    (tmp_path / "settings.json").write_text(text)
    raw = prestart._peek_settings(tmp_path)
    assert prestart._tokens_per_second(raw) == prestart.DEFAULT_TOKENS_PER_SECOND


def test_the_early_guess_uses_the_settings_default_speed() -> None:
    """prestart keeps its own copy of the default (it runs before pydantic is imported): a
    copy that drifted would start every early child with the wrong flags, to be replaced."""
    from avaturn_desktop.core.settings import LlmSettings

    assert LlmSettings().sim_tokens_per_second == prestart.DEFAULT_TOKENS_PER_SECOND


@pytest.mark.web
def test_a_wrong_guess_ends_the_early_simulator_and_starts_the_right_one(tmp_path: Path) -> None:
    """The settings' real load refuses a value the quick read took: the child started with it
    is killed at once, and the session runs on one started with the settings' values."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text(
        json.dumps({"schema_version": 1, "llm": {"sim_tokens_per_second": -5}})
    )
    result = run_app(tmp_path, "--headless", "--exit-after", "live")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "session live after" in result.stdout, result.stderr[-3000:]
    early = re.search(r"was started early \(pid (\d+)\)\n", result.stderr)
    unused = re.search(r"started early \(pid (\d+)\) is not used by this run", result.stderr)
    used = re.search(r"the local simulator runs at \S+ \(pid (\d+)\)", result.stderr)
    assert early and unused and used, result.stderr[-3000:]
    assert early.group(1) == unused.group(1) != used.group(1)
    for pid in (early.group(1), used.group(1)):
        assert not Path(f"/proc/{pid}").exists() or _zombie(int(pid))
    assert (tmp_path / prestart.LAST_BACKEND_FILE).read_text() == "simulator\n"


@pytest.mark.web
def test_a_run_after_a_simulator_run_uses_the_early_simulator(tmp_path: Path) -> None:
    prestart.remember(tmp_path, "simulator")
    result = run_app(tmp_path, "--headless", "--exit-after", "live")
    assert result.returncode == 0, result.stderr[-3000:]
    early = re.search(r"was started early \(pid (\d+)\)\n", result.stderr)
    used = re.search(r"the local simulator runs at \S+ \(pid (\d+)\)", result.stderr)
    assert early and used and early.group(1) == used.group(1), result.stderr[-3000:]
    assert "not used by this run" not in result.stderr
