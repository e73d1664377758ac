"""HTTP over the standard library's ``http.client``: one connection per
request (so a streamed answer owns its connection), the admin token as a
bearer, and error answers turned into :mod:`warren_client.errors`."""

from __future__ import annotations

import http.client
import json
import os
import stat
import urllib.parse
from typing import IO, Any, Dict, Mapping, Optional, Tuple, Union

from .errors import ConnectionFailed, error_for

Body = Union[None, bytes, IO[bytes]]


def quote_segment(value: str) -> str:
    """One path segment (a user id, a terminal id), every reserved byte escaped."""
    return urllib.parse.quote(value, safe="")


def quote_path(value: str) -> str:
    """A relative file path: each segment escaped, the ``/`` kept."""
    return urllib.parse.quote(value, safe="/")


class Transport:
    """Where the server is and how to authenticate to it."""

    def __init__(self, url: str, token: Optional[str], timeout: Optional[float]) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def connect(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def open(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        body: Body = None,
        content_type: Optional[str] = None,
        timeout: Union[None, float, str] = "default",
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends a request and returns its connection and answer, the body
        unread; an error status is raised as its exception (the connection
        closed). ``timeout``: seconds for each socket operation, ``None``
        for none, ``"default"`` for the client's."""
        url = self.prefix + path
        if query:
            pairs = [(k, _query_value(v)) for k, v in query.items() if v is not None]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        headers: Dict[str, str] = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if isinstance(body, (bytes, bytearray)):
            headers["Content-Length"] = str(len(body))
        elif body is not None:
            size = _file_size(body)
            if size is not None:
                headers["Content-Length"] = str(size)
            # Otherwise http.client sends it chunked.
        elif method in ("POST", "PUT"):
            headers["Content-Length"] = "0"
        conn = self.connect(self.timeout if timeout == "default" else timeout)  # type: ignore[arg-type]
        try:
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ConnectionFailed(f"{method} {self.url}{path}: {e}") from e
        if resp.status >= 400:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                conn.close()
            raise error_for(resp.status, _message(raw, resp.reason))
        return conn, resp

    def call(
        self,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> Tuple[int, bytes]:
        """A whole request: its status and body."""
        conn, resp = self.open(method, path, **kwargs)
        try:
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: {e}") from e
        finally:
            conn.close()

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose answer is JSON (``None`` for an empty body)."""
        _, raw = self.call(method, path, **kwargs)
        return json.loads(raw) if raw else None


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _file_size(f: IO[bytes]) -> Optional[int]:
    """The bytes left in a regular file from its position, when known."""
    try:
        st = os.fstat(f.fileno())
        return max(st.st_size - f.tell(), 0) if stat.S_ISREG(st.st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def _message(raw: bytes, reason: str) -> str:
    """The server's message: ``{"error": ...}``, or the text it sent."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text or reason
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])
    return text or reason
