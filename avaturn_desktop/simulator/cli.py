"""``avaturn-desktop simulator``: run the simulated service in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# Fault kinds are plain values: importing them does not pull in the server.
from avaturn_desktop.simulator.faults import AFTER_ACCEPT_KINDS

if TYPE_CHECKING:
    # The server (FastAPI, uvicorn) is imported when the simulator runs, not when the app's
    # command line is merely built: that keeps the app's start-up free of it.
    from avaturn_desktop.simulator.server import SimulatorConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (the top-level CLI's subcommand uses this)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="the only API key accepted (default: any non-empty bearer key)",
    )
    parser.add_argument(
        "--voice",
        dest="voices",
        action="append",
        default=[],
        metavar="ID",
        help="add a voice id to the catalogue (repeatable); other ids get 400",
    )
    parser.add_argument("--chars-per-second", type=float, default=15.0, help="speaking rate")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="divide user_absent_timeout and max_duration by this",
    )
    parser.add_argument(
        "--phrase-ids",
        choices=["task", "own"],
        default="task",
        help="phrase_id equals task_id ('task') or is an unrelated id ('own')",
    )
    llm = parser.add_argument_group("language model stand-in (POST /v1/chat/completions)")
    llm.add_argument(
        "--llm-tokens-per-second",
        type=float,
        default=20.0,
        metavar="N",
        help="how fast answers stream (default: 20)",
    )
    llm.add_argument(
        "--llm-api-key",
        default=None,
        metavar="KEY",
        help="the only language model key accepted (default: any non-empty bearer key)",
    )
    faults = parser.add_argument_group("fault injection (also at run time: PUT /_sim/faults)")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="delay of every call")
    faults.add_argument("--jitter-ms", type=float, default=0.0, help="± random extra delay")
    faults.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 5xx")
    faults.add_argument("--error-status", type=int, default=503, help="status of those answers")
    faults.add_argument("--error-burst", type=int, default=0, help="the first N calls get 5xx")
    faults.add_argument("--rate-limit-burst", type=int, default=0, help="the first N calls get 429")
    faults.add_argument(
        "--rate-limit-rate", type=float, default=0.0, help="fraction of calls that start a burst"
    )
    faults.add_argument(
        "--rate-limit-burst-len", type=int, default=1, help="429s in a burst started that way"
    )
    faults.add_argument(
        "--retry-after",
        default="1",
        metavar="VALUE",
        help="Retry-After of a 429: seconds, or any header value sent verbatim (inf, a date, ...)",
    )
    faults.add_argument(
        "--reset-rate", type=float, default=0.0, help="fraction of calls reset without answer"
    )
    faults.add_argument(
        "--after-accept-rate",
        type=float,
        default=0.0,
        help="fraction of accepted task calls whose answer is then replaced by a fault",
    )
    faults.add_argument(
        "--after-accept",
        dest="after_accept",
        action="append",
        choices=AFTER_ACCEPT_KINDS,
        default=[],
        help="what such a call answers (repeatable; default 503)",
    )
    faults.add_argument(
        "--after-accept-routes",
        choices=["tasks", "all"],
        default="tasks",
        help="which calls --after-accept-rate applies to",
    )
    faults.add_argument(
        "--hang-ms", type=float, default=30_000.0, help="how long a 'hang' holds the answer"
    )
    faults.add_argument(
        "--fault-seed",
        type=int,
        default=None,
        metavar="N",
        help="seed the fault schedule: the same seed and calls give the same faults",
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    from avaturn_desktop.simulator.faults import FaultConfig
    from avaturn_desktop.simulator.llm import LlmConfig
    from avaturn_desktop.simulator.server import SimulatorConfig

    return SimulatorConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        extra_voices=list(args.voices),
        chars_per_second=args.chars_per_second,
        time_scale=args.time_scale,
        phrase_ids=args.phrase_ids,
        faults=FaultConfig(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            error_rate=args.error_rate,
            error_status=args.error_status,
            error_burst=args.error_burst,
            rate_limit_burst=args.rate_limit_burst,
            rate_limit_rate=args.rate_limit_rate,
            rate_limit_burst_len=args.rate_limit_burst_len,
            **_retry_after(args.retry_after),
            reset_rate=args.reset_rate,
            after_accept_rate=args.after_accept_rate,
            after_accept=args.after_accept or ["503"],
            after_accept_routes=args.after_accept_routes,
            hang_ms=args.hang_ms,
            seed=args.fault_seed,
        ),
        llm=LlmConfig(tokens_per_second=args.llm_tokens_per_second, api_key=args.llm_api_key),
    )


def _retry_after(value: str) -> dict[str, Any]:
    """``--retry-after``: whole seconds as the number knob, anything else sent verbatim."""
    if value.isdigit():
        return {"retry_after_s": int(value)}
    return {"retry_after": value}


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then stop cleanly and return 0."""
    config = config_from_args(args)

    def ready(base_url: str) -> None:
        sys.stdout.write(f"Avaturn simulator listening on {base_url}\n")
        from avaturn_desktop.simulator.server import SDK_PATH

        sys.stdout.write(f"Simulated Web SDK: {base_url}{SDK_PATH}\n")
        sys.stdout.flush()

    try:
        return asyncio.run(_run(config, ready))
    except OSError as exc:  # e.g. the port is taken
        sys.stderr.write(f"Avaturn simulator could not start: {exc}\n")
        return 1


async def _run(config: SimulatorConfig, ready: Callable[[str], None]) -> int:
    from avaturn_desktop.simulator.server import serve

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    installed: list[signal.Signals] = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    server = asyncio.create_task(serve(config, ready=ready))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not server.done():
            server.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        with contextlib.suppress(asyncio.CancelledError):
            await server
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avaturn_desktop.simulator",
        description="Run the local Avaturn Live simulator in the foreground.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
