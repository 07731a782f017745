"""The command line: ``avaturn-desktop [run] | simulator | log export``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from avaturn_desktop import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avaturn-desktop",
        description=(
            "A desktop control panel for Avaturn Live talking avatars. With no API key it runs "
            "on the built-in simulator."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="open the control panel (the default)")
    add_run_arguments(run)

    sim = sub.add_parser(
        "simulator", help="run the local simulator of the Avaturn service in the foreground"
    )
    from avaturn_desktop.simulator import cli as simulator_cli

    simulator_cli.add_arguments(sim)

    ctl = sub.add_parser(
        "ctl",
        help="drive the running app through its control API (state, say, stop, go, ...)",
        description="Drive the running app through its control API. It finds the app "
        "through control.json and the token in the data directory.",
    )
    from avaturn_desktop.control import ctl as ctl_mod

    ctl_mod.add_arguments(ctl)

    from avaturn_desktop import install

    install.add_arguments(
        sub.add_parser("install-desktop", help="add the app to the desktop's menu (and autostart)")
    )

    pin = sub.add_parser("pin", help="the kiosk's staff PIN (opens the console in --kiosk)")
    pin.add_argument("pin_action", choices=["set", "clear", "status"], metavar="set|clear|status")

    log = sub.add_parser("log", help="the task log")
    log_sub = log.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    export = log_sub.add_parser("export", help="export the task log as CSV, JSONL or SRT")
    export.add_argument("--session", metavar="ID", help="only this session")
    export.add_argument("--format", required=True, choices=["csv", "jsonl", "srt"])
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export.add_argument("--database", metavar="FILE", help=argparse.SUPPRESS)
    return parser


def run_parser() -> argparse.ArgumentParser:
    """``avaturn-desktop run``'s parser alone, as :func:`build_parser` makes it."""
    parser = argparse.ArgumentParser(
        prog="avaturn-desktop run", description="Open the control panel (the default command)."
    )
    add_run_arguments(parser)
    parser.set_defaults(command="run")
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument(
        "--simulator",
        action="store_true",
        help="use the in-process simulator even when an API key is set",
    )
    backend.add_argument(
        "--api-base",
        metavar="URL",
        help="the service's base URL (a staging server or an external simulator)",
    )
    parser.add_argument("--sdk-url", metavar="URL", help="where the page loads the Web SDK from")
    parser.add_argument(
        "--auto-start", action="store_true", help="create a session as soon as the window is up"
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="run without a screen (Qt's offscreen platform), e.g. on a server or in CI",
    )
    parser.add_argument(
        "--say",
        metavar="TEXT",
        action="append",
        default=[],
        help="queue this text at start (repeatable); it is spoken once a session is live "
        "(with --auto-start or --kiosk, as soon as it is)",
    )
    parser.add_argument(
        "--exit-after",
        choices=["shown", "live", "first-word"],
        help="quit once the window is shown, once a session went live, or once the first "
        "line of --say started speaking (the session is then terminated); prints the seconds "
        "it took. For smoke tests and benchmarks",
    )
    parser.add_argument(
        "--control-port",
        metavar="N",
        type=_port,
        help="turn on the local control API on this loopback port (0: a free port; the URL "
        "is written to control.json in the data directory)",
    )
    parser.add_argument(
        "--kiosk",
        action="store_true",
        help="unattended: the avatar full screen, the console behind the staff PIN "
        "(Ctrl+Alt+Shift+S), the control API on, a session kept live (restarted after every "
        "ending), leftover sessions ended without asking",
    )
    parser.add_argument(
        "--control-host",
        metavar="ADDR",
        help="bind the control API to this address instead of loopback (it is then reachable "
        "from the network; the app says so)",
    )
    parser.add_argument(
        "--script",
        metavar="FILE",
        help="open this script (.txt or .md: one cue a paragraph, '# ' section titles, '// ' "
        "presenter notes) in the cue list",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="console log level (the log file always has DEBUG)",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # "run" is the default command: `avaturn-desktop --simulator` means `run --simulator`.
    if not args_list or (
        args_list[0].startswith("-")
        and args_list[0]
        not in (
            "-h",
            "--help",
            "--version",
        )
    ):
        args_list.insert(0, "run")
    if args_list[0] == "run":
        # the app itself: only its own flags (the other commands' parsers import more)
        args = run_parser().parse_args(args_list[1:])
        from avaturn_desktop import app

        return app.main(args)
    args = build_parser().parse_args(args_list)
    if args.command == "simulator":
        from avaturn_desktop.simulator import cli as simulator_cli

        return simulator_cli.run(args)
    if args.command == "install-desktop":
        from avaturn_desktop import install

        return install.run(args)
    if args.command == "log":
        return _log_export(args)
    if args.command == "pin":
        return _pin(args)
    if args.command == "ctl":
        from avaturn_desktop.control import ctl as ctl_mod

        return ctl_mod.run(args)
    from avaturn_desktop import app

    return app.main(args)


def _pin(args: argparse.Namespace) -> int:
    """``pin set`` asks twice without echo (never on the command line); ``clear``, ``status``."""
    import getpass

    from avaturn_desktop.core.errors import AppError
    from avaturn_desktop.core.pin import StaffPin

    pin = StaffPin.open_default()
    try:
        if args.pin_action == "status":
            print("a staff PIN is set" if pin.is_set else "no staff PIN is set")  # noqa: T201
        elif args.pin_action == "clear":
            pin.clear()
            print("staff PIN removed")  # noqa: T201
        else:
            first = getpass.getpass("New staff PIN: ")
            if getpass.getpass("Again: ") != first:
                print("avaturn-desktop: the two PINs differ; nothing changed", file=sys.stderr)  # noqa: T201
                return 1
            pin.set(first)
            print("staff PIN set")  # noqa: T201
    except AppError as exc:
        print(f"avaturn-desktop: {exc.user_message}", file=sys.stderr)  # noqa: T201
        return 1
    except (EOFError, KeyboardInterrupt):
        print("avaturn-desktop: no PIN entered; nothing changed", file=sys.stderr)  # noqa: T201
        return 1
    return 0


def _log_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avaturn_desktop.services.export import ExportFormat, export_log
    from avaturn_desktop.services.tasklog import TaskLogStore

    if args.database:
        path = Path(args.database)
    else:
        from avaturn_desktop.core.paths import data_dir

        path = data_dir() / "tasklog.sqlite3"
    if not path.exists():
        # A fresh install has no log yet: its export is empty (CSV: the header alone).
        print(f"avaturn-desktop: no task log yet at {path}; the export is empty", file=sys.stderr)  # noqa: T201
        from avaturn_desktop.services.export import export_records

        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                export_records([], ExportFormat(args.format), out)
        else:
            export_records([], ExportFormat(args.format), sys.stdout)
        return 0
    store = TaskLogStore(path)
    try:
        fmt = ExportFormat(args.format)
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                rows = export_log(store, fmt, out, session_id=args.session)
            print(f"{rows} rows written to {args.output}", file=sys.stderr)  # noqa: T201
        else:
            export_log(store, fmt, sys.stdout, session_id=args.session)
    finally:
        store.close()
    return 0
