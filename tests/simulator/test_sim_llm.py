"""The simulator's language model stand-in over real loopback HTTP: the wire format, what the
official ``openai`` client makes of it, pacing, auth, errors and the mid-stream faults."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from avaturn_desktop.simulator import cli
from avaturn_desktop.simulator.llm import (
    DEFAULT_MODELS,
    LlmConfig,
    LlmFaults,
    answer_for,
    tokens_of,
)
from avaturn_desktop.simulator.server import SimulatorServer

KEY = "llm-test-key"
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]
Sim = Callable[..., SimulatorServer]


def llm_sim(make_sim: Sim, **llm: Any) -> SimulatorServer:
    llm.setdefault("tokens_per_second", 2000.0)
    return make_sim(llm=LlmConfig(**llm))


def model_client(sim: SimulatorServer, key: str = KEY, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10.0)
    return openai.OpenAI(api_key=key, base_url=sim.base_url + "/v1", **kw)


@pytest.fixture
def model(make_sim: Sim) -> Iterator[tuple[SimulatorServer, openai.OpenAI]]:
    sim = llm_sim(make_sim)
    with model_client(sim) as client:
        yield sim, client


def requests_seen(sim: SimulatorServer) -> list[dict[str, Any]]:
    return list(httpx.get(sim.base_url + "/_sim/llm").json()["requests"])


def set_faults(sim: SimulatorServer, **faults: Any) -> None:
    answer = httpx.put(sim.base_url + "/_sim/llm/faults", json=faults)
    assert answer.status_code == 200, answer.text


def sse_events(sim: SimulatorServer, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    """The raw ``data:`` payloads of a streamed answer (the wire, not a client's view)."""
    events: list[str] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", sim.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        raw = response.read().decode()
    for block in raw.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            events.append(block.removeprefix("data: "))
    return response, events


# -- the answer ------------------------------------------------------------------------------


@given(st.text())
def test_tokens_give_the_text_back(text: str) -> None:
    tokens = tokens_of(text)
    assert "".join(tokens) == text
    assert all(tokens)


def test_answers_are_deterministic_and_follow_the_conversation() -> None:
    first = answer_for(QUESTION, 4)
    assert first == answer_for(QUESTION, 4)
    assert first.startswith("Here is answer number 1, about Why is the sky blue.")
    assert answer_for(QUESTION, 1) == "Here is answer number 1, about Why is the sky blue."
    later = [*QUESTION, {"role": "assistant", "content": first}, *QUESTION]
    assert answer_for(later, 4).startswith("Here is answer number 2,")
    other = answer_for([{"role": "user", "content": "Tell me a story"}], 4)
    assert other.split(". ", 1)[1] != first.split(". ", 1)[1]  # another question, other text
    parts = [{"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}]
    assert answer_for(parts, 4) == first


def test_a_streamed_answer_on_the_wire(make_sim: Sim) -> None:
    sim = llm_sim(make_sim)
    body = {"model": "sim-chat", "messages": QUESTION, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    response, events = sse_events(sim, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in response.headers
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage, final = chunks[-1], chunks[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(chunks) - 3
    assert final["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                   "finish_reason": "stop"}  # fmt: skip
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:-2])
    assert text == answer_for(QUESTION, 4)
    assert requests_seen(sim)[-1]["outcome"] == "completed"


def test_the_openai_client_reads_the_stream(model: tuple[SimulatorServer, openai.OpenAI]) -> None:
    _, client = model
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    pieces, finishes = [], []
    with stream:
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
            finishes.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == answer_for(QUESTION, 4)
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert len(pieces) > 20  # token by token, not in one piece


def test_a_whole_answer_without_stream(model: tuple[SimulatorServer, openai.OpenAI]) -> None:
    _, client = model
    completion = client.chat.completions.create(model="sim-chat", messages=QUESTION)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == answer_for(QUESTION, 4)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 20


def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    model: tuple[SimulatorServer, openai.OpenAI],
) -> None:
    _, client = model
    for limit_field in ("max_tokens", "max_completion_tokens"):
        completion = client.chat.completions.create(
            model="sim-chat",
            messages=QUESTION,
            **{limit_field: 5},
        )
        assert completion.choices[0].finish_reason == "length"
        assert completion.choices[0].message.content == "".join(
            tokens_of(answer_for(QUESTION, 4))[:5]
        )


def test_tokens_are_paced_and_the_first_comes_long_before_the_last(make_sim: Sim) -> None:
    rate = 100.0
    sim = llm_sim(make_sim, tokens_per_second=rate, sentences=2)
    n = len(tokens_of(answer_for(QUESTION, 2)))
    with model_client(sim) as client:
        start = time.monotonic()
        stream = client.chat.completions.create(model="sim-chat", messages=QUESTION, stream=True)
        arrivals = [time.monotonic() - start for chunk in stream if chunk.choices[0].delta.content]
    assert len(arrivals) == n
    assert arrivals[-1] >= 0.9 * n / rate  # paced, not in a burst
    assert arrivals[-1] - arrivals[0] >= 0.8 * (n - 1) / rate


def test_models_are_listed(model: tuple[SimulatorServer, openai.OpenAI]) -> None:
    _, client = model
    assert [m.id for m in client.models.list()] == list(DEFAULT_MODELS)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic abc", "bearer-abc", "Token abc", "abc"],
)
def test_no_key_is_refused_with_401_in_every_form(make_sim: Sim, authorization: str | None) -> None:
    sim = llm_sim(make_sim)
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = httpx.post(
        sim.base_url + "/v1/chat/completions",
        json={"model": "sim-chat", "messages": QUESTION},
        headers=headers,
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "missing_api_key"
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("stream", [True, False])
def test_only_the_configured_key_is_accepted(make_sim: Sim, stream: bool) -> None:
    sim = llm_sim(make_sim, api_key="the-right-key")
    wrong = "sk-wrong-key-that-must-not-echo"
    with model_client(sim, key=wrong) as client, pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model="sim-chat", messages=QUESTION, stream=stream)
    assert err.value.code == "invalid_api_key"
    assert wrong not in str(err.value.body) and "wrong-key" not in err.value.response.text
    with model_client(sim, key="the-right-key") as client:
        assert client.chat.completions.create(model="sim-chat", messages=QUESTION).choices


def test_any_key_is_accepted_when_none_is_configured(make_sim: Sim) -> None:
    sim = llm_sim(make_sim)
    for key in ("x", "sk-anything", "simulator"):
        with model_client(sim, key=key) as client:
            assert client.chat.completions.create(model="sim-chat", messages=QUESTION).choices


@pytest.mark.parametrize("stream", [True, False])
def test_an_unknown_model_is_404_model_not_found(
    model: tuple[SimulatorServer, openai.OpenAI], stream: bool
) -> None:
    _, client = model
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9-ultra", messages=QUESTION, stream=stream)
    assert err.value.code == "model_not_found"
    assert "gpt-9-ultra" in err.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"messages": QUESTION},
        {"model": "sim-chat"},
        {"model": "sim-chat", "messages": []},
        {"model": "sim-chat", "messages": [{"role": "robot", "content": "hi"}]},
        {"model": "", "messages": QUESTION},
        {"model": "sim-chat", "messages": QUESTION, "max_tokens": 0},
        "not json",
        [],
    ],
)
def test_a_malformed_request_is_400_in_openai_shape(make_sim: Sim, body: Any) -> None:
    sim = llm_sim(make_sim)
    content = body if isinstance(body, str) else json.dumps(body)
    answer = httpx.post(
        sim.base_url + "/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_429_burst_runs_down_with_retry_after(model: tuple[SimulatorServer, openai.OpenAI]) -> None:
    sim, client = model
    set_faults(sim, rate_limit_burst=2, retry_after_ms=1500)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="sim-chat", messages=QUESTION, stream=True)
        headers = err.value.response.headers
        assert headers["retry-after-ms"] == "1500" and headers["retry-after"] == "2"
        assert err.value.code == "rate_limit_exceeded"
    assert client.chat.completions.create(model="sim-chat", messages=QUESTION).choices
    assert [r["outcome"] for r in requests_seen(sim)] == [429, 429, "completed"]


