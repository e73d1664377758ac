#!/bin/sh
# Inside the VM (run by cgroup-v2-tests.sh): runs warren-runtime's cgroups
# tests as root with CI=true, so a skipped real test fails.
#
# The test binary gets a cgroup of its own, /runner, as a systemd service
# with Delegate=yes would: the v2 driver must then move itself into
# /runner/warren/supervisor and enable memory, cpu and pids on the way down,
# which is the path a real deployment takes.
set -eu
: "${WARREN_TEST_BIN:?}"
echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
mkdir /sys/fs/cgroup/runner
rc=0
# A child shell moves only itself into /runner, then becomes the test binary.
# shellcheck disable=SC2086 # WARREN_TEST_ARGS is a word list on purpose.
sh -c 'echo $$ >/sys/fs/cgroup/runner/cgroup.procs && exec "$@"' sh \
    "$WARREN_TEST_BIN" ${WARREN_TEST_ARGS:-cgroups::} --nocapture || rc=$?
echo "cgroup tree after the tests:"
find /sys/fs/cgroup/runner -type d
left=$(find /sys/fs/cgroup -type d -name 'sbx-*')
if [ -n "$left" ]; then
    echo "sandbox cgroups left behind: $left"
    [ "$rc" != 0 ] || rc=1
fi
exit "$rc"
