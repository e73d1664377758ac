"""Named services (docs/services.md) through the client: create, list,
logs and their follow, stop, start, delete; bad input refused; the compat
layer's sandbox path is a service's default working directory."""

from __future__ import annotations

import time

import pytest

from warren_client import BadRequest, Client, Conflict, NotFound
from warren_client.compat import UserIsolationManager


@pytest.fixture
def made(client: Client, user_id: str) -> str:
    client.create_user(user_id)
    return user_id


def _until(what: str, f: "object") -> None:
    deadline = time.monotonic() + 60
    while not f():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def test_a_service_from_creation_to_deletion(client: Client, made: str) -> None:
    s = client.create_service(
        made, "api", "echo listening on $PORT in $(pwd); exit 2", port=8001, env={"A": "b"}
    )
    assert (s.name, s.port, s.cwd, s.restart, s.enabled) == ("api", 8001, "sandboxes/api", "on-failure", True)
    with pytest.raises(Conflict):
        client.create_service(made, "api", ["true"])
    # It crashes and is restarted with backoff: both runs are in its logs.
    _until("two runs", lambda: client.service_logs(made, "api").count(b"listening on 8001") >= 2)
    shown = client.get_service(made, "api")
    assert shown.restarts >= 1
    assert shown.last_exit is not None and shown.last_exit.exit_code == 2
    assert [x.name for x in client.list_services(made)] == ["api"]
    assert len(client.service_logs(made, "api", bytes=4)) == 4
    stopped = client.stop_service(made, "api")
    assert (stopped.state, stopped.enabled) == ("stopped", False)
    client.delete_service(made, "api")
    with pytest.raises(NotFound):
        client.get_service(made, "api")
    assert client.list_services(made) == []


def test_follow_streams_the_output(client: Client, made: str) -> None:
    client.create_service(made, "tick", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done")
    seen = b""
    for chunk in client.follow_service_logs(made, "tick"):
        seen += chunk
        if b"tick 5\n" in seen:
            break
    assert b"tick 1\n" in seen
    client.delete_service(made, "tick")


def test_bad_services_are_refused(client: Client, made: str) -> None:
    for name, argv, cwd in [
        ("../x", ["true"], None),
        ("ok", ["true"], "../elsewhere"),
        ("ok", ["true"], "/etc"),
        ("ok", ["x" * 70_000], None),
    ]:
        with pytest.raises(BadRequest):
            client.create_service(made, name, argv, cwd=cwd)
    assert client.list_services(made) == []
    with pytest.raises(NotFound):
        client.list_services("nobody-here")


def test_the_compat_sandbox_path_is_a_services_default_cwd(client: Client, made: str) -> None:
    manager = UserIsolationManager(client=client)
    path = manager.get_sandbox_path(made, "my-api")
    user = client.get_user(made)
    assert str(path) == f"{user.home_dir}/sandboxes/my-api"
    s = client.create_service(made, "my-api", "pwd; sleep 60")
    assert s.cwd == "sandboxes/my-api"
    _until("pwd", lambda: b"/sandboxes/my-api\n" in client.service_logs(made, "my-api"))
    client.delete_service(made, "my-api")