def test_5xx_burst(model: tuple[SimulatorServer, openai.OpenAI]) -> None:
    sim, client = model
    set_faults(sim, error_burst=1, error_status=502)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="sim-chat", messages=QUESTION)
    assert err.value.status_code == 502
    assert client.chat.completions.create(model="sim-chat", messages=QUESTION).choices


def test_latency_before_the_answer_times_a_client_out(make_sim: Sim) -> None:
    sim = llm_sim(make_sim)
    set_faults(sim, latency_ms=3000)
    with model_client(sim, timeout=0.3) as client, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="sim-chat", messages=QUESTION, stream=True)


# -- streams that break ----------------------------------------------------------------------


def _read(client: openai.OpenAI) -> tuple[str, str | None]:
    stream = client.chat.completions.create(model="sim-chat", messages=QUESTION, stream=True)
    text, finish = "", None
    with stream:
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


@pytest.mark.parametrize("after", [0, 1, 7])
@pytest.mark.parametrize(
    ("mode", "error"),
    [
        # openai 1.x lets httpx's own errors through mid-stream; later versions wrap them
        ("reset", (openai.APIConnectionError, httpx.TransportError)),
        ("error_event", openai.APIError),
        ("stall", (openai.APITimeoutError, httpx.TimeoutException)),
    ],
)
def test_a_stream_that_breaks_raises_in_the_client(
    make_sim: Sim, mode: str, error: Any, after: int
) -> None:
    sim = llm_sim(make_sim)
    set_faults(sim, break_after_tokens=after, break_mode=mode)
    with model_client(sim, timeout=0.5) as client, pytest.raises(error):
        _read(client)
    seen = requests_seen(sim)[-1]
    assert seen["tokens_sent"] == after
    assert seen["outcome"] == ("client_closed" if mode == "stall" else "broken")


