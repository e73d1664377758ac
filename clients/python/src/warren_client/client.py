"""The client for warren's management API (docs/api.md): users, limits,
stats, exec (whole and streamed), export and import, delete, terminals,
the audit log, files, metrics."""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ._transport import Transport, quote_path, quote_segment
from .errors import TransferCut
from .models import (
    DEFAULT,
    AuditEntry,
    Deleted,
    ExecResult,
    FileWritten,
    Imported,
    LimitValue,
    Service,
    Stats,
    Terminal,
    User,
)
from .process import Process
from .streams import ExecStream

PathLike = Union[str, "os.PathLike[str]"]
#: A command: its argv, or one string run with ``sh -c``.
Command = Union[str, Sequence[str]]

#: Stands for "the user whose token this client holds" in the files
#: methods (``/api/me/files/...``: a user's session cookie or JWT as token).
ME = "\0me"

#: The API's most a command may run (``timeout_secs``), in seconds.
MAX_COMMAND_SECONDS = 3600.0
_COPY_CHUNK = 64 * 1024


class Client:
    """A connection to one warren server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8080`` (default: the
            ``WARREN_URL`` environment variable).
        admin_token: the admin token (default: ``WARREN_ADMIN_TOKEN``; a
            user's JWT works for the ``ME`` files routes only).
        timeout: seconds for each network operation of a request (a whole
            exec waits at least its command's timeout too).

    Raises:
        ValueError: no URL given nor in the environment, or not http(s).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        admin_token: Optional[str] = None,
        *,
        timeout: Optional[float] = 300.0,
    ) -> None:
        url = url or os.environ.get("WARREN_URL")
        if not url:
            raise ValueError("no server URL: pass url= or set WARREN_URL (e.g. http://127.0.0.1:8080)")
        token = admin_token if admin_token is not None else os.environ.get("WARREN_ADMIN_TOKEN")
        self._t = Transport(url, token or None, timeout)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._t.url

    # Server.
    def healthz(self) -> bool:
        """True when the server answers ``/healthz`` with ``ok``."""
        _, body = self._t.call("GET", "/healthz")
        return body.strip() == b"ok"

    def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document."""
        return self._t.json("GET", "/api/openapi.json")  # type: ignore[no-any-return]

    def metrics(self) -> str:
        """``/metrics``, as Prometheus text."""
        _, body = self._t.call("GET", "/metrics")
        return body.decode()

    # Users.
    def list_users(self) -> List[User]:
        """Every tenant."""
        return [User.from_json(u) for u in self._t.json("GET", "/api/users")["users"]]

    def create_user(self, user_id: str) -> Tuple[User, bool]:
        """Gets or creates a tenant (host uid allocated, home created);
        returns it and whether it was created now."""
        conn, resp = self._t.open("POST", "/api/users", json_body={"id": user_id})
        try:
            body = resp.read()
        finally:
            conn.close()
        return User.from_json(json.loads(body)), resp.status == 201

    def get_user(self, user_id: str) -> User:
        """One tenant; :class:`~warren_client.errors.NotFound` if none."""
        return User.from_json(self._t.json("GET", _user(user_id)))

    def delete_user(self, user_id: str, *, remove_home: bool = False) -> Deleted:
        """Closes the tenant's terminals, stops its sandbox and removes it;
        its home too with ``remove_home`` (kept homes come back, with their
        uid, when the id is created again)."""
        return Deleted.from_json(
            self._t.json("DELETE", _user(user_id), query={"remove_home": remove_home})
        )

    def set_limits(
        self,
        user_id: str,
        *,
        memory_bytes: LimitValue = DEFAULT,
        cpus: LimitValue = DEFAULT,
        pids: LimitValue = DEFAULT,
    ) -> User:
        """Replaces the tenant's three overrides: a number, ``"none"``
        (:data:`~warren_client.models.UNLIMITED`) or ``"default"``. They
        apply from its next sandbox on."""
        body = {"memory_bytes": memory_bytes, "cpus": cpus, "pids": pids}
        return User.from_json(self._t.json("PUT", _user(user_id) + "/limits", json_body=body))

    def stats(self, user_id: str) -> Stats:
        """What the tenant uses now: sandbox, limits in force, cgroup
        counters, the home's size."""
        return Stats.from_json(self._t.json("GET", _user(user_id) + "/stats"))

    # Commands.
    def exec(
        self,
        user_id: str,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
        timeout: Optional[float] = None,
        check: bool = False,
    ) -> ExecResult:
        """Runs a command in the user's sandbox and returns everything it did.

        Args:
            command: the argv, or a string run with ``sh -c``.
            cwd: relative to the home (no ``..``).
            env: extra environment variables.
            stdin: text given to the command on stdin.
            timeout: the command is killed after this many seconds (the
                server's default: 60; at most 3600).
            check: raise :class:`~warren_client.models.CommandFailed` unless
                it exits 0.
        """
        body = _exec_body(command, cwd, env, stdin, timeout)
        wait = (timeout or 60.0) + 60.0
        read = None if self._t.timeout is None else max(self._t.timeout, wait)
        result = ExecResult.from_json(
            self._t.json("POST", _user(user_id) + "/exec", json_body=body, timeout=read)
        )
        return result.check_returncode() if check else result

    def exec_stream(
        self,
        user_id: str,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
        timeout: Optional[float] = None,
        read_timeout: Union[None, float, str] = None,
    ) -> ExecStream:
        """Runs a command and streams its output as it comes (see
        :class:`~warren_client.streams.ExecStream`). ``read_timeout``:
        seconds to wait for each piece of output (default: none)."""
        body = _exec_body(command, cwd, env, stdin, timeout)
        conn, resp = self._t.open(
            "POST", _user(user_id) + "/exec/stream", json_body=body, timeout=read_timeout
        )
        return ExecStream(conn, resp)

    def popen(
        self,
        user_id: str,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
        timeout: Optional[float] = MAX_COMMAND_SECONDS,
        text: bool = False,
    ) -> Process:
        """Starts a command and returns a ``subprocess.Popen``-like
        :class:`~warren_client.process.Process` (``stdout``, ``stderr``,
        ``wait``, ``poll``, ``communicate``, ``kill``, ``returncode``).
        ``timeout``: the server kills it after this many seconds (default:
        the API's most, an hour)."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        return Process(self, user_id, argv, cwd=cwd, env=env, stdin=stdin, timeout=timeout, text=text)

    # Homes.
    def export_home(self, user_id: str, dest: Union[PathLike, IO[bytes]]) -> int:
        """Streams the home as tar.gz into ``dest`` (a path, written whole or
        not at all, or a binary file); returns the bytes written. A transfer
        the server cuts (a failed export) raises
        :class:`~warren_client.errors.TransferCut`."""
        return self._download(_user(user_id) + "/export", dest)

    def import_home(self, user_id: str, src: Union[PathLike, IO[bytes], bytes]) -> Imported:
        """Streams a tar.gz (a path, a binary file or bytes) into the home.
        A hostile archive is refused (:class:`~warren_client.errors.BadRequest`)
        with nothing written."""
        with _source(src) as body:
            return Imported.from_json(
                self._t.json(
                    "POST",
                    _user(user_id) + "/import",
                    body=body,
                    content_type="application/gzip",
                    timeout=self._long_timeout(),
                )
            )

    # Terminals.
    def terminals(self, user_id: str) -> List[Terminal]:
        """The user's open terminals."""
        return [
            Terminal.from_json(t)
            for t in self._t.json("GET", _user(user_id) + "/terminals")["terminals"]
        ]

    def close_terminal(self, user_id: str, terminal_id: str) -> None:
        """Closes one terminal (its viewers get reason ``closed``)."""
        self._t.call("DELETE", _user(user_id) + "/terminals/" + quote_segment(terminal_id))

    # Named services (docs/services.md).
    def list_services(self, user_id: str) -> List[Service]:
        """The user's services, by name."""
        return [Service.from_json(s) for s in self._t.json("GET", _services(user_id))["services"]]

    def create_service(
        self,
        user_id: str,
        name: str,
        command: Command,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        port: Optional[int] = None,
        restart: str = "on-failure",
        enabled: bool = True,
    ) -> Service:
        """Creates a service and (when ``enabled``) starts it in the user's
        sandbox; ``cwd`` is relative to the home (default
        ``sandboxes/<name>``, created), ``port`` is exported as ``PORT``,
        ``restart`` is ``on-failure``, ``always`` or ``never``. A string
        command runs with ``sh -c``. A taken name is ``Conflict``."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        body: Dict[str, Any] = {"name": name, "argv": argv, "restart": restart, "enabled": enabled}
        if cwd is not None:
            body["cwd"] = cwd
        if env:
            body["env"] = dict(env)
        if port is not None:
            body["port"] = port
        return Service.from_json(self._t.json("POST", _services(user_id), json_body=body))

    def get_service(self, user_id: str, name: str) -> Service:
        return Service.from_json(self._t.json("GET", _service(user_id, name)))

    def service_logs(self, user_id: str, name: str, *, bytes: Optional[int] = None) -> bytes:
        """The last bytes of the service's output (stdout and stderr)."""
        return self._t.call("GET", _service(user_id, name) + "/logs", query={"bytes": bytes})[1]

    def follow_service_logs(
        self, user_id: str, name: str, *, bytes: Optional[int] = None
    ) -> Iterator[bytes]:
        """The tail, then the output as it comes, until the service is
        deleted (or the iterator closed)."""
        conn, resp = self._t.open(
            "GET",
            _service(user_id, name) + "/logs",
            query={"bytes": bytes, "follow": 1},
            timeout=None,
        )
        try:
            while True:
                chunk = resp.read1(_COPY_CHUNK)
                if not chunk:
                    return
                yield chunk
        except (OSError, http.client.HTTPException) as e:
            raise TransferCut(f"the log stream was cut: {e}") from e
        finally:
            conn.close()

    def start_service(self, user_id: str, name: str) -> Service:
        """Starts it (unless it runs) and marks it enabled."""
        return Service.from_json(self._t.json("POST", _service(user_id, name) + "/start"))

    def stop_service(self, user_id: str, name: str) -> Service:
        """Stops it and marks it disabled."""
        return Service.from_json(self._t.json("POST", _service(user_id, name) + "/stop"))

    def restart_service(self, user_id: str, name: str) -> Service:
        return Service.from_json(self._t.json("POST", _service(user_id, name) + "/restart"))

    def delete_service(self, user_id: str, name: str) -> None:
        """Stops it and removes it."""
        self._t.call("DELETE", _service(user_id, name))

    # Audit.
    def audit(
        self,
        *,
        user: Optional[str] = None,
        action: Optional[str] = None,
        after: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> List[AuditEntry]:
        """One page of the audit log, oldest first (``limit`` 0 to 1000,
        default 100; page with ``after`` = the last ``seq`` seen)."""
        q = {"user": user, "action": action, "after": after, "limit": limit}
        return [AuditEntry.from_json(e) for e in self._t.json("GET", "/api/audit", query=q)["entries"]]

    def iter_audit(
        self, *, user: Optional[str] = None, action: Optional[str] = None, after: Optional[int] = None
    ) -> Iterator[AuditEntry]:
        """Every entry from ``after`` on, fetched a page at a time."""
        while True:
            page = self.audit(user=user, action=action, after=after, limit=1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].seq

    # Files (inside the sandbox, as the user).
    def read_file(self, user_id: str, path: str) -> bytes:
        """A file of the home, whole (a directory comes as tar.gz)."""
        buf = io.BytesIO()
        self._download(_files(user_id, path), buf)
        return buf.getvalue()

    def download(self, user_id: str, path: str, dest: Union[PathLike, IO[bytes]]) -> int:
        """Streams a file of the home (a directory: a tar.gz of it) into
        ``dest``; returns the bytes written."""
        return self._download(_files(user_id, path), dest)

    def write_file(self, user_id: str, path: str, data: Union[bytes, PathLike, IO[bytes]]) -> FileWritten:
        """Writes ``data`` (bytes, a local path or a binary file) to ``path``
        in the home, parent directories created. A path with ``..``, an
        absolute one, or one through a symlink leading out of the home is
        refused (:class:`~warren_client.errors.BadRequest`), nothing written."""
        with _source(data) as body:
            return FileWritten.from_json(
                self._t.json(
                    "PUT",
                    _files(user_id, path),
                    body=body,
                    content_type="application/octet-stream",
                    timeout=self._long_timeout(),
                )
            )

    def upload_archive(self, user_id: str, path: str, tar_gz: Union[bytes, PathLike, IO[bytes]]) -> FileWritten:
        """Unpacks a tar.gz into the directory ``path`` of the home (created),
        under the same rules as an import."""
        with _source(tar_gz) as body:
            return FileWritten.from_json(
                self._t.json(
                    "PUT",
                    _files(user_id, path),
                    query={"archive": "tar.gz"},
                    body=body,
                    content_type="application/gzip",
                    timeout=self._long_timeout(),
                )
            )

    def upload_directory(self, user_id: str, path: str, local_dir: PathLike) -> FileWritten:
        """Packs a local directory (symlinks kept as links) and unpacks it
        into the directory ``path`` of the home."""
        with tempfile.TemporaryFile() as spool:
            with tarfile.open(fileobj=spool, mode="w:gz") as tar:
                for entry in sorted(Path(local_dir).iterdir()):
                    tar.add(entry, arcname=entry.name)
            spool.seek(0)
            return self.upload_archive(user_id, path, spool)

    # Helpers.
    def _long_timeout(self) -> Optional[float]:
        return None if self._t.timeout is None else max(self._t.timeout, 3600.0)

    def _download(self, path: str, dest: Union[PathLike, IO[bytes]]) -> int:
        conn, resp = self._t.open("GET", path, timeout=self._long_timeout())
        try:
            if hasattr(dest, "write"):
                return _copy(resp, dest)  # type: ignore[arg-type]
            target = Path(dest)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
            try:
                with os.fdopen(fd, "wb") as f:
                    n = _copy(resp, f)
                os.replace(tmp, target)
                return n
            except BaseException:
                os.unlink(tmp)
                raise
        finally:
            conn.close()


def _user(user_id: str) -> str:
    return "/api/users/" + quote_segment(user_id)


def _services(user_id: str) -> str:
    return ("/api/me" if user_id == ME else _user(user_id)) + "/services"


def _service(user_id: str, name: str) -> str:
    return _services(user_id) + "/" + quote_segment(name)


def _files(user_id: str, path: str) -> str:
    base = "/api/me" if user_id == ME else _user(user_id)
    # Sent as given: the server refuses absolute and `..` paths itself.
    return base + "/files/" + quote_path(path)


def _exec_body(
    command: Command,
    cwd: Optional[str],
    env: Optional[Mapping[str, str]],
    stdin: Optional[str],
    timeout: Optional[float],
) -> Dict[str, Any]:
    argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
    body: Dict[str, Any] = {"argv": argv}
    if cwd is not None:
        body["cwd"] = str(cwd)
    if env:
        body["env"] = dict(env)
    if stdin is not None:
        body["stdin"] = stdin
    if timeout is not None:
        body["timeout_secs"] = timeout
    return body


def _copy(resp: http.client.HTTPResponse, out: IO[bytes]) -> int:
    """Copies an answer's body; a body cut short raises TransferCut."""
    n = 0
    try:
        while True:
            chunk = resp.read(_COPY_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            n += len(chunk)
    except http.client.IncompleteRead as e:
        raise TransferCut(f"the transfer was cut after {n + len(e.partial)} bytes") from e
    except (OSError, http.client.HTTPException) as e:
        raise TransferCut(f"the transfer was cut after {n} bytes: {e}") from e
    length = resp.getheader("Content-Length")
    if length is not None and int(length) != n:
        raise TransferCut(f"the transfer was cut after {n} of {length} bytes")
    return n


class _source:
    """A request body from bytes, a path (opened here) or a binary file."""

    def __init__(self, src: Union[bytes, PathLike, IO[bytes]]) -> None:
        self._src = src
        self._opened: Optional[IO[bytes]] = None

    def __enter__(self) -> Union[bytes, IO[bytes]]:
        if isinstance(self._src, (bytes, bytearray)):
            return bytes(self._src)
        if hasattr(self._src, "read"):
            return self._src  # type: ignore[return-value]
        self._opened = open(self._src, "rb")
        return self._opened

    def __exit__(self, *exc: object) -> None:
        if self._opened is not None:
            self._opened.close()


__all__ = ["Client", "ME", "MAX_COMMAND_SECONDS"]
