"""Where Ask's language model is, and what its failures mean to a person (Qt-free).

:func:`resolve_endpoint` picks the endpoint: the configured one with a key; the simulator's
``/v1`` with no key and OpenAI's default base URL (offline Ask); a keyless local server with no
key and another base URL. :func:`describe_error` turns what the ``openai`` client raises into
this app's typed errors (``core/errors.py``) with a message a person can act on: which key, which
model, which setting. No message ever carries the key: the service's own words are shortened
and the key is cut out of them (OpenAI echoes part of a rejected key).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import httpx

from avaturn_desktop.core.errors import (
    ApiError,
    AppError,
    AuthError,
    ConfigError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceTimeoutError,
)
from avaturn_desktop.core.settings import DEFAULT_LLM_BASE_URL, LlmSettings
from avaturn_desktop.services.secrets import LLM_ENV_VAR, redact

if TYPE_CHECKING:
    import openai

__all__ = ["AnswerBrokenError", "LlmEndpoint", "describe_error", "resolve_endpoint"]

#: The key sent to the simulator, which accepts any non-empty key.
SIMULATOR_KEY: Final = "simulator"
#: How much of a service's own error message ends up in a reason.
MAX_DETAIL: Final = 200
KEY_HINT: Final = f"Settings → Ask, or the {LLM_ENV_VAR} environment variable"


class AnswerBrokenError(NetworkError):
    """The answer's stream ended before the answer did (connection lost, or cut short)."""


# -- where the model is -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LlmEndpoint:
    """Where questions go: an OpenAI-compatible API root (up to ``/v1``) and its key."""

    base_url: str
    api_key: str = dataclasses.field(repr=False)
    #: The key is a stand-in (the simulator, or a keyless local server): a 401 means "no key".
    keyless: bool = False
    simulated: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc or self.base_url


def resolve_endpoint(
    settings: LlmSettings, api_key: str | None, simulator_url: str | None
) -> LlmEndpoint:
    """Where Ask goes, from the settings, the key (``secrets.load_llm_api_key``) and the
    in-process or external simulator's base URL (``None`` when none runs).

    * A key: the configured base URL with it.
    * No key, and the base URL is OpenAI's default: the simulator (offline Ask), if one runs;
      else :class:`ConfigError` (no key, and one is needed).
    * No key and another base URL (a local, keyless server): that URL with a stand-in key; if
      it wants a key after all, its 401 says so.
    """
    key = (api_key or "").strip()
    if key:
        return LlmEndpoint(settings.base_url, key)
    if settings.base_url.rstrip("/") == DEFAULT_LLM_BASE_URL:
        if simulator_url is None:
            raise ConfigError(
                f"Ask needs a language model API key: enter it in {KEY_HINT}. "
                "(With no key, Ask answers from the built-in simulator, which is not running.)"
            )
        return LlmEndpoint(
            simulator_url.rstrip("/") + "/v1", SIMULATOR_KEY, keyless=True, simulated=True
        )
    return LlmEndpoint(settings.base_url, SIMULATOR_KEY, keyless=True)


# -- what its failures mean ----------------------------------------------------------------


def describe_error(
    exc: openai.APIError | httpx.TransportError,
    *,
    endpoint: LlmEndpoint,
    model: str,
    timeout_s: float,
    started: bool,
) -> AppError:
    """An ``openai`` error as one of ours, with a message a person can act on; ``started``:
    some of the answer had arrived (a failure then is a break, not a refusal).

    The httpx-based ``openai`` 1.x clients let transport errors inside a stream through as
    httpx's own (3.x wraps them): they mean the same.
    """
    import openai

    host = endpoint.host
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        if started:
            return ServiceTimeoutError(
                f"The answer from {host} stalled: nothing more came for {timeout_s:g} s."
            )
        return ServiceTimeoutError(
            f"The language model at {host} did not start answering within "
            f"{timeout_s:g} s. Try again, or raise the timeout in Settings."
        )
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        if started:
            return AnswerBrokenError(f"The answer from {host} broke off: the connection was lost.")
        return NetworkError(
            f"Could not reach the language model at {host}: check the base URL in "
            "Settings and the network."
        )
    detail = _detail(exc, endpoint.api_key)
    if not isinstance(exc, openai.APIStatusError):  # an error event inside the stream
        return ServerError(
            f"The language model at {host} reported an error mid-answer"
            + (f": {detail}" if detail else "."),
            status=500,
            detail=detail,
        )
    status = exc.status_code
    code = str(exc.code or "")
    if status == 401:
        if endpoint.keyless:
            return AuthError(
                f"The language model at {host} needs an API key (401): enter it in {KEY_HINT}.",
                status=401,
            )
        return AuthError(
            f"The language model at {host} rejected the API key (401): check the key in "
            f"{KEY_HINT}.",
            status=401,
        )
    if status == 403:
        return AuthError(
            f"The API key has no access to the model “{model}” at {host} (403): "
            "check the key's project and permissions.",
            status=403,
            detail=detail,
        )
    if status == 404:
        if code == "model_not_found" or "model" in detail.lower():
            return NotFoundError(
                f"The model “{model}” does not exist at {host} (404): pick another "
                "model in Settings → Ask.",
                status=404,
                detail=detail,
            )
        return NotFoundError(
            f"Nothing answers chat completions at {endpoint.base_url} (404): check the "
            "base URL in Settings → Ask (it ends with /v1 for most services).",
            status=404,
            detail=detail,
        )
    if status == 429:
        if code == "insufficient_quota":
            return RateLimitedError(
                f"The language model account at {host} has no quota left (429): check its "
                "plan and billing.",
                retry_after=None,
            )
        retry_after = _retry_after(exc)
        when = f"in {retry_after:g} s" if retry_after is not None else "in a moment"
        return RateLimitedError(
            f"The language model at {host} is rate limiting requests (429): ask again {when}.",
            retry_after=retry_after,
        )
    if status in (400, 413, 422):
        return InvalidRequestError(
            f"The language model at {host} refused the question ({status})"
            + (f": {detail}" if detail else "."),
            status=status,
            detail=detail,
        )
    if status >= 500:
        return ServerError(
            f"The language model at {host} failed ({status}); try again in a moment.",
            status=status,
            detail=detail,
        )
    return ApiError(
        f"The language model at {host} answered {status}" + (f": {detail}" if detail else "."),
        status=status,
        detail=detail,
    )


def _detail(exc: openai.APIError, key: str) -> str:
    """The service's own message, short, without the key (OpenAI echoes part of a bad one)."""
    import openai

    message = exc.message if isinstance(exc.message, str) else ""
    if isinstance(exc, openai.APIStatusError):
        prefix = f"Error code: {exc.status_code} - "
        message = message.removeprefix(prefix)
        body = exc.body
        if isinstance(body, dict):
            inner = body.get("error", body)
            text = inner.get("message") if isinstance(inner, dict) else None
            if isinstance(text, str):
                message = text
            elif isinstance(body.get("detail"), str):
                message = body["detail"]
    message = " ".join(redact(message, key).split())
    if len(message) > MAX_DETAIL:
        message = message[: MAX_DETAIL - 1] + "…"
    return message


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            with contextlib.suppress(ValueError):
                seconds = float(value) / scale
                if seconds >= 0:
                    return round(seconds, 1)
    return None
