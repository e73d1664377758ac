"""What the API answers, as typed records (docs/api.md, docs/openapi.json).

Each record keeps the JSON it was read from in ``raw``, so a field a newer
server adds is there before this client names it; fields a record names but
an older server lacks read as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

#: A limit override: a number, ``"none"`` (no limit) or ``"default"`` (the server's).
LimitValue = Union[int, float, str]

UNLIMITED = "none"
DEFAULT = "default"


def _get(d: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return d.get(key, default)


@dataclass(frozen=True)
class LimitOverrides:
    """A tenant's overrides of the server's limits."""

    memory_bytes: LimitValue
    cpus: LimitValue
    pids: LimitValue

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LimitOverrides":
        return cls(
            memory_bytes=_get(d, "memory_bytes", DEFAULT),
            cpus=_get(d, "cpus", DEFAULT),
            pids=_get(d, "pids", DEFAULT),
        )


@dataclass(frozen=True)
class User:
    """A tenant.

    Attributes:
        id: the id as given.
        slug: the derived name (home directory, Linux user name inside).
        host_uid: the tenant's uid on the host (never reused).
        host_gid: the host gid the tenant's files get (``None`` when the
            server cannot map the tenant's ids, or is older than this field).
        home_dir: the home's path on the host (``None`` from an older server).
        created_at, last_seen: Unix seconds.
        limits: the tenant's overrides.
        sandbox: ``"running"``, ``"starting"`` or ``"stopped"``.
        terminals: terminals open now.
    """

    id: str
    slug: str
    host_uid: int
    host_gid: Optional[int]
    home_dir: Optional[str]
    created_at: int
    last_seen: int
    limits: LimitOverrides
    sandbox: str
    terminals: int
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "User":
        return cls(
            id=d["id"],
            slug=d["slug"],
            host_uid=d["host_uid"],
            host_gid=_get(d, "host_gid"),
            home_dir=_get(d, "home_dir"),
            created_at=d["created_at"],
            last_seen=_get(d, "last_seen", 0),
            limits=LimitOverrides.from_json(_get(d, "limits", {})),
            sandbox=_get(d, "sandbox", "stopped"),
            terminals=_get(d, "terminals", 0),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Limits:
    """Limits in force (``None``: unlimited). ``cpu`` is in cores."""

    memory_bytes: Optional[int]
    cpu: Optional[float]
    pids: Optional[int]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Limits":
        return cls(_get(d, "memory_bytes"), _get(d, "cpu"), _get(d, "pids"))


@dataclass(frozen=True)
class HomeUsage:
    """What the home holds, counted without following symlinks; ``complete``
    is false when the walk stopped at a bound (the counts are then a lower
    bound)."""

    bytes: int
    files: int
    dirs: int
    symlinks: int
    other: int
    complete: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "HomeUsage":
        return cls(
            d["bytes"], d["files"], d["dirs"], d["symlinks"], d["other"], d["complete"]
        )


@dataclass(frozen=True)
class Stats:
    """What a tenant uses now (``GET /api/users/{id}/stats``).

    ``record`` is the running sandbox's record as its shim made it (tier,
    limits in force and missing with reasons, seccomp, Landlock), as JSON;
    ``None`` when no sandbox runs.
    """

    user: User
    sandbox: str
    tier: Optional[str]
    limits: Limits
    limits_missing: List[str]
    limits_reasons: List[str]
    record: Optional[Dict[str, Any]]
    memory_bytes: Optional[int]
    cpu_usec: Optional[int]
    pids: Optional[int]
    terminals: int
    running_commands: int
    workspace: Optional[HomeUsage]
    workspace_error: Optional[str]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Stats":
        ws = _get(d, "workspace")
        return cls(
            user=User.from_json(d["user"]),
            sandbox=d["sandbox"],
            tier=_get(d, "tier"),
            limits=Limits.from_json(_get(d, "limits", {})),
            limits_missing=list(_get(d, "limits_missing", [])),
            limits_reasons=list(_get(d, "limits_reasons", [])),
            record=_get(d, "record"),
            memory_bytes=_get(d, "memory_bytes"),
            cpu_usec=_get(d, "cpu_usec"),
            pids=_get(d, "pids"),
            terminals=_get(d, "terminals", 0),
            running_commands=_get(d, "running_commands", 0),
            workspace=HomeUsage.from_json(ws) if ws else None,
            workspace_error=_get(d, "workspace_error"),
            raw=dict(d),
        )


def returncode_of(exit_code: Optional[int], signal: Optional[int]) -> Optional[int]:
    """As :attr:`subprocess.Popen.returncode`: the exit code, or ``-N`` after
    signal N."""
    if exit_code is not None:
        return exit_code
    if signal is not None:
        return -signal
    return None


@dataclass(frozen=True)
class ExecEnd:
    """How a command ended.

    Attributes:
        exit_code: its exit code, or ``None`` when a signal ended it.
        signal: the signal that ended it, or ``None``.
        reason: ``"exit"``, ``"signal"``, ``"timeout"`` (killed at its
            timeout) or ``"memory_limit"`` (the kernel's OOM killer).
        duration_ms: how long it ran.
    """

    exit_code: Optional[int]
    signal: Optional[int]
    reason: str
    duration_ms: int

    @property
    def returncode(self) -> Optional[int]:
        """The exit code, or ``-N`` after signal N (as subprocess says it)."""
        return returncode_of(self.exit_code, self.signal)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ExecEnd":
        return cls(d.get("exit_code"), d.get("signal"), d["reason"], d.get("duration_ms", 0))


@dataclass(frozen=True)
class ExecResult:
    """A command's whole run (``POST /api/users/{id}/exec``): its end and its
    output as text (invalid UTF-8 replaced), each stream's first 1 MiB."""

    exit_code: Optional[int]
    signal: Optional[int]
    reason: str
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int

    @property
    def returncode(self) -> Optional[int]:
        """The exit code, or ``-N`` after signal N (as subprocess says it)."""
        return returncode_of(self.exit_code, self.signal)

    def check_returncode(self) -> "ExecResult":
        """Raises :class:`CommandFailed` unless the command exited 0; returns self."""
        if self.returncode != 0:
            raise CommandFailed(self)
        return self

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ExecResult":
        return cls(
            exit_code=d.get("exit_code"),
            signal=d.get("signal"),
            reason=d["reason"],
            stdout=d.get("stdout", ""),
            stderr=d.get("stderr", ""),
            stdout_truncated=d.get("stdout_truncated", False),
            stderr_truncated=d.get("stderr_truncated", False),
            duration_ms=d.get("duration_ms", 0),
        )


class CommandFailed(Exception):
    """A command run with ``check`` ended other than with exit code 0."""

    def __init__(self, result: ExecResult) -> None:
        super().__init__(
            f"command ended with {result.reason} (exit {result.exit_code}, "
            f"signal {result.signal}): {result.stderr.strip()[-500:]}"
        )
        self.result = result


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a streamed command's output: ``stream`` is ``"stdout"`` or
    ``"stderr"``, ``data`` text split only at UTF-8 character boundaries."""

    stream: str
    data: str


@dataclass(frozen=True)
class Imported:
    """What an import wrote: entries, files, directories, symlinks, bytes of
    file content, and the upload's (compressed) size."""

    entries: int
    files: int
    dirs: int
    symlinks: int
    bytes: int
    upload_bytes: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Imported":
        return cls(
            d["entries"], d["files"], d["dirs"], d["symlinks"], d["bytes"], d["upload_bytes"]
        )


@dataclass(frozen=True)
class Deleted:
    """What a delete did."""

    id: str
    home_removed: bool
    terminals_closed: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Deleted":
        return cls(d["id"], d["home_removed"], d["terminals_closed"])


@dataclass(frozen=True)
class Terminal:
    """One open terminal: its id, when it was opened (Unix seconds), the
    browsers attached now and its size."""

    id: str
    created_at: int
    viewers: int
    cols: int
    rows: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Terminal":
        return cls(d["id"], d["created_at"], d["viewers"], d["cols"], d["rows"])


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log (docs/api.md#audit-log)."""

    seq: int
    at_ms: int
    actor: str
    action: str
    tenant: Optional[str]
    outcome: str
    detail: Any

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AuditEntry":
        return cls(
            d["seq"], d["at_ms"], d["actor"], d["action"], d.get("tenant"), d["outcome"], d.get("detail")
        )


@dataclass(frozen=True)
class FileWritten:
    """What a file upload wrote: its path (relative to the home) and size;
    for an archive, the server's answer is in ``raw``."""

    path: str
    bytes: Optional[int]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FileWritten":
        return cls(str(d.get("path", "")), d.get("bytes"), dict(d))


@dataclass(frozen=True)
class ServiceExit:
    """How a service's last run ended (``reason``: ``exit``, ``signal``,
    ``memory_limit``, ``stopped``, ``sandbox_stopped`` or ``not_started``)."""

    exit_code: Optional[int]
    signal: Optional[int]
    at: int
    reason: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ServiceExit":
        return cls(d.get("exit_code"), d.get("signal"), d["at"], d["reason"])


@dataclass(frozen=True)
class Service:
    """A named service (docs/services.md): its definition and live status
    (``state``: ``starting``, ``running``, ``backing-off``, ``stopped`` or
    ``failed``)."""

    user: str
    name: str
    argv: List[str]
    cwd: str
    env: Dict[str, str]
    port: Optional[int]
    restart: str
    enabled: bool
    state: str
    restarts: int
    last_exit: Optional[ServiceExit]
    started_at: Optional[int]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Service":
        last = d.get("last_exit")
        return cls(
            user=d["user"],
            name=d["name"],
            argv=list(d["argv"]),
            cwd=d["cwd"],
            env=dict(d.get("env") or {}),
            port=d.get("port"),
            restart=d["restart"],
            enabled=d["enabled"],
            state=d["state"],
            restarts=d["restarts"],
            last_exit=ServiceExit.from_json(last) if last else None,
            started_at=d.get("started_at"),
        )
