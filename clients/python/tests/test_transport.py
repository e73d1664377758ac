"""What only a misbehaving server shows, against a fake one on loopback: a
transfer cut short leaves no file behind, a plain-text error keeps its
text, an unreachable server is ConnectionFailed."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from warren_client import ApiError, Client, ConnectionFailed, TransferCut


@pytest.fixture
def fake() -> Iterator[tuple]:
    """A one-answer-per-connection server; set `answer` to the raw bytes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    state = {"answer": b""}

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        break
                    data += more
                conn.sendall(state["answer"])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", state
    srv.close()


def test_a_cut_export_leaves_no_file(fake: tuple, tmp_path: Path) -> None:
    url, state = fake
    state["answer"] = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n"  # and then the connection closes: no last chunk
    )
    dest = tmp_path / "home.tar.gz"
    with pytest.raises(TransferCut):
        Client(url, "t").export_home("alice", dest)
    assert list(tmp_path.iterdir()) == []
    # Short of its Content-Length too.
    state["answer"] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
    with pytest.raises(TransferCut):
        Client(url, "t").export_home("alice", dest)
    assert list(tmp_path.iterdir()) == []


def test_a_plain_text_error_keeps_its_text(fake: tuple) -> None:
    url, state = fake
    body = b"this server does not answer to that name"
    state["answer"] = b"HTTP/1.1 421 Misdirected Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with pytest.raises(ApiError) as e:
        Client(url, "t").list_users()
    assert (e.value.status, e.value.message) == (421, body.decode())


def test_an_unreachable_server_is_connection_failed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailed):
        Client(f"http://127.0.0.1:{port}", "t").list_users()


def test_urls_are_checked() -> None:
    with pytest.raises(ValueError):
        Client("ftp://example", "t")
