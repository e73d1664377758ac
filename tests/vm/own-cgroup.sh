#!/bin/sh
# Runs "$@" alone in a new cgroup /sys/fs/cgroup/runner/run-PID, as
# `systemd-run --scope -p Delegate=yes "$@"` does on a systemd host: on
# cgroup v2 a process can only give its sandboxes limits from a cgroup that
# holds no process it did not start. guest-limits-tests.sh removes the
# emptied cgroups afterwards.
set -eu
dir=/sys/fs/cgroup/runner/run-$$
mkdir "$dir"
echo $$ >"$dir/cgroup.procs"
exec "$@"
