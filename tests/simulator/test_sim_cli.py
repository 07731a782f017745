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

    def start(
        *args: str, env: dict[str, str] | None = None, stdin_line: str | None = None
    ) -> tuple[subprocess.Popen[str], str]:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "avaturn_desktop.simulator", "--port", "0", *args],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.PIPE if stdin_line is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        if stdin_line is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin_line)
            proc.stdin.flush()
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
        for stream in (proc.stdin, proc.stdout, proc.stderr):
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


# -- the key, the binding, bad flags ---------------------------------------------------------

ENV_KEY = "env-key-0123"


def test_the_key_from_the_environment_locks_it(launch):
    proc, base_url = launch(env={cli.API_KEY_ENV: ENV_KEY})
    url = base_url + "/api/v1/sessions"
    assert httpx.post(url, headers={"Authorization": "Bearer other"}).status_code == 401
    assert httpx.post(url, headers={"Authorization": f"Bearer {ENV_KEY}"}).status_code == 200
    assert httpx.get(base_url + "/_sim/state").status_code == 401
    assert (
        httpx.get(base_url + "/_sim/faults", headers={"Origin": "https://evil.example"}).status_code
        == 403
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert "no API key" not in proc.stderr.read()


def test_the_flag_wins_over_the_environment(launch):
    _proc, base_url = launch("--api-key", "flag-key", env={cli.API_KEY_ENV: ENV_KEY})
    url = base_url + "/api/v1/sessions"
    assert httpx.post(url, headers={"Authorization": "Bearer flag-key"}).status_code == 200
    assert httpx.post(url, headers={"Authorization": f"Bearer {ENV_KEY}"}).status_code == 401


def test_the_key_from_stdin_and_exit_when_stdin_ends(launch):
    proc, base_url = launch("--api-key-stdin", "--exit-on-stdin-eof", stdin_line="stdin-key\n")
    auth = {"Authorization": "Bearer stdin-key"}
    assert httpx.post(base_url + "/api/v1/sessions", headers=auth).status_code == 200
    assert httpx.get(base_url + "/_sim/state").status_code == 401
    assert proc.stdin is not None
    proc.stdin.close()  # what the kernel does when the parent dies
    assert proc.wait(timeout=10) == 0
    assert "Traceback" not in proc.stderr.read()


def test_without_a_key_it_says_it_is_open(launch):
    proc, _ = launch(env={cli.API_KEY_ENV: ""})
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert "no API key" in proc.stderr.read()


def test_bound_to_every_interface_it_prints_a_reachable_url_and_says_so(launch):
    proc, base_url = launch("--host", "0.0.0.0")
    assert base_url.startswith("http://127.0.0.1:")  # 0.0.0.0 is no address to connect to
    assert httpx.get(base_url + "/sim/web-sdk.js").status_code == 200
    assert proc.stdout is not None
    note = proc.stdout.readline()
    port = base_url.rsplit(":", 1)[1]
    assert note.startswith(f"Bound to 0.0.0.0 port {port}: every IPv4 interface"), note
    lan = re.search(r"reach it at http://(\S+):" + port, note)
    assert lan, note
    if not lan.group(1).startswith("<"):
        reached = httpx.get(f"http://{lan.group(1)}:{port}/sim/web-sdk.js")
        assert reached.status_code == 200


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "-1"], "--port"),
        (["--chars-per-second", "0"], "--chars-per-second"),
        (["--chars-per-second", "nan"], "--chars-per-second"),
        (["--chars-per-second", "inf"], "--chars-per-second"),
        (["--chars-per-second", "1e400"], "--chars-per-second"),
        (["--time-scale", "-2"], "--time-scale"),
        (["--api-key", "a secret key"], "--api-key"),
        (["--api-key", ""], "--api-key"),
        (["--api-key", "k\u00e9y"], "--api-key"),
        (["--allow-origin", ""], "--allow-origin"),
        (["--allow-host", ""], "--allow-host"),
        (["--latency-ms", "-1"], "--latency-ms"),
        (["--error-rate", "2"], "--error-rate"),
        (["--error-status", "200"], "--error-status"),
    ],
)
def test_bad_flags_get_one_line_not_a_traceback(capsys, flags, flag):
    assert cli.main(flags) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"python -m avaturn_desktop.simulator: error: argument {flag}: ")
    assert "Traceback" not in err and "pydantic" not in err and "validation error" not in err
    if flag == "--api-key":
        assert flags[1] not in err or not flags[1]  # the refused key is not echoed


def test_bad_flags_through_the_app_s_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "avaturn_desktop", "simulator", "--port", "70000"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "avaturn-desktop simulator: error: argument --port: "
        "Input should be less than or equal to 65535"
    )


def test_the_stdin_key_must_be_there(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main(["--api-key-stdin"]) == 2
    assert "--api-key-stdin" in capsys.readouterr().err


def test_the_simulator_process_never_loads_pydantic_v1(launch):
    """FastAPI imports pydantic.v1 (~20 ms of the child's start) only to check that no route
    uses a v1 model; the simulator's process refuses it, and every route still works."""
    proc, base_url = launch("--api-key", "k", env={"PYTHONPROFILEIMPORTTIME": "1"})
    key = {"Authorization": "Bearer k"}
    created = httpx.post(base_url + "/api/v1/sessions", headers=key, json={})
    assert created.status_code == 200
    bad = httpx.post(base_url + "/api/v1/sessions", headers=key, json={"avatar_id": ""})
    assert bad.status_code == 422  # the request models still validate
    assert httpx.get(base_url + "/openapi.json").json()["paths"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    imports = proc.stderr.read()
    assert re.search(r"\| +fastapi$", imports, re.M)  # the import log is there
    # a v1 import that went through would load its modules (a refused one logs only its name)
    assert "pydantic.v1." not in imports
    assert "Traceback" not in imports
