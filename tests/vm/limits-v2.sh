#!/usr/bin/env bash
# Runs the warren-level limit tests (tests/tests/limits.rs) on cgroup v2 in a
# throw-away VM: real sandboxes started by `warren run`, a memory hog, a
# fork bomb and a CPU spinner, with the values the driver wrote read back.
# Build first (tests/matrix.sh does): cargo build --workspace --all-targets
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
bins=$(cargo test -p warren-tests --test limits --no-run --message-format=json 2>/dev/null |
    grep -E '"profile":\{[^}]*"test":true' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
bin=$(echo "$bins" | tail -n 1)
[ -x "$bin" ] || { echo "limits-v2: no test binary; build first" >&2; exit 125; }
probe=$(strings "$bin" | grep -m1 -o '/[^ ]*/out/warren-probe' || true)
[ -x "$probe" ] || probe=$(ls -t $(find target/debug/build -name warren-probe -type f) | head -n 1)
dir=$(dirname "$(dirname "$bin")")
exec "$here/run-in-vm.sh" -m 2048 -e CI=true -e RUST_BACKTRACE=1 -e WARREN_TEST_BIN="$bin" \
    -e WARREN_TEST_WRAPPER="$here/own-cgroup.sh" \
    "$here/guest-limits-tests.sh" "$bin" "$dir/warren" "$dir/warren-shim" "$probe" "$here/own-cgroup.sh"
