"""examples/demo.py, the replaced system's documented demo, runs against a
real server with only its import line changed."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from warren_client import Client

from .conftest import Server

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_only_the_import_line_names_warren() -> None:
    """The code (its docstring aside) names nothing of warren but in the
    one import line, and imports nothing else but the standard library:
    with `from pactown import UserIsolationManager` there instead, it is
    the replaced system's code."""
    tree = ast.parse(DEMO.read_text())
    body = tree.body[1:] if isinstance(tree.body[0], ast.Expr) else tree.body
    code = ast.unparse(ast.Module(body=body, type_ignores=[])).splitlines()
    imports = [line for line in code if line.startswith(("import ", "from "))]
    assert sorted(imports) == sorted(
        ["import sys", "import tempfile", "from pathlib import Path", "from warren_client.compat import UserIsolationManager"]
    )
    assert [line for line in code if re.search("warren", line, re.I)] == [
        "from warren_client.compat import UserIsolationManager"
    ]


def test_the_demo_runs(server: Server, client: Client) -> None:
    env = dict(os.environ, WARREN_URL=server.url, WARREN_ADMIN_TOKEN=server.token)
    r = subprocess.run([sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=600)
    print(r.stdout, r.stderr)
    assert r.returncode == 0
    out = r.stdout
    assert "Demo complete!" in out
    for name, port in [("Alice", 8001), ("Bob", 8002)]:
        slug = re.search(rf"{name} -> (\S+) \(UID: \d+, GID: \d+, home: (\S+)\)", out)
        assert slug, out
        assert slug.group(2) == str(server.workspace_root / slug.group(1))
        # The command ran as the user, in the service's directory, with PORT.
        assert f"  {name}: user={slug.group(1)} port={port} dir=my-api" in out
        assert f"  {name}: 2 sandbox(es)" in out
    assert 'its my-api/main.py: print("Hello from Alice!")' in out
    assert "alice@example.com, bob@example.com, carol@example.com" in out
    for email in ["alice@example.com", "bob@example.com", "carol@example.com"]:
        assert f"  {email}: deleted" in out
    assert not [u for u in client.list_users() if u.id.endswith("@example.com")]
