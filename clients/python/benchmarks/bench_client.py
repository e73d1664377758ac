#!/usr/bin/env python3
"""What the Python client adds to a command's round trip, beside an anchor
measured in the same run: the same POST /exec made with a bare
http.client request (no client code).

    python3 clients/python/benchmarks/bench_client.py [N]

Starts its own `warren serve` (target/release/warren if built, else
target/debug/warren; or WARREN_BIN) on a free loopback port with a temp
state dir, as root for distinct host uids (any user works). Prints the
median and p90 of N (default 200) runs of each row, and each row's ratio to
the anchor.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

from warren_client import Client

REPO = Path(__file__).resolve().parents[3]


def start_server() -> tuple[subprocess.Popen[bytes], str, str, Path]:
    release = REPO / "target" / "release" / "warren"
    binary = Path(os.environ.get("WARREN_BIN") or (release if release.exists() else REPO / "target" / "debug" / "warren"))
    tmp = Path(tempfile.mkdtemp(prefix="warren-bench-client-"))
    tmp.chmod(0o711)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, WARREN_STATE_DIR=str(tmp / "state"), WARREN_WORKSPACE_ROOT=str(tmp / "ws"))
    log = open(tmp / "log", "wb")
    proc = subprocess.Popen([str(binary), "serve", "--listen", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    token = tmp / "state" / "admin-token"
    for _ in range(300):
        if token.exists() and b"listening on" in (tmp / "log").read_bytes():
            break
        time.sleep(0.1)
    print(f"server: {binary}")
    return proc, f"http://127.0.0.1:{port}", token.read_text().strip(), tmp


def timed(n: int, f: Callable[[], None]) -> List[float]:
    f()  # warm: the sandbox starts on the first command
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    proc, url, token, tmp = start_server()
    try:
        c = Client(url, token)
        c.create_user("bench")
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"argv": ["true"]}).encode()

        def bare() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("POST", "/api/users/bench/exec", body=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())["exit_code"] == 0
            conn.close()

        def exec_() -> None:
            assert c.exec("bench", ["true"]).returncode == 0

        def stream() -> None:
            with c.exec_stream("bench", ["true"]) as s:
                assert s.wait().returncode == 0

        def popen() -> None:
            assert c.popen("bench", ["true"]).wait() == 0

        rows = [
            ("anchor: bare http.client POST /exec", bare),
            ("Client.exec", exec_),
            ("Client.exec_stream", stream),
            ("Client.popen().wait() (sh wrapper + stream)", popen),
        ]
        results = [(name, timed(n, f)) for name, f in rows]
        anchor = statistics.median(results[0][1])
        print(f"{'row':<48} {'median ms':>10} {'p90 ms':>8} {'ratio':>6}   (N={n})")
        for name, xs in results:
            med = statistics.median(xs)
            p90 = statistics.quantiles(xs, n=10)[-1]
            print(f"{name:<48} {med:>10.2f} {p90:>8.2f} {med / anchor:>6.2f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
