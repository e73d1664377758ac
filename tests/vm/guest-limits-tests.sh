#!/bin/sh
# Inside the VM (run by limits-v2.sh): the limits tests as root with
# CI=true, from a cgroup of their own as under systemd's Delegate=yes, one
# test at a time (a 512 MiB hog each), then the limit files of a live
# sandbox and a check that no sandbox cgroup is left.
set -eu
: "${WARREN_TEST_BIN:?}"
echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
# /runner is the delegated subtree: the test binary in a leaf of it, each
# `warren run` in a sibling leaf of its own (own-cgroup.sh).
mkdir -p /sys/fs/cgroup/runner/tests
echo "+memory +cpu +pids" >/sys/fs/cgroup/runner/cgroup.subtree_control
rc=0
sh -c 'echo $$ >/sys/fs/cgroup/runner/tests/cgroup.procs && exec "$@"' sh \
    "$WARREN_TEST_BIN" --test-threads=1 --nocapture || rc=$?
# The values the v2 driver wrote for a default sandbox, read while it runs.
warren=$(dirname "$(dirname "$WARREN_TEST_BIN")")/warren
"$WARREN_TEST_WRAPPER" "$warren" run --user vmcheck --state-dir /tmp/st --workspace-root /tmp/ws -- sleep 3 &
sleep 1.5
for f in memory.max memory.swap.max memory.oom.group cpu.max pids.max; do
    v=$(cat /sys/fs/cgroup/runner/run-*/warren/sbx-vmcheck-*/$f)
    echo "sandbox $f = $v"
    case "$f=$v" in
    "memory.max=536870912" | "memory.swap.max=0" | "memory.oom.group=1" | \
        "cpu.max=50000 100000" | "pids.max=512") ;;
    *) echo "unexpected $f: $v"; rc=1 ;;
    esac
done
wait || rc=$?
left=$(find /sys/fs/cgroup -type d -name 'sbx-*')
for d in /sys/fs/cgroup/runner/run-*; do
    rmdir "$d/warren/supervisor" "$d/warren" "$d" 2>/dev/null || true
done
if [ -n "$left" ]; then
    echo "sandbox cgroups left behind: $left"
    [ "$rc" != 0 ] || rc=1
fi
exit "$rc"
