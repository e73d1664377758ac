"""The Popen-like object over the streamed exec: exit codes, output that
streams while the command runs, kill and terminate, communicate, text
mode, and that its pid marker never reaches the caller."""

from __future__ import annotations

import subprocess
import time

import pytest

from warren_client import Client, NotFound


@pytest.fixture
def made(client: Client, user_id: str) -> str:
    client.create_user(user_id)
    return user_id


@pytest.mark.parametrize("code", [0, 1, 3, 42])
def test_exit_codes(client: Client, made: str, code: int) -> None:
    p = client.popen(made, f"exit {code}")
    assert p.wait(timeout=60) == code
    assert p.returncode == code and p.poll() == code
    assert p.end is not None and p.end.reason == "exit"


def test_output_streams_while_the_command_runs(client: Client, made: str) -> None:
    p = client.popen(made, ["sh", "-c", "echo ready; sleep 300"])
    started = time.monotonic()
    assert p.stdout.readline() == b"ready\n"
    # Read while it still runs: nothing waited for the end.
    assert p.poll() is None
    assert time.monotonic() - started < 60
    p.kill()
    assert p.wait(timeout=60) == -9
    assert p.end is not None and p.end.signal == 9


def test_kill_and_terminate(client: Client, made: str) -> None:
    p = client.popen(made, ["sleep", "300"])
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.5)
    began = time.monotonic()
    p.kill()
    assert p.wait(timeout=60) == -9
    assert time.monotonic() - began < 30
    p = client.popen(made, ["sleep", "300"])
    time.sleep(0.5)
    p.terminate()
    assert p.wait(timeout=60) == -15
    # Killing an ended process does nothing, as with Popen.
    p.kill()
    assert p.returncode == -15


def test_stdout_and_stderr_apart_and_no_marker(client: Client, made: str) -> None:
    p = client.popen(made, "echo to-out; echo to-err >&2; exit 5")
    out, err = p.communicate(timeout=60)
    assert (out, err, p.returncode) == (b"to-out\n", b"to-err\n", 5)
    assert b"__warren_pid" not in err


def test_communicate_many_lines_and_text_mode(client: Client, made: str) -> None:
    p = client.popen(made, ["sh", "-c", "seq 1 100000; seq 1 50000 >&2"], text=True)
    out, err = p.communicate(timeout=120)
    assert out == "".join(f"{i}\n" for i in range(1, 100001))
    assert err == "".join(f"{i}\n" for i in range(1, 50001))
    assert p.returncode == 0


def test_iterating_stdout_lines(client: Client, made: str) -> None:
    p = client.popen(made, ["sh", "-c", "for i in 1 2 3; do echo line$i; done"])
    assert [line for line in p.stdout] == [b"line1\n", b"line2\n", b"line3\n"]
    assert p.wait(timeout=60) == 0


def test_cwd_env_stdin_and_missing_command(client: Client, made: str) -> None:
    client.exec(made, ["mkdir", "-p", "w/d"], check=True)
    p = client.popen(made, 'echo "$(basename "$PWD") $PORT"; cat', cwd="w/d", env={"PORT": "8123"}, stdin="in\n")
    out, _ = p.communicate(timeout=60)
    assert out == b"d 8123\nin\n"
    p = client.popen(made, ["no-such-command-here"])
    out, err = p.communicate(timeout=60)
    assert p.returncode == 127 and err


def test_a_missing_user_raises_at_start(client: Client) -> None:
    with pytest.raises(NotFound):
        client.popen("ghost-of-py", ["true"])


def test_context_manager_waits(client: Client, made: str) -> None:
    with client.popen(made, ["sh", "-c", "echo hi; exit 7"]) as p:
        assert p.stdout.read() == b"hi\n"
    assert p.returncode == 7


def test_communicate_keeps_what_readline_buffered(client: Client, made: str) -> None:
    p = client.popen(made, ["sh", "-c", "printf 'a\\nb\\nc\\n'; sleep 0.5; printf 'd\\n'"])
    assert p.stdout.readline() == b"a\n"
    out, _ = p.communicate(timeout=60)
    assert out == b"b\nc\nd\n"


def test_communicate_after_a_timeout_gets_the_rest(client: Client, made: str) -> None:
    p = client.popen(made, ["sh", "-c", "echo first; sleep 2; echo second"])
    with pytest.raises(subprocess.TimeoutExpired):
        p.communicate(timeout=0.5)
    out, _ = p.communicate(timeout=60)
    assert out == b"first\nsecond\n"
    assert p.returncode == 0
