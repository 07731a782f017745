"""``avaturn-desktop simulator``: run the simulated service in the foreground.

The key can come from ``--api-key``, from ``AVATURN_SIMULATOR_API_KEY`` (so it need not sit on
a command line, where every user of the machine can read it), or from the first line of
standard input (``--api-key-stdin``: how the app hands a child simulator its per-run key). With
a key the simulator is locked: see ``server``. With ``--exit-on-stdin-eof`` it stops when its
standard input closes, which is how it follows a parent that died without a word.

Its first two lines on standard output are fixed (the app and the tests read them):
``Avaturn simulator listening on <base URL>`` and ``Simulated Web SDK: <SDK URL>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# Fault kinds are plain values: importing them does not pull in the server.
from avaturn_desktop.simulator.faults import AFTER_ACCEPT_KINDS

if TYPE_CHECKING:
    # The server (FastAPI, uvicorn) is imported when the simulator runs, not when the app's
    # command line is merely built: that keeps the app's start-up free of it.
    import pydantic

    from avaturn_desktop.simulator.server import SimulatorConfig

#: Where the key may come from instead of the command line.
API_KEY_ENV = "AVATURN_SIMULATOR_API_KEY"
PROG = "avaturn-desktop simulator"


class UsageError(Exception):
    """A flag's value the simulator cannot run with; printed as argparse prints its errors."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (the top-level CLI's subcommand uses this)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument(
        "--listen-fd",
        type=int,
        default=None,
        metavar="FD",
        help="serve on this inherited, already listening socket (a parent process bound it; "
        "--host and --port are then ignored)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the only API key accepted, also for /_sim (default: ${API_KEY_ENV}; without "
        "either, any non-empty bearer key and any web page's origin)",
    )
    parser.add_argument(
        "--api-key-stdin",
        action="store_true",
        help="read the API key from the first line of standard input",
    )
    parser.add_argument(
        "--allow-origin",
        dest="allowed_origins",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="an origin whose pages may call the simulator (repeatable; '*' any). Default: "
        "the app's page (avaturn://stage) with a key, any origin without",
    )
    parser.add_argument(
        "--allow-host",
        dest="allowed_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients may use besides the addresses it listens on (repeatable)",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when standard input closes (a parent process uses this to take the "
        "simulator down with it)",
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
        "--video-fault",
        choices=["none", "freeze", "black"],
        default="none",
        help="the avatar's picture in every session: frozen on its last frame, or black",
    )
    faults.add_argument(
        "--audio-fault",
        choices=["none", "mute"],
        default="none",
        help="the avatar's voice in every session: silent even while it speaks",
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
        listen_fd=getattr(args, "listen_fd", None),
        api_key=_api_key(args),
        allowed_origins=args.allowed_origins,
        allowed_hosts=list(args.allowed_hosts),
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
            video_fault=args.video_fault,
            audio_fault=args.audio_fault,
            after_accept_rate=args.after_accept_rate,
            after_accept=args.after_accept or ["503"],
            after_accept_routes=args.after_accept_routes,
            hang_ms=args.hang_ms,
            seed=args.fault_seed,
        ),
        llm=LlmConfig(tokens_per_second=args.llm_tokens_per_second, api_key=args.llm_api_key),
    )


def _api_key(args: argparse.Namespace) -> str | None:
    """The key from standard input, the command line or the environment, in that order."""
    if getattr(args, "api_key_stdin", False):
        key = sys.stdin.readline().rstrip("\r\n")
        if not key:
            raise UsageError("argument --api-key-stdin: no key on the first line of input")
        return key
    if args.api_key is not None:
        return str(args.api_key)
    return os.environ.get(API_KEY_ENV) or None


def _retry_after(value: str) -> dict[str, Any]:
    """``--retry-after``: whole seconds as the number knob, anything else sent verbatim."""
    if value.isdigit():
        return {"retry_after_s": int(value)}
    return {"retry_after": value}