@pytest.mark.parametrize("after", [0, 3, "all"])
def test_a_stream_closed_early_ends_without_finish_reason(make_sim: Sim, after: int | str) -> None:
    sim = llm_sim(make_sim)
    full = answer_for(QUESTION, 4)
    count = len(tokens_of(full)) if after == "all" else after
    set_faults(sim, break_after_tokens=count, break_mode="close")
    with model_client(sim) as client:
        text, finish = _read(client)
    assert finish is None  # the sign of a cut stream: no finish_reason (and no [DONE])
    assert text == "".join(tokens_of(full)[:count])
    assert requests_seen(sim)[-1]["outcome"] == "broken"


def test_a_client_that_closes_the_stream_stops_it(make_sim: Sim, until: Any) -> None:
    sim = llm_sim(make_sim, tokens_per_second=50.0)
    with model_client(sim) as client:
        stream = client.chat.completions.create(model="sim-chat", messages=QUESTION, stream=True)
        for n, _chunk in enumerate(stream):
            if n == 3:
                break
        stream.close()
    seen = until(lambda: (r := requests_seen(sim)[-1])["outcome"] != "answering" and r)
    assert seen["outcome"] == "client_closed"
    assert seen["tokens_sent"] < len(tokens_of(answer_for(QUESTION, 4))) // 2


# -- configuration ---------------------------------------------------------------------------


def test_the_cli_sets_the_token_rate_and_the_key() -> None:
    parser = cli.argparse.ArgumentParser()
    cli.add_arguments(parser)
    config = cli.config_from_args(
        parser.parse_args(["--llm-tokens-per-second", "7.5", "--llm-api-key", "cli-secret"])
    )
    assert config.llm.tokens_per_second == 7.5
    assert config.llm.api_key is not None and config.llm.api_key.get_secret_value() == "cli-secret"
    assert "cli-secret" not in repr(config) and "cli-secret" not in str(config)
    default = cli.config_from_args(parser.parse_args([]))
    assert default.llm.tokens_per_second == 20.0 and default.llm.api_key is None


def test_faults_are_read_and_set_at_run_time(make_sim: Sim) -> None:
    sim = llm_sim(make_sim, faults=LlmFaults(rate_limit_burst=1))
    assert httpx.get(sim.base_url + "/_sim/llm").json()["faults"]["rate_limit_burst"] == 1
    set_faults(sim, break_after_tokens=2, break_mode="close")
    faults = httpx.get(sim.base_url + "/_sim/llm").json()["faults"]
    assert faults["rate_limit_burst"] == 0 and faults["break_after_tokens"] == 2
    bad = httpx.put(sim.base_url + "/_sim/llm/faults", json={"break_mode": "explode"})
    assert bad.status_code == 422
