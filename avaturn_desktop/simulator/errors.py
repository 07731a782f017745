"""Error answers that can always be sent: a bad request gets its 4xx, never a 500 instead.

FastAPI's own 422 handler echoes the offending input, and Starlette's ``JSONResponse`` refuses
what JSON cannot carry: ``1e400`` in a body parses as ``inf`` (and Python's parser takes
``NaN`` and ``Infinity`` too), a ``\\ud800`` escape becomes a lone surrogate that UTF-8 cannot
encode. Either one turned a 422 into a 500. Here every answer is made JSON-safe first:
non-finite numbers become the strings ``"inf"``, ``"-inf"``, ``"nan"``, and unencodable
characters become their ``\\uXXXX`` escapes as text.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

__all__ = ["SafeJSONResponse", "json_safe", "validation_error_handler"]


def _safe_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_safe(value: Any) -> Any:
    """``value`` (already made of JSON types) with nothing left that strict JSON refuses."""
    if isinstance(value, str):
        return _safe_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_safe_text(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """A ``JSONResponse`` that renders anything ``json_safe`` can make of its content."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, TypeError):  # inf, NaN, a lone surrogate (UnicodeEncodeError)
            return json.dumps(
                json_safe(jsonable_encoder(content)),
                ensure_ascii=False,
                allow_nan=False,
                separators=(",", ":"),
            ).encode("utf-8")


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (``{"detail": [errors]}``), with the echoed input made JSON-safe."""
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse(
        status_code=422, content={"detail": json_safe(jsonable_encoder(exc.errors()))}
    )