#: The flag of each config field, for error messages; fault fields follow their flags' names.
_FLAGS = {
    "api_key": "--api-key",
    "allowed_origins": "--allow-origin",
    "allowed_hosts": "--allow-host",
    "extra_voices": "--voice",
}


def _flag(loc: tuple[int | str, ...]) -> str:
    names = [str(part) for part in loc if isinstance(part, str) and part != "faults"]
    if not names:
        return "arguments"
    return _FLAGS.get(names[0], "--" + names[0].replace("_", "-").removesuffix("-s"))


def _usage_error(error: pydantic.ValidationError) -> UsageError:
    """The refused flags on one line, as argparse words them (never a value: it may be the key)."""
    lines = [f"argument {_flag(e['loc'])}: {e['msg']}" for e in error.errors(include_input=False)]
    return UsageError("; ".join(lines))


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """``config_from_args``, with a refused value raised as a ``UsageError``."""
    import pydantic

    try:
        return config_from_args(args)
    except pydantic.ValidationError as exc:
        raise _usage_error(exc) from None


def run(args: argparse.Namespace, prog: str = PROG) -> int:
    """Serve until SIGINT, SIGTERM (or EOF on stdin if asked), then stop cleanly and return 0.

    A flag the simulator cannot run with prints one line, ``<prog>: error: ...``, and returns 2
    (as argparse does); a port it cannot bind prints why and returns 1.
    """
    try:
        config = build_config(args)
    except UsageError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2

    def ready(base_url: str) -> None:
        from avaturn_desktop.simulator.listen import SDK_PATH

        lines = [
            f"Avaturn simulator listening on {base_url}",
            f"Simulated Web SDK: {base_url}{SDK_PATH}",
            *binding_notes(config.host, base_url),
        ]
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()

    if not config.locked:
        sys.stderr.write(
            f"{prog}: no API key: any bearer key is accepted and any web page may call it. "
            f"To lock it, pass --api-key or set {API_KEY_ENV}.\n"
        )
    # This process is the simulator's alone from here. FastAPI imports pydantic.v1 (~20 ms of
    # the child's start) as each route is set up, only to check that no model is a v1 one;
    # the simulator has none. A None entry makes that import fail, which FastAPI reads as
    # "no v1 models" (as on a pydantic without v1); nothing else changes.
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]
    try:
        return asyncio.run(
            _run(config, ready, watch_stdin=getattr(args, "exit_on_stdin_eof", False))
        )
    except OSError as exc:  # e.g. the port is taken
        sys.stderr.write(f"Avaturn simulator could not start: {exc}\n")
        return 1


def binding_notes(host: str, base_url: str) -> list[str]:
    """What the simulator binds, when the printed URL alone would not say it."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return [f"Bound to {host} (the address above)"]
    if not ip.is_unspecified:
        return []
    port = base_url.rsplit(":", 1)[1]
    lan = _this_machines_address(ip.version)
    elsewhere = f"http://{lan}:{port}" if lan else f"http://<this machine's address>:{port}"
    family = "IPv4" if ip.version == 4 else "IPv6 (and, on most systems, IPv4)"
    return [
        f"Bound to {host} port {port}: every {family} interface. Other machines reach it at "
        f"{elsewhere}; by a host name only with --allow-host NAME"
    ]


def _this_machines_address(version: int) -> str | None:
    """The address this machine leaves by (a UDP socket's route; nothing is sent)."""
    family, probe = (
        (socket.AF_INET, "192.0.2.1") if version == 4 else (socket.AF_INET6, "2001:db8::1")
    )
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((probe, 9))
        address = str(sock.getsockname()[0])
        return f"[{address}]" if version == 6 else address
    return None


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` when standard input reaches its end (the parent closed it, or died)."""

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no stdin: it ended
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="stdin-eof", daemon=True).start()


async def _run(
    config: SimulatorConfig, ready: Callable[[str], None], *, watch_stdin: bool = False
) -> int:
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
    if watch_stdin:
        _watch_stdin(loop, stop)
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
    return run(parser.parse_args(argv), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
