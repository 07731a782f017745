"""Errors a person can read. Every one carries ``user_message``; none ever carries a secret."""

from __future__ import annotations

from typing import Final

#: The longest a ``Retry-After`` is ever waited out, whatever the service asks (seconds). A
#: longer wait would hold every later line (and ``1e9`` overflows Qt's timers under qasync);
#: a busy service that still refuses after it simply answers 429 again.
RETRY_AFTER_CEILING_S: Final = 30.0


class AppError(Exception):
    """Base of every error the app expects and shows to its user."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ApiError(AppError):
    """The service answered with an error status."""

    def __init__(self, user_message: str, *, status: int, detail: str = "") -> None:
        super().__init__(user_message)
        self.status = status
        self.detail = detail


class AuthError(ApiError):
    """401: the API key is missing or was rejected."""


class InvalidRequestError(ApiError):
    """400 or 422: the service refused what was sent (bad voice, bad field)."""


class NotFoundError(ApiError):
    """404: the session is unknown or has ended."""


class GoneError(ApiError):
    """410: the avatar is unknown or retired."""


class RateLimitedError(ApiError):
    """429: too many requests, refused (nothing was done).

    ``retry_after`` is the server's advice in seconds, if it gave a readable one, clamped to
    ``[0, RETRY_AFTER_CEILING_S]``; ``advised`` is what it asked for before the clamp (may be
    ``inf``), for messages.
    """

    def __init__(
        self, user_message: str, *, retry_after: float | None, advised: float | None = None
    ) -> None:
        super().__init__(user_message, status=429)
        self.retry_after = retry_after
        self.advised = retry_after if advised is None else advised


class ServerError(ApiError):
    """5xx: the service failed."""


class NetworkError(AppError):
    """The service could not be reached, or did not answer in time."""


class ServiceTimeoutError(NetworkError):
    """No answer within the call's timeout."""


class UnclearOutcomeError(NetworkError):
    """A call that may have been done by the service did not get an answer that says so.

    Raised for task sends, which are never retried: the connection failed after the request
    left, no answer came in time, a gateway answered 5xx, or a 2xx came without a task id. The
    text may or may not be spoken. ``status`` is the HTTP status when one came.
    """

    def __init__(self, user_message: str, *, status: int | None = None) -> None:
        super().__init__(user_message)
        self.status = status


class BadAnswerError(AppError):
    """The service answered 2xx with a body that does not match the contract."""


class ConfigError(AppError):
    """A setting or an input is not valid."""
