"""The compatibility layer: the replaced system's names and shapes over
warren's API."""

from __future__ import annotations

import tarfile
import uuid
from pathlib import Path, PurePosixPath

import pytest

from warren_client import Client
from warren_client.compat import IsolatedUser, UserIsolationManager, get_isolation_manager

from .conftest import Server


@pytest.fixture
def manager(client: Client) -> UserIsolationManager:
    # Configured from WARREN_URL / WARREN_ADMIN_TOKEN, as the client fixture set them.
    return UserIsolationManager()


def test_users(manager: UserIsolationManager, server: Server, user_id: str) -> None:
    assert manager.get_user(user_id) is None
    u = manager.get_or_create_user(user_id)
    assert isinstance(u, IsolatedUser)
    assert (u.saas_user_id, u.linux_username) == (user_id, user_id)
    assert u.home_dir == server.workspace_root / user_id and u.home_dir.is_dir()
    assert isinstance(u.linux_uid, int) and isinstance(u.linux_gid, int)
    # Once its sandbox ran (with subordinate ids it takes the home over
    # then), the home on the host carries the user's gid.
    assert manager.run_as_user(user_id, "true").wait(timeout=60) == 0
    assert u.home_dir.stat().st_gid == u.linux_gid
    assert isinstance(u.created_at, float)
    assert manager.get_or_create_user(user_id) == u
    assert manager.get_user(user_id) == u
    assert u in manager.list_users()
    d = u.to_dict()
    assert d["home_dir"] == str(u.home_dir) and d["linux_gid"] == u.linux_gid
    assert get_isolation_manager().get_user(user_id) == u


def test_sandbox_path_is_made_inside_the_sandbox(manager: UserIsolationManager, client: Client, user_id: str) -> None:
    path = manager.get_sandbox_path(user_id, "my-api")
    home = manager.get_user(user_id).home_dir  # type: ignore[union-attr]
    assert path == home / "sandboxes" / "my-api"
    assert path.is_dir()
    # Made by the user, inside: it is theirs.
    assert path.stat().st_uid == home.stat().st_uid
    assert client.exec(user_id, ["test", "-d", "sandboxes/my-api"]).returncode == 0
    for bad in ["", ".", "..", "a/b", "../x"]:
        with pytest.raises(ValueError):
            manager.get_sandbox_path(user_id, bad)


def test_run_as_user_with_cwd_and_env(manager: UserIsolationManager, user_id: str) -> None:
    sandbox = manager.get_sandbox_path(user_id, "svc")
    inside = PurePosixPath("/workspace") / manager.get_user(user_id).linux_username / "sandboxes" / "svc"  # type: ignore[union-attr]
    for cwd in [sandbox, str(sandbox), "sandboxes/svc", inside]:
        p = manager.run_as_user(user_id, 'echo "$(basename "$PWD") $PORT"', cwd=cwd, env={"PORT": "8001"})
        out, err = p.communicate(timeout=60)
        assert (out, p.returncode) == (b"svc 8001\n", 0), (cwd, err)
    p = manager.run_as_user(user_id, ["sh", "-c", "exit 9"])
    assert p.wait(timeout=60) == 9
    with pytest.raises(ValueError):
        manager.run_as_user(user_id, "true", cwd="/etc")
    with pytest.raises(ValueError):
        manager.run_as_user(user_id, "true", cwd="a/../../b")


def test_run_as_user_streams_and_kills(manager: UserIsolationManager, user_id: str) -> None:
    manager.get_or_create_user(user_id)
    p = manager.run_as_user(user_id, "echo up; exec sleep 300")
    assert p.stdout.readline() == b"up\n"
    assert p.poll() is None
    p.kill()
    assert p.wait(timeout=60) == -9


def test_stats(manager: UserIsolationManager, user_id: str) -> None:
    manager.get_sandbox_path(user_id, "a")
    manager.get_sandbox_path(user_id, "b")
    p = manager.run_as_user(user_id, "head -c 2097152 /dev/zero > sandboxes/a/blob")
    assert p.wait(timeout=60) == 0
    stats = manager.get_user_stats(user_id)
    assert stats["user"]["saas_user_id"] == user_id
    assert stats["sandbox_count"] == 2
    assert stats["total_size_mb"] >= 2.0
    assert stats["warren"]["user"]["id"] == user_id


def test_export_import_delete(manager: UserIsolationManager, client: Client, user_id: str, tmp_path: Path) -> None:
    other = f"{user_id}-to"
    manager.get_sandbox_path(user_id, "svc")
    client.exec(user_id, "echo data > sandboxes/svc/f", check=True)
    out = tmp_path / "deep" / "export.tar.gz"
    assert manager.export_user_data(user_id, out)
    with tarfile.open(out) as tar:
        assert any(n.endswith("sandboxes/svc/f") for n in tar.getnames())
    try:
        assert manager.import_user_data(other, out)
        assert client.exec(other, ["cat", "sandboxes/svc/f"]).stdout == "data\n"
        # A hostile archive: False, nothing written.
        bad = tmp_path / "bad.tar.gz"
        with tarfile.open(bad, "w:gz") as tar:
            tar.add(out, arcname="../escape")
        before = client.exec(other, "ls -A").stdout
        assert not manager.import_user_data(other, bad)
        assert client.exec(other, "ls -A").stdout == before
    finally:
        assert manager.delete_user(other)
    assert manager.get_user(other) is None
    assert not manager.delete_user(other)
    assert not manager.export_user_data(f"ghost-{uuid.uuid4().hex[:6]}", tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_delete_keeping_the_home(manager: UserIsolationManager, user_id: str) -> None:
    u = manager.get_or_create_user(user_id)
    assert manager.delete_user(user_id, delete_home=False)
    assert u.home_dir.is_dir()
    assert manager.get_or_create_user(user_id).linux_uid == u.linux_uid
