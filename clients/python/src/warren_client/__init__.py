"""A client for warren's management API.

>>> from warren_client import Client
>>> c = Client()                      # WARREN_URL, WARREN_ADMIN_TOKEN
>>> user, created = c.create_user("alice")
>>> c.exec("alice", ["echo", "hi"]).stdout
'hi\\n'

:mod:`warren_client.compat` has ``UserIsolationManager``, the names and
shapes of the system warren replaces.
"""

from .client import ME, MAX_COMMAND_SECONDS, Client
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TransferCut,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WarrenError,
)
from .models import (
    DEFAULT,
    UNLIMITED,
    AuditEntry,
    CommandFailed,
    Deleted,
    ExecEnd,
    ExecResult,
    FileWritten,
    HomeUsage,
    Imported,
    LimitOverrides,
    Limits,
    OutputChunk,
    Service,
    ServiceExit,
    Stats,
    Terminal,
    User,
)
from .process import Process
from .streams import ExecStream

__all__ = [
    "ApiError",
    "AuditEntry",
    "BadRequest",
    "Client",
    "CommandFailed",
    "Conflict",
    "ConnectionFailed",
    "DEFAULT",
    "Deleted",
    "ExecEnd",
    "ExecResult",
    "ExecStream",
    "FileWritten",
    "Forbidden",
    "HomeUsage",
    "Imported",
    "LimitOverrides",
    "Limits",
    "ME",
    "MAX_COMMAND_SECONDS",
    "MethodNotAllowed",
    "NotFound",
    "OutputChunk",
    "PayloadTooLarge",
    "Process",
    "ServerError",
    "Service",
    "ServiceExit",
    "Stats",
    "Terminal",
    "TransferCut",
    "UNLIMITED",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "User",
    "WarrenError",
]
