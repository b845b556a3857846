"""The errors a route raises on purpose, and the one JSON shape every error answer has.

Every error body is OpenAI's: ``{"error": {"message", "type", "param", "code"}}`` (the ``openai``
client reads ``error.message`` into its exception), so a caller sees the same shape from a schema
error (422), an unknown name (404), a limit (413/422), a missing key (401) or our own fault (500,
generic text; the traceback only goes to the server log).
"""

from __future__ import annotations

from typing import Any


class ServeError(Exception):
    """An answer with ``status``; ``param`` names the request field at fault when there is one."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


class NotFound(ServeError):
    """An unknown model, user or item (``param`` says which)."""

    status = 404
    type = "not_found_error"


class LimitExceeded(ServeError):
    """A value over one of the server's limits (the message names the limit)."""

    status = 422


class InvalidValue(ServeError):
    """A value of the right type that the model cannot use (a rating off the scale, a prompt too long)."""

    status = 422


class Unauthorized(ServeError):
    status = 401
    type = "authentication_error"


class NotReady(ServeError):
    status = 503
    type = "service_unavailable"


class Overloaded(ServeError):
    """The model's queue is full: asking again shortly may succeed."""

    status = 503
    type = "overloaded_error"


def error_body(message: str, type_: str, status: int, param: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status, **extra}}
