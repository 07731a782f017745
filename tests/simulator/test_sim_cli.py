"""``python -m avaturn_desktop.simulator`` as a real process: prints its URL, stops on signals."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from avaturn_desktop.simulator import cli

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"Avaturn simulator listening on (http://\S+)")


@pytest.fixture
def launch() -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "avaturn_desktop.simulator", "--port", "0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the server prints (or dies)
        match = LISTENING.search(first)
        assert match, (first, proc.stderr.read() if proc.poll() is not None else "")
        sdk_line = proc.stdout.readline()
        assert sdk_line.strip() == f"Simulated Web SDK: {match.group(1)}/sim/web-sdk.js"
        return proc, match.group(1)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_runs_and_stops_cleanly_on_a_signal(launch, sig):
    proc, base_url = launch()
    assert httpx.get(base_url + "/sim/web-sdk.js").status_code == 200
    assert (
        httpx.post(base_url + "/api/v1/sessions", headers={"Authorization": "Bearer k"}).status_code
        == 200
    )
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 0
    assert "Traceback" not in proc.stderr.read()


def test_flags_reach_the_simulator(launch):
    proc, base_url = launch(
        "--api-key",
        "cli-key",
        "--voice",
        "clone-1",
        "--voice",
        "clone-2",
        "--rate-limit-burst",
        "1",
    )
    url = base_url + "/api/v1/sessions"
    assert httpx.post(url, headers={"Authorization": "Bearer cli-key"}).status_code == 429
    assert httpx.post(url, headers={"Authorization": "Bearer other"}).status_code == 401
    body = {
        "conversation_engine": {
            "type": "text-echo",
            "tts": {"engine": "elevenlabs", "voice_id": "clone-2"},
        }
    }
    assert (
        httpx.post(url, headers={"Authorization": "Bearer cli-key"}, json=body).status_code == 200
    )
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_add_arguments_builds_the_config():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "8011",
            "--voice",
            "v1",
            "--chars-per-second",
            "400",
            "--time-scale",
            "10",
            "--latency-ms",
            "5",
            "--error-rate",
            "0.25",
            "--error-status",
            "500",
            "--reset-rate",
            "0.1",
        ]
    )
    config = cli.config_from_args(args)
    assert (config.port, config.extra_voices, config.chars_per_second, config.time_scale) == (
        8011,
        ["v1"],
        400.0,
        10.0,
    )
    assert (config.faults.latency_ms, config.faults.error_rate, config.faults.error_status) == (
        5.0,
        0.25,
        500,
    )
    assert config.faults.reset_rate == 0.1 and config.api_key is None
