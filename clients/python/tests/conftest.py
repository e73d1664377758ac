"""A real `warren serve` for the tests: target/debug/warren (or WARREN_BIN)
on a free loopback port, with its own state directory, workspace root and
admin token, stopped at the end. Under CI=true (or WARREN_MUST_RUN=1) a
test that cannot run fails instead of skipping."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from warren_client import Client

REPO = Path(__file__).resolve().parents[3]


def must_run() -> bool:
    return os.environ.get("CI") in ("true", "1") or os.environ.get("WARREN_MUST_RUN") == "1"


def skip_or_fail(reason: str) -> None:
    """Skips with the reason, or fails where every test must run."""
    if must_run():
        pytest.fail(f"{reason} (CI requires it)")
    pytest.skip(reason)


@dataclass
class Server:
    url: str
    token: str
    state_dir: Path
    workspace_root: Path
    log: Path
    login_token: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = Path(os.environ.get("WARREN_BIN", REPO / "target" / "debug" / "warren"))
    if not os.access(binary, os.X_OK):
        skip_or_fail(f"no warren binary at {binary} (cargo build)")
    tmp = Path(tempfile.mkdtemp(prefix="warren-pytest-"))
    # Tenants' host uids must reach their homes below it.
    tmp.chmod(0o711)
    port = _free_port()
    log = tmp / "server.log"
    env = dict(
        os.environ,
        WARREN_STATE_DIR=str(tmp / "state"),
        WARREN_WORKSPACE_ROOT=str(tmp / "ws"),
        NO_COLOR="1",
        # Plain homes: the compatibility layer hands out host paths
        # (get_sandbox_path) and sizes them as the replaced system did. A
        # disk-image home is mounted only in its sandbox's mount namespace,
        # so its host path shows nothing (clients/python/README.md).
        WARREN_DISK="none",
        WARREN_DISK_INODES="none",
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--shutdown-timeout", "5s"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    token_file = tmp / "state" / "admin-token"
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if token_file.exists() and token_file.stat().st_size > 0 and "listening on" in text:
            break
        if proc.poll() is not None:
            pytest.fail(f"warren serve exited {proc.returncode}:\n{text}")
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"warren serve did not start within 30 s:\n{text}")
    login = re.search(r"/login\?token=([A-Za-z0-9_-]+)", _plain(text))
    srv = Server(
        url=f"http://127.0.0.1:{port}",
        token=token_file.read_text().strip(),
        state_dir=tmp / "state",
        workspace_root=tmp / "ws",
        log=log,
        login_token=login.group(1) if login else "",
    )
    try:
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server_log = log.read_text(errors="replace")
        if "panicked" in server_log:
            print(server_log)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        assert "panicked" not in server_log, "the server panicked (its log is above)"


def _plain(text: str) -> str:
    """The log without ANSI colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Client:
    """A client configured the documented way: WARREN_URL and WARREN_ADMIN_TOKEN."""
    monkeypatch.setenv("WARREN_URL", server.url)
    monkeypatch.setenv("WARREN_ADMIN_TOKEN", server.token)
    return Client()


@pytest.fixture
def user_id(client: Client) -> Iterator[str]:
    """A fresh tenant id, deleted (with its home) after the test."""
    uid = f"py-{uuid.uuid4().hex[:10]}"
    yield uid
    try:
        client.delete_user(uid, remove_home=True)
    except Exception:  # noqa: BLE001 - the test may have deleted it
        pass


def login_cookie(server: Server, user: str) -> str:
    """Logs in as the user with the banner's login URL; the session cookie
    (`name=value`)."""
    if not server.login_token:
        pytest.fail("no login URL in the server's banner")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            f"GET /login?token={server.login_token}&user={user} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            data = s.recv(4096)
            if not data:
                break
            head += data
    cookies = [
        line.split(":", 1)[1].split(";", 1)[0].strip()
        for line in head.decode(errors="replace").split("\r\n")
        if line.lower().startswith("set-cookie:")
    ]
    assert cookies, head
    return "; ".join(cookies)
