"""Typed exceptions: one per kind of answer the server gives (docs/api.md#errors).

Every error the server answers carries its HTTP status and the server's own
message (the ``error`` field of its JSON body), so ``str(e)`` says what the
server said.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class WarrenError(Exception):
    """Anything that went wrong talking to warren."""


class ConnectionFailed(WarrenError):
    """The server could not be reached, or the connection broke."""


class TransferCut(WarrenError):
    """A streamed answer ended before it was complete (an export that failed
    after its first byte is cut, never a complete-looking archive)."""


class ApiError(WarrenError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status (400, 404, 409, ...).
        message: the server's message (its ``{"error": ...}``), or the body's
            text when the answer was not JSON.
    """

    status: int
    message: str

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BadRequest(ApiError):
    """400: bad input (an invalid id, a cwd outside the home, a refused archive
    or path); nothing was changed."""


class Unauthorized(ApiError):
    """401: no admin token, or a wrong one."""


class Forbidden(ApiError):
    """403: a user's token where the admin token is needed."""


class NotFound(ApiError):
    """404: no such user, terminal, file or route."""


class MethodNotAllowed(ApiError):
    """405: the route exists but not with this method."""


class Conflict(ApiError):
    """409: the tenant's state forbids it now (a sandbox at its pids limit, a
    command that could not start within the memory limit, a tier without
    export/import, ...)."""


class PayloadTooLarge(ApiError):
    """413: an upload or archive over the server's limits, or too big for the
    user's memory or disk."""


class UnsupportedMediaType(ApiError):
    """415: a JSON route called without ``Content-Type: application/json``."""


class ServerError(ApiError):
    """500 (or any other 5xx but 503): the server failed; its log says why."""


class Unavailable(ApiError):
    """503: the server is full or shutting down; try again later."""


_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    500: ServerError,
    503: Unavailable,
}


def error_for(status: int, message: str) -> ApiError:
    """The exception for an error answer of this status."""
    kind: Optional[Type[ApiError]] = _BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else ApiError
    return kind(status, message)
