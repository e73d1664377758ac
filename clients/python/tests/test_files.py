"""The files API (GET/PUT /api/users/{user}/files/{path}, and the same
under /api/me/files with a user's own login): single files and folders in
and out, hostile paths refused with nothing written.

"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from warren_client import ME, BadRequest, Client, NotFound

from .conftest import Server, login_cookie


@pytest.fixture
def made(client: Client, user_id: str) -> str:
    client.create_user(user_id)
    return user_id


def test_a_file_in_and_out(client: Client, made: str, tmp_path: Path) -> None:
    w = client.write_file(made, "deep/er/hello.txt", b"hello\n")
    assert w.bytes == 6 and w.path.endswith("deep/er/hello.txt")
    assert client.exec(made, ["cat", "deep/er/hello.txt"]).stdout == "hello\n"
    assert client.read_file(made, "deep/er/hello.txt") == b"hello\n"
    # Written inside the sandbox, as the user: the file is theirs.
    assert client.exec(made, "stat -c %U deep/er/hello.txt").stdout.strip() == client.get_user(made).slug
    local = tmp_path / "big.bin"
    local.write_bytes(bytes(range(256)) * 4096)
    assert client.write_file(made, "big.bin", local).bytes == local.stat().st_size
    out = tmp_path / "back.bin"
    assert client.download(made, "big.bin", out) == local.stat().st_size
    assert out.read_bytes() == local.read_bytes()
    with pytest.raises(NotFound):
        client.read_file(made, "no/such/file")


def test_a_folder_in_and_out(client: Client, made: str, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("print(1)\n")
    (src / "pkg" / "mod.py").write_text("X = 2\n")
    client.upload_directory(made, "proj", src)
    assert client.exec(made, ["cat", "proj/main.py", "proj/pkg/mod.py"]).stdout == "print(1)\nX = 2\n"
    data = client.read_file(made, "proj")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert any(n.endswith("pkg/mod.py") for n in names), names


def test_hostile_paths_are_refused_with_nothing_written(client: Client, made: str) -> None:
    client.exec(made, "ln -s /etc out && ln -s / root-link", check=True)
    before = client.exec(made, "find . | sort").stdout
    for path in ["../escape.txt", "a/../../escape.txt", "out/evil", "root-link/tmp/evil"]:
        with pytest.raises(BadRequest):
            client.write_file(made, path, b"x")
    for path in ["out/passwd", "../"]:
        with pytest.raises(BadRequest):
            client.read_file(made, path)
    with pytest.raises(BadRequest):
        client.upload_archive(made, "d", _tar_gz({"../../escape": b"x"}))
    assert client.exec(made, "find . | sort").stdout == before


def test_my_own_files_with_my_login(client: Client, server: Server, made: str) -> None:
    cookie = login_cookie(server, made)
    session = cookie.split("=", 1)[1]
    mine = Client(server.url, session)
    mine.write_file(ME, "mine.txt", b"mine")
    assert mine.read_file(ME, "mine.txt") == b"mine"
    assert client.read_file(made, "mine.txt") == b"mine"


def _tar_gz(entries: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
