#!/usr/bin/env bash
# Runs warren-runtime's cgroups tests on cgroup v2 inside a throw-away VM
# (the CI host has its controllers on v1): builds the runtime's unit-test
# binary, boots it with run-in-vm.sh and runs it as root with CI=true.
#
# Usage: tests/vm/cgroup-v2-tests.sh [TEST-FILTER-AND-ARGS...]
#   default filter: cgroups::   (fixture tests and the real v2 tests)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# The executable of the lib's test target, from cargo's JSON messages.
bin=$(cd "$repo" && cargo test -p warren-runtime --lib --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "cgroup-v2-tests: no test binary found" >&2; exit 125; }
args=${*:-cgroups::}
exec "$here/run-in-vm.sh" -e CI=true -e RUST_BACKTRACE=1 -e WARREN_TEST_BIN="$bin" \
    -e WARREN_TEST_ARGS="$args" "$here/guest-cgroup-tests.sh" "$bin"
