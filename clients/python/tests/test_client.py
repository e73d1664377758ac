"""Each call of the client against a real server: users, limits, stats,
exec (whole and streamed), export/import, terminals, audit, delete,
metrics, and the typed errors carrying the server's message."""

from __future__ import annotations

import base64
import io
import os
import socket
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from warren_client import (
    UNLIMITED,
    BadRequest,
    Client,
    CommandFailed,
    NotFound,
    Unauthorized,
)

from .conftest import Server, login_cookie


def tar_gz(entries: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_configuration_from_arguments_or_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARREN_URL", raising=False)
    monkeypatch.delenv("WARREN_ADMIN_TOKEN", raising=False)
    with pytest.raises(ValueError, match="WARREN_URL"):
        Client()
    assert Client(server.url, server.token).list_users() is not None
    with pytest.raises(Unauthorized) as e:
        Client(server.url).list_users()
    assert e.value.status == 401
    with pytest.raises(Unauthorized):
        Client(server.url, "not-the-token").list_users()
    monkeypatch.setenv("WARREN_URL", server.url)
    monkeypatch.setenv("WARREN_ADMIN_TOKEN", server.token)
    assert Client().healthz()


def test_users_get_or_create_show_list(client: Client, server: Server, user_id: str) -> None:
    user, created = client.create_user(user_id)
    assert created
    assert (user.id, user.slug) == (user_id, user_id)
    assert user.home_dir == str(server.workspace_root / user.slug)
    assert Path(user.home_dir).is_dir()
    assert isinstance(user.host_gid, int)
    again, created = client.create_user(user_id)
    assert not created
    assert again.host_uid == user.host_uid
    assert client.get_user(user_id) == again
    assert user_id in [u.id for u in client.list_users()]


def test_errors_carry_the_servers_message(client: Client) -> None:
    with pytest.raises(NotFound) as e:
        client.get_user("ghost-of-py")
    assert e.value.status == 404
    assert e.value.message == "no such user: ghost-of-py"
    for bad in ["../etc", "root", ""]:
        with pytest.raises(BadRequest) as e:
            client.create_user(bad)
        assert e.value.status == 400
        assert e.value.message
    with pytest.raises(NotFound):
        client.stats("ghost-of-py")


def test_limits(client: Client, user_id: str) -> None:
    client.create_user(user_id)
    user = client.set_limits(user_id, memory_bytes=256 << 20, cpus=UNLIMITED, pids=100)
    assert (user.limits.memory_bytes, user.limits.cpus, user.limits.pids) == (256 << 20, "none", 100)
    with pytest.raises(BadRequest) as e:
        client.set_limits(user_id, pids=1)
    assert "pids" in e.value.message or "3" in e.value.message
    # Refused: nothing changed.
    assert client.get_user(user_id).limits.pids == 100
    assert client.set_limits(user_id).limits.pids == "default"


def test_exec_whole(client: Client, user_id: str) -> None:
    client.create_user(user_id)
    r = client.exec(
        user_id,
        ["sh", "-c", "mkdir -p sub && cd sub && pwd >&2; cat; echo \"$A\"; exit 3"],
        env={"A": "from-env"},
        stdin="from-stdin\n",
    )
    assert (r.exit_code, r.signal, r.reason, r.returncode) == (3, None, "exit", 3)
    assert r.stdout == "from-stdin\nfrom-env\n"
    assert r.stderr.strip().endswith("/sub")
    r = client.exec(user_id, "pwd", cwd="sub")
    assert r.stdout.strip().endswith("/sub")
    assert client.exec(user_id, ["no-such-command-here"]).returncode == 127
    r = client.exec(user_id, ["sleep", "30"], timeout=0.5)
    assert r.reason == "timeout"
    with pytest.raises(CommandFailed) as e:
        client.exec(user_id, "echo oops >&2; exit 2", check=True)
    assert e.value.result.exit_code == 2 and "oops" in str(e.value)
    with pytest.raises(BadRequest):
        client.exec(user_id, ["ls"], cwd="../x")
    with pytest.raises(NotFound):
        client.exec("ghost-of-py", ["true"])


def test_exec_streamed(client: Client, user_id: str) -> None:
    client.create_user(user_id)
    with client.exec_stream(user_id, "for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 4") as s:
        chunks = list(s)
    assert s.end is not None and s.end.exit_code == 4 and s.end.returncode == 4
    out = "".join(c.data for c in chunks if c.stream == "stdout")
    err = "".join(c.data for c in chunks if c.stream == "stderr")
    assert (out, err) == ("out1\nout2\nout3\n", "err1\nerr2\nerr3\n")
    # More than the whole exec keeps (1 MiB), all of it, in order.
    s = client.exec_stream(user_id, ["sh", "-c", "seq 1 300000"])
    total = "".join(c.data for c in s)
    assert s.end is not None and s.end.returncode == 0
    assert total == "".join(f"{i}\n" for i in range(1, 300001))


def test_export_then_import_as_another(client: Client, user_id: str, tmp_path: Path) -> None:
    other = f"{user_id}-b"
    client.create_user(user_id)
    client.exec(user_id, "mkdir -p d && printf hello > d/f.txt && printf x > top", check=True)
    archive = tmp_path / "home.tar.gz"
    n = client.export_home(user_id, archive)
    assert n == archive.stat().st_size > 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(name.endswith("d/f.txt") for name in names), names
    try:
        client.create_user(other)
        imported = client.import_home(other, archive)
        assert imported.files >= 2 and imported.upload_bytes == n
        assert client.exec(other, ["cat", "d/f.txt"]).stdout == "hello"
        # From bytes and from a file object too.
        client.import_home(other, tar_gz({"b.txt": b"bytes"}))
        with open(archive, "rb") as f:
            client.import_home(other, f)
        assert client.exec(other, ["cat", "b.txt"]).stdout == "bytes"
    finally:
        client.delete_user(other, remove_home=True)


def test_hostile_import_is_refused_with_nothing_written(client: Client, user_id: str) -> None:
    client.create_user(user_id)
    before = client.exec(user_id, "ls -A").stdout
    with pytest.raises(BadRequest) as e:
        client.import_home(user_id, tar_gz({"ok.txt": b"ok", "../escape.txt": b"x"}))
    assert e.value.message
    assert client.exec(user_id, "ls -A").stdout == before


def test_export_of_a_missing_user_writes_no_file(client: Client, tmp_path: Path) -> None:
    dest = tmp_path / "none.tar.gz"
    with pytest.raises(NotFound):
        client.export_home("ghost-of-py", dest)
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_file_object(client: Client, user_id: str) -> None:
    client.create_user(user_id)
    client.exec(user_id, "echo x > f", check=True)
    buf = io.BytesIO()
    assert client.export_home(user_id, buf) == len(buf.getvalue()) > 0
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        assert tar.getnames()


def _open_terminal(server: Server, user: str) -> socket.socket:
    """Opens a terminal over a WebSocket as the user (the handshake only:
    the terminal lives while the socket is open)."""
    cookie = login_cookie(server, user)
    key = base64.b64encode(os.urandom(16)).decode()
    ws = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    ws.sendall(
        (
            "GET /ws?cols=80&rows=24 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: warren.v1\r\nCookie: {cookie}\r\n\r\n"
        ).encode()
    )
    reply = ws.recv(4096)
    assert reply.startswith(b"HTTP/1.1 101"), reply
    return ws


def test_terminals_list_and_close(client: Client, server: Server, user_id: str) -> None:
    if not server.login_token:
        pytest.fail("no login URL in the server's banner")
    client.create_user(user_id)
    assert client.terminals(user_id) == []
    ws = _open_terminal(server, user_id)
    try:
        deadline = time.monotonic() + 30
        terms = client.terminals(user_id)
        while not terms and time.monotonic() < deadline:
            time.sleep(0.2)
            terms = client.terminals(user_id)
        assert len(terms) == 1 and (terms[0].cols, terms[0].rows) == (80, 24)
        client.close_terminal(user_id, terms[0].id)
        # The terminal ends as its shell is killed.
        while client.terminals(user_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.terminals(user_id) == []
        with pytest.raises(NotFound):
            client.close_terminal(user_id, terms[0].id)
    finally:
        ws.close()


def test_stats(client: Client, user_id: str) -> None:
    client.create_user(user_id)
    client.exec(user_id, "head -c 5000 /dev/zero > five-k", check=True)
    st = client.stats(user_id)
    assert st.user.id == user_id
    assert st.sandbox == "running"
    assert st.tier in ("namespaces", "landlock", "none")
    assert st.record is not None and st.record["tier"] == st.tier
    assert st.workspace is not None and st.workspace.bytes >= 5000
    assert st.raw["user"]["id"] == user_id


def test_audit(client: Client, user_id: str) -> None:
    client.create_user(user_id)
    client.exec(user_id, ["true"])
    entries = client.audit(user=user_id)
    actions = [e.action for e in entries]
    assert actions[:1] == ["user.create"] and "exec" in actions
    execs = client.audit(user=user_id, action="exec")
    assert execs and all(e.action == "exec" and e.tenant == user_id for e in execs)
    assert execs[-1].detail["argv"] == ["true"]
    page = client.audit(limit=1)
    assert len(page) == 1
    rest = list(client.iter_audit(after=page[0].seq))
    assert rest and rest[0].seq > page[0].seq
    with pytest.raises(BadRequest):
        client.audit(limit=1001)


def test_delete(client: Client, server: Server) -> None:
    uid = f"py-del-{uuid.uuid4().hex[:6]}"
    user, _ = client.create_user(uid)
    assert user.home_dir and Path(user.home_dir).exists()
    deleted = client.delete_user(uid, remove_home=True)
    assert (deleted.id, deleted.home_removed) == (uid, True)
    assert not Path(user.home_dir).exists()
    with pytest.raises(NotFound):
        client.get_user(uid)
    with pytest.raises(NotFound):
        client.delete_user(uid)


def test_metrics_healthz_openapi(client: Client) -> None:
    assert client.healthz()
    assert "warren_sandboxes" in client.metrics()
    doc = client.openapi()
    assert "/api/users/{user}/exec/stream" in doc["paths"]
    assert "home_dir" in doc["components"]["schemas"]["UserView"]["properties"]
