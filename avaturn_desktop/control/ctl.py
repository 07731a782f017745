"""``avaturn-desktop ctl``: the control API from a terminal or a script (Qt-free).

It finds the running app through ``control.json`` and the token in the data directory (or
``AVATURN_DESKTOP_CONTROL_TOKEN``), calls the API, prints the JSON answer (or a plain field),
and exits 0; on any failure it prints one line to stderr and exits 1 (2: bad usage).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from avaturn_desktop.services.control_token import TOKEN_ENV, load_token, read_discovery

#: ``ctl NAME`` → (method, path, how the arguments become the body)
SIMPLE = {
    "stop": ("POST", "/api/v1/stop"),
    "resume": ("POST", "/api/v1/resume"),
    "end": ("POST", "/api/v1/session/end"),
    "go": ("POST", "/api/v1/cues/go"),
    "back": ("POST", "/api/v1/cues/back"),
    "skip": ("POST", "/api/v1/cues/skip"),
    "queue": ("GET", "/api/v1/queue"),
    "cues": ("GET", "/api/v1/cues"),
    "health": ("GET", "/api/v1/health"),
}


class CtlError(Exception):
    """A one-line reason the call did not happen."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slot", type=int, default=0, help="the avatar slot (default 0)")
    sub = parser.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    state = sub.add_parser("state", help="the app's state as JSON, or one field (dotted path)")
    state.add_argument("field", nargs="?", help="e.g. session.state")
    say = sub.add_parser("say", help="queue text (cut into sentences)")
    say.add_argument("text", nargs="+")
    say.add_argument("--now", action="store_true", help="cut off what plays and say it now")
    start = sub.add_parser("start", help="start a session")
    start.add_argument("--avatar", dest="avatar_id")
    start.add_argument("--voice", dest="voice_id")
    start.add_argument("--max-duration", dest="max_duration", type=int)
    start.add_argument("--user-absent-timeout", dest="user_absent_timeout", type=int)
    voice = sub.add_parser("voice", help="change the voice mid-session")
    voice.add_argument("voice_id")
    remove = sub.add_parser("remove", help="remove a waiting item from the queue")
    remove.add_argument("item_id", type=int)
    log = sub.add_parser("log", help="task-log rows, newest first")
    log.add_argument("--limit", type=int, default=20)
    log.add_argument("--session")
    go = sub.add_parser("go", help="speak the standby cue")
    go.add_argument("--now", action="store_true", help="cut off what plays")
    standby = sub.add_parser("standby", help="put a cue on standby (numbered from 0)")
    standby.add_argument("index", type=int)
    load = sub.add_parser("load", help="load a script (.txt or .md) into the cue list")
    load.add_argument("path", help="the script's file (read by the app)")
    audience = sub.add_parser("audience", help="open or close the audience output")
    audience.add_argument("state", choices=["on", "off"])
    audience.add_argument("--screen", type=int, help="the screen, numbered from 0")
    audience.add_argument("--windowed", action="store_true", help="not full screen")
    captions = sub.add_parser("captions", help="captions on or off")
    captions.add_argument("state", choices=["on", "off"])
    for name in ("stop", "resume", "end", "back", "skip", "queue", "cues", "health"):
        sub.add_parser(name, help=f"{SIMPLE[name][0]} {SIMPLE[name][1]}")


def request_for(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    command = args.ctl_command
    if command == "state":
        field = (args.field or "").strip(".")
        return "GET", "/api/v1/state" + (f"/{field}" if field else ""), None
    if command == "say":
        return "POST", "/api/v1/say", {"text": " ".join(args.text), "now": args.now}
    if command == "start":
        body = {
            k: getattr(args, k)
            for k in ("avatar_id", "voice_id", "max_duration", "user_absent_timeout")
            if getattr(args, k) is not None
        }
        return "POST", "/api/v1/session/start", body
    if command == "voice":
        return "POST", "/api/v1/voice", {"voice_id": args.voice_id}
    if command == "remove":
        return "DELETE", f"/api/v1/queue/{args.item_id}", None
    if command == "log":
        query = f"?limit={args.limit}" + (f"&session={args.session}" if args.session else "")
        return "GET", "/api/v1/log" + query, None
    if command == "go":
        return "POST", "/api/v1/cues/go", {"now": True} if args.now else None
    if command == "standby":
        return "POST", "/api/v1/cues/standby", {"index": args.index}
    if command == "load":
        return "POST", "/api/v1/cues/load", {"path": str(Path(args.path).expanduser().resolve())}
    if command == "audience":
        output: dict[str, Any] = {"open": args.state == "on"}
        if args.screen is not None:
            output["screen"] = args.screen
        if args.state == "on":
            output["fullscreen"] = not args.windowed
        return "POST", "/api/v1/output/audience", output
    if command == "captions":
        return "POST", "/api/v1/output/captions", {"on": args.state == "on"}
    method, path = SIMPLE[command]
    return method, path, None


def call(data_dir: Path, method: str, path: str, body: dict[str, Any] | None, slot: int) -> Any:
    """One call to the running app; returns the decoded answer or raises :class:`CtlError`."""
    import httpx

    found = read_discovery(data_dir)
    if found is None:
        raise CtlError(
            f"no running Avaturn Desktop with the control API on was found for {data_dir} "
            "(start it with --control-port N, or turn the API on in Settings)"
        )
    token = load_token(data_dir, create=False)
    if token is None:
        raise CtlError(f"no control token: set {TOKEN_ENV} or check {data_dir}/control-token")
    url = str(found["url"]).rstrip("/") + path
    params = {"slot": str(slot)} if slot else None
    try:
        response = httpx.request(
            method,
            url,
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )
    except httpx.TransportError as exc:
        raise CtlError(
            f"the app at {found['url']} did not answer ({exc.__class__.__name__}); "
            "it may have stopped"
        ) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        raise CtlError(f"{response.status_code}: {detail or response.reason_phrase}")
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def run(args: argparse.Namespace) -> int:
    from avaturn_desktop.core.paths import data_dir

    method, path, body = request_for(args)
    try:
        answer = call(data_dir(), method, path, body, args.slot)
    except CtlError as exc:
        print(f"avaturn-desktop ctl: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if isinstance(answer, str):
        print(answer)  # noqa: T201
    else:
        print(json.dumps(answer, indent=2, ensure_ascii=False))  # noqa: T201
    return 0
