"""Bad input: fuzzed models, chunker, bridge messages, settings files and log exports; hostile
text through client → simulator → store → export; malformed server answers; hostile JSON and
random bodies to every route of the simulator (never a 5xx).

A "crash" is any exception other than the clear error each door promises (pydantic's
``ValidationError`` for the models, ``PageMessageError`` for the bridge, an ``AppError`` with a
``user_message`` for the client, none at all for the settings loader and the exports). Every
input tried is counted, and so is every crash (the test fails on the first).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avaturn_desktop.core import settings as settings_mod
from avaturn_desktop.core.chunker import SentenceChunker, split_sentences
from avaturn_desktop.core.errors import AppError, ConfigError
from avaturn_desktop.core.events import PageMessageError, parse_page_event
from avaturn_desktop.core.models import (
    MAX_TASK_TEXT,
    SdkConfigPatch,
    SdkSession,
    SessionCreate,
    SessionCreated,
    TaskCreate,
    TaskCreated,
)
from avaturn_desktop.core.tasks import TaskRoute
from avaturn_desktop.services.client import AvaturnClient
from avaturn_desktop.services.export import ExportFormat, export_log
from avaturn_desktop.services.tasklog import TaskLogStore
from avaturn_desktop.simulator.faults import FaultConfig
from avaturn_desktop.simulator.server import SimulatorServer
from tests.reliability.tally import Tally

#: Examples per fuzz target: a quick default, more under ``python -m tests.reliability.report``.
EXAMPLES = int(os.environ.get("AVATURN_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids),
    max_leaves=12,
)

#: Text a presenter might paste, or an attacker might send: every plane, controls, marks.
HOSTILE_TEXTS: dict[str, str] = {
    "huge": ("A sentence of forty characters, or so. " * 130)[:MAX_TASK_TEXT],
    "too_huge": "x" * (MAX_TASK_TEXT + 1),
    "empty": "",
    "blank": " \t\n\u3000 ",
    "control": "Bell\x07 tab\t nul\x00 esc\x1b[31m red \x7f del \x85 nel \u2028 ls.",
    "rtl": "\u202eمرحبا بالعالم\u202c שלום עולם \u200f(test)\u200e.",
    "emoji": "Hi 👋🏽 👨‍👩‍👧‍👦 🏳️‍🌈 and flags 🇺🇦🇯🇵 plus keycap 1️⃣ ok.",
    "combining": "Z̷̢͉̈́a̸͍͌l̵̰͊g̴̣̈ǒ̶̬ text, and e\u0301 vs é.",
    "formula": '=HYPERLINK("http://x","y") +1 -2 @SUM(A1)',
    "markup": "<script>alert(1)</script> {{7*7}} ${x} ' OR 1=1 --",
    "srt_break": "line one\n\n2\n00:00:01,000 --> 00:00:02,000\ninjected cue",
}


def checked(tally: Tally, target: str, fn: Callable[[], Any], *clear: type[BaseException]) -> Any:
    """Run ``fn``; an exception that is not one of ``clear`` is a crash."""
    tally.tried(target)
    try:
        return fn()
    except clear as exc:
        message = str(getattr(exc, "user_message", None) or exc)
        assert message.strip(), f"{target}: {type(exc).__name__} without a message"
        return exc
    except Exception:
        tally.crash(target)
        raise


# -- models ------------------------------------------------------------------------------------

MODELS: list[type[pydantic.BaseModel]] = [
    SessionCreate,
    TaskCreate,
    SdkConfigPatch,
    SessionCreated,
    TaskCreated,
    SdkSession,
]
FIELDS = [
    "avatar_id", "conversation_engine", "background", "model", "user_absent_timeout",
    "max_duration", "text", "session_id", "token", "task_id", "id", "room_url",
    "limited_access_token", "session_config", "type", "tts", "voice_id", "engine",
]  # fmt: skip


@FUZZ
@given(
    model=st.sampled_from(MODELS),
    body=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8) | json_values,
)
def test_models_accept_or_refuse_clearly(tally: Tally, model: Any, body: Any) -> None:
    checked(tally, "models", lambda: model.model_validate(body), pydantic.ValidationError)
    raw = json.dumps(body)
    checked(tally, "models", lambda: model.model_validate_json(raw), pydantic.ValidationError)


@FUZZ
@given(st.binary(max_size=200))
def test_models_refuse_random_bytes_clearly(tally: Tally, raw: bytes) -> None:
    for model in MODELS:
        parse = functools.partial(model.model_validate_json, raw)
        checked(tally, "models", parse, pydantic.ValidationError)


# -- the chunker -------------------------------------------------------------------------------


@FUZZ
@given(text=st.text(max_size=600), max_chars=st.integers(min_value=-5, max_value=120))
def test_chunker_never_loses_text(tally: Tally, text: str, max_chars: int) -> None:
    chunks = checked(tally, "chunker", lambda: split_sentences(text, max_chars), ValueError)
    if isinstance(chunks, ValueError):
        assert max_chars < 1
        return
    assert "".join("".join(c.split()) for c in chunks) == "".join(text.split())
    assert all(c and c == c.strip() and len(c) <= max_chars for c in chunks)


@FUZZ
@given(text=st.text(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_chunker_stream_matches_the_whole(tally: Tally, text: str, cuts: list[int]) -> None:
    def stream() -> list[str]:
        chunker = SentenceChunker(60)
        out: list[str] = []
        last = 0
        for cut in sorted(set(cuts)):
            out += chunker.feed(text[last:cut])
            last = max(last, cut)
        out += chunker.feed(text[last:])
        return out + chunker.flush()

    assert checked(tally, "chunker", stream) == split_sentences(text, 60)


# -- bridge messages ---------------------------------------------------------------------------

EVENT_TYPES = [
    "ready", "sdk_loaded", "sdk_failed", "inited", "init_failed", "avatar_started_speaking",
    "avatar_ended_speaking", "avatar_started_speaking_phrase", "avatar_ended_speaking_phrase",
    "idle", "sdk_error", "disposed", "result", "task", "init", "__proto__", "",
]  # fmt: skip
EVENT_FIELDS = ["type", "phrase_id", "at_ms", "message", "timed_out", "session_id", "code",
                "reason", "ref", "ok", "error", "data"]  # fmt: skip


@FUZZ
@given(
    st.fixed_dictionaries(
        {"type": st.sampled_from(EVENT_TYPES) | json_values},
        optional={f: json_values for f in EVENT_FIELDS[1:]},
    ).map(json.dumps)
    | st.text(max_size=200)
    | json_values.map(json.dumps)
)
def test_bridge_messages_parse_or_raise_the_clear_error(tally: Tally, raw: str) -> None:
    checked(tally, "bridge", lambda: parse_page_event(raw), PageMessageError)


def test_bridge_refuses_odd_objects_and_huge_messages(tally: Tally) -> None:
    odd: list[Any] = [None, 1, b"{}", ["ready"], {"type": "ready"}, "x" * 70_000]
    odd.append(json.dumps({"type": "idle", "pad": "y" * 70_000}))
    odd.append("[" * 50_000 + "]" * 50_000)  # deeply nested JSON
    for raw in odd:
        result = checked(
            tally, "bridge", functools.partial(parse_page_event, raw), PageMessageError
        )
        assert isinstance(result, PageMessageError), raw if len(str(raw)) < 100 else "huge"


# -- the settings loader -----------------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.mkdir()
    return path


settings_files = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(
        st.sampled_from([*settings_mod.Settings.model_fields, "session", "extra"]),
        json_values,
        max_size=6,
    ).map(lambda v: json.dumps(v).encode())
)


@FUZZ
@given(raw=settings_files)
def test_settings_loader_never_crashes(tally: Tally, config_dir: Path, raw: bytes) -> None:
    path = settings_mod.settings_path(config_dir)
    path.write_bytes(raw)
    loaded = checked(tally, "settings", lambda: settings_mod.load(config_dir), ConfigError)
    if isinstance(loaded, ConfigError):
        # only a file from a newer version is refused, and it is left untouched
        assert "newer version" in loaded.user_message
        assert path.read_bytes() == raw
    else:
        assert isinstance(loaded, settings_mod.Settings)
        settings_mod.save(loaded, config_dir)  # what was loaded can be saved and read back
        assert settings_mod.load(config_dir) == loaded
    for leftover in config_dir.iterdir():
        leftover.unlink()


# -- the task log and its exports --------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskLogStore]:
    with TaskLogStore(tmp_path / "fuzz.sqlite3") as log:
        yield log


def _export_all(store: TaskLogStore, session_id: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for fmt in ExportFormat:
        buffer = io.StringIO(newline="")
        export_log(store, fmt, buffer, session_id=session_id)
        out[fmt.value] = buffer.getvalue()
    return out


@FUZZ
@given(texts=st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=5), data=st.data())
def test_log_export_of_random_texts(
    tally: Tally, store: TaskLogStore, texts: list[str], data: st.DataObject
) -> None:
    # a fresh session per example: the store outlives hypothesis's examples
    session_id = uuid.uuid4().hex + data.draw(st.text(max_size=40), label="session_id")
    t = 1_700_000_000.0
    for i, text in enumerate(texts):
        row = store.add(session_id=session_id, text=text, voice_id=None, route=TaskRoute.REST, at=t)
        store.mark_sent(row.row_id, at=t + i)
        store.mark_speaking(row.row_id, at=t + i + 0.1)
        store.mark_spoken(row.row_id, at=t + i + 0.5)
    exported = checked(tally, "export", lambda: _export_all(store, session_id))
    lines = exported["jsonl"].split("\n")
    assert lines[-1] == "" and len(lines) == len(texts) + 1
    assert [json.loads(line)["text"] for line in lines[:-1]] == texts
    rows = list(csv.reader(io.StringIO(exported["csv"], newline="")))
    got = [r[7] for r in rows[1:]]
    want = ["'" + x if x.startswith(("=", "+", "-", "@", "\t", "\r")) else x for x in texts]
    assert got == want
    for cue in exported["srt"].split("\n\n"):  # every cue is number, timing, non-blank text
        if cue.strip():
            number, timing, *body = cue.split("\n")
            assert number.isdigit() and " --> " in timing and body and all(body)


# -- hostile text, end to end through the real client and the simulator ----------------------


def test_hostile_texts_through_client_simulator_store_export(
    tally: Tally, make_sim: Callable[..., SimulatorServer], store: TaskLogStore
) -> None:
    sim = make_sim()

    async def run() -> dict[str, Any]:
        results: dict[str, Any] = {}
        async with httpx.AsyncClient() as http:
            client = AvaturnClient(http, api_key="k", base_url=sim.base_url)
            session = await client.create_session()
            for name, text in HOSTILE_TEXTS.items():
                tally.tried("hostile_text")
                try:
                    created = await client.add_task(session.session_id, text)
                except ConfigError as exc:
                    results[name] = exc
                    continue
                except Exception:
                    tally.crash("hostile_text")
                    raise
                row = store.add(
                    session_id=session.session_id, text=text, voice_id=None, route=TaskRoute.REST
                )
                store.mark_sent(row.row_id)
                store.mark_acked(row.row_id, created.task_id)
                results[name] = created.task_id
        return results

    results = asyncio.run(run())
    for name in ("too_huge", "empty", "blank"):
        assert isinstance(results[name], ConfigError), name
        assert results[name].user_message
    (session,) = sim.snapshot()["sessions"]
    by_id = {t["task_id"]: t["text"] for t in session["tasks"]}
    accepted = {n: tid for n, tid in results.items() if isinstance(tid, str)}
    assert set(accepted) == set(HOSTILE_TEXTS) - {"too_huge", "empty", "blank"}
    for name, task_id in accepted.items():
        assert by_id[task_id] == HOSTILE_TEXTS[name], name  # byte-exact at the service
        assert store.find_by_task_id(task_id).text == HOSTILE_TEXTS[name]  # type: ignore[union-attr]
    exported = checked(tally, "hostile_text", lambda: _export_all(store, session["session_id"]))
    jsonl = [json.loads(line) for line in exported["jsonl"].splitlines()]
    assert [r["text"] for r in jsonl] == [HOSTILE_TEXTS[n] for n in accepted]


# -- malformed server answers ------------------------------------------------------------------

answers = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            [200, 201, 204, 301, 400, 401, 404, 410, 418, 422, 429, 500, 502, 503, 504, 599]
        ),
        "body": st.binary(max_size=120)
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.sampled_from(
            [
                b"",
                b"null",
                b"{}",
                b"[]",
                b'{"detail": null}',
                b'{"detail": [1, {"loc": 5}]}',
                b'{"task_id": 5}',
                b'{"session_id": "s"}',
                b"<html>502 Bad Gateway</html>",
                b'{"detail": [{"loc": ["body", "x"], "msg": "bad", "type": "json_invalid",'
                b' "ctx": {"error": "eof"}}]}',
            ]
        ),
        "retry_after": st.none()
        | st.sampled_from(["0", "1", "-3", "nan", "inf", "1e309", "soon", "Wed, 21 Oct 2015"])
        | st.text(max_size=10),
        "content_type": st.sampled_from(["application/json", "text/html", "", "x/y"]),
        "encoding": st.sampled_from([None, None, "gzip", "br", "identity"]),
    }
)


def _call_everything(answer: dict[str, Any]) -> list[Any]:
    def handler(request: httpx.Request) -> httpx.Response:
        headers: list[tuple[bytes, bytes]] = []
        if answer["content_type"]:
            headers.append((b"content-type", answer["content_type"].encode()))
        if answer["retry_after"] is not None:  # any bytes may come
            headers.append((b"retry-after", answer["retry_after"].encode()))
        if answer["encoding"]:
            headers.append((b"content-encoding", answer["encoding"].encode()))
        return httpx.Response(answer["status"], content=answer["body"], headers=headers)

    async def noop(_s: float) -> None:
        return None

    async def run() -> list[Any]:
        outcomes: list[Any] = []
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = AvaturnClient(
                http, api_key="k", base_url="https://api.invalid", max_retries=1, sleep=noop
            )
            calls: list[Callable[[], Any]] = [
                client.create_session,
                lambda: client.add_task("s1", "Hello."),
                lambda: client.terminate_session("s1"),
                lambda: client.get_sdk_session("tok"),
                lambda: client.sdk_task("tok", "Hello."),
                lambda: client.cancel_all("tok"),
                lambda: client.change_voice("tok", "v1"),
                lambda: client.start_stream("tok"),
            ]
            for call in calls:
                try:
                    outcomes.append(await call())
                except AppError as exc:
                    outcomes.append(exc)
        return outcomes

    return asyncio.run(run())


@FUZZ
@given(answer=answers)
def test_malformed_answers_become_typed_errors(tally: Tally, answer: dict[str, Any]) -> None:
    outcomes = checked(tally, "server_answers", lambda: _call_everything(answer))
    tally.tried("server_answers", len(outcomes) - 1)
    for outcome in outcomes:
        if isinstance(outcome, AppError):
            assert outcome.user_message.strip()
            assert "Traceback" not in outcome.user_message


# -- the simulator's HTTP API: never a 500 for bad input ---------------------------------------

_MARK = "__HOSTILE__"
#: JSON tokens as they may arrive on the wire (raw text, not Python values): numbers Python
#: parses into ints too long to convert or into inf, the non-standard NaN and Infinity that
#: Python's parser takes, lone surrogates, NUL, deep nesting, a huge string.
HOSTILE_JSON: dict[str, str] = {
    "int_400_digits": "1" + "0" * 400,
    "negative_int_400_digits": "-1" + "0" * 400,
    "int_5000_digits": "1" + "0" * 5000,  # over Python's int-from-text limit
    "int_2_pow_64": str(2**64),
    "exp_1e400": "1e400",
    "exp_-1e400": "-1e400",
    "exp_1e-400": "1e-400",
    "float_1e308": "1e308",
    "nan": "NaN",
    "infinity": "Infinity",
    "-infinity": "-Infinity",
    "minus_zero": "-0.0",
    "lone_high_surrogate": '"\\ud800"',
    "lone_low_surrogate": '"\\udfff"',
    "surrogate_in_text": '"Hello \\ud83d there."',
    "reversed_pair": '"\\udc00\\ud800"',
    "nul": '"a\\u0000b"',
    "huge_string": '"' + "x" * 200_000 + '"',
    "deep_list": "[" * 3000 + "]" * 3000,
    "deep_object": '{"a":' * 1000 + "1" + "}" * 1000,
    "empty_object": "{}",
    "empty_list": "[]",
    "null": "null",
    "true": "true",
    "nested_inf": '{"x": [1e400, NaN]}',
}

#: Every JSON route of the simulator, a valid body, and the fields to put hostile values in.
ENGINE = {"type": "text-echo", "tts": {"engine": "elevenlabs", "voice_id": "21m00Tcm4TlvDq8ikWAM"}}
JSON_ROUTES: list[tuple[str, str, dict[str, Any], list[tuple[str, ...]]]] = [
    (
        "POST",
        "/api/v1/sessions",
        {"avatar_id": "jane_20240829", "conversation_engine": ENGINE, "background": "default",
         "model": "delta", "user_absent_timeout": 60, "max_duration": 3600},
        [("avatar_id",), ("background",), ("model",), ("user_absent_timeout",),
         ("max_duration",), ("conversation_engine",), ("conversation_engine", "type"),
         ("conversation_engine", "tts"), ("conversation_engine", "tts", "voice_id"),
         ("conversation_engine", "tts", "engine"), ("conversation_engine", "extra")],
    ),
    ("POST", "/api/v1/sessions/{id}/tasks", {"text": "Hello."}, [("text",), ("extra",)]),
    ("POST", "/_sdk/v0/sessions/tasks", {"text": "Hello."}, [("text",)]),
    (
        "PATCH",
        "/_sdk/v0/sessions/config",
        {"conversation_engine": ENGINE},
        [("conversation_engine",), ("conversation_engine", "tts", "voice_id"),
         ("conversation_engine", "tts", "engine"), ("conversation_engine", "type")],
    ),
    (
        "PUT",
        "/_sim/faults",
        {},
        [("latency_ms",), ("jitter_ms",), ("error_rate",), ("error_status",),
         ("rate_limit_burst",), ("retry_after_s",), ("reset_rate",), ("drop_event_channels",)],
    ),
    ("POST", "/_sim/sessions/{id}/kill", {"reason": "test"}, [("reason",)]),
]  # fmt: skip


def _with_mark(body: dict[str, Any], path: tuple[str, ...]) -> str:
    """``body`` as JSON text with the value at ``path`` replaced by the marker string."""
    doc = json.loads(json.dumps(body))
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = _MARK
    return json.dumps(doc)


class _SimTarget:
    """A keyed simulator and a live session to aim at (made again when a test ended it)."""

    KEY = "bad-input-key"

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim
        self.http = httpx.Client(
            base_url=sim.base_url, headers={"Authorization": f"Bearer {self.KEY}"}, timeout=20
        )
        self.session: dict[str, str] = {}

    def live(self) -> dict[str, str]:
        sessions = {s["session_id"]: s for s in self.sim.snapshot()["sessions"]}
        current = sessions.get(self.session.get("session_id", ""))
        if current is None or current["end_reason"] is not None:
            self.session = self.http.post("/api/v1/sessions").json()
        return self.session

    def send(self, tally: Tally, method: str, route: str, raw: str | bytes) -> httpx.Response:
        session = self.live()
        path = route.replace("{id}", session["session_id"])
        tally.tried("simulator_api")
        answer = self.http.request(
            method,
            path,
            content=raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw,
            headers={"Content-Type": "application/json", "X-Session-Token": session["token"]},
        )
        if path == "/_sim/faults":
            self.sim.set_faults(FaultConfig())
        if answer.status_code >= 500:
            tally.crash("simulator_api")
        assert answer.status_code < 500, (method, path, raw[:200], answer.text[:300])
        if answer.content and answer.headers.get("content-type") == "application/json":
            # strict JSON: no NaN, no Infinity, valid UTF-8
            json.loads(answer.content.decode("utf-8"), parse_constant=_refuse_constant)
        return answer


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"the answer carries {name}, which is not JSON")


@pytest.fixture
def sim_target(make_sim: Callable[..., SimulatorServer]) -> Iterator[_SimTarget]:
    target = _SimTarget(make_sim(api_key=_SimTarget.KEY))
    try:
        yield target
    finally:
        target.http.close()


def test_hostile_json_in_every_field_of_every_simulator_route(
    tally: Tally, sim_target: _SimTarget
) -> None:
    refused: dict[str, set[int]] = {}
    for method, route, body, fields in JSON_ROUTES:
        for field in fields:
            template = _with_mark(body, field)
            for name, token in HOSTILE_JSON.items():
                raw = template.replace(json.dumps(_MARK), token)
                answer = sim_target.send(tally, method, route, raw)
                refused.setdefault(name, set()).add(answer.status_code)
        for token in HOSTILE_JSON.values():  # the whole body
            sim_target.send(tally, method, route, token)
    # The class is refused, not taken: each hostile value got a 4xx somewhere.
    for name in ("int_400_digits", "exp_1e400", "nan", "lone_high_surrogate", "deep_list"):
        assert any(400 <= status < 500 for status in refused[name]), (name, refused[name])
    assert sim_target.http.get("/_sim/state").status_code == 200


def test_a_user_absent_timeout_of_400_digits_is_refused(sim_target: _SimTarget) -> None:
    raw = '{"user_absent_timeout": 1' + "0" * 400 + "}"
    answer = sim_target.http.post(
        "/api/v1/sessions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "user_absent_timeout"]


@FUZZ
@given(
    route=st.sampled_from([(m, r) for m, r, _b, _f in JSON_ROUTES]),
    body=json_values
    | st.dictionaries(st.sampled_from([*FIELDS, "latency_ms", "reason"]), json_values),
    raw=st.none() | st.binary(max_size=300),
)
def test_random_bodies_never_get_a_server_error(
    tally: Tally, sim_target: _SimTarget, route: tuple[str, str], body: Any, raw: bytes | None
) -> None:
    method, path = route
    # allow_nan: Python writes NaN and Infinity, as a careless client would
    sim_target.send(tally, method, path, raw if raw is not None else json.dumps(body))
