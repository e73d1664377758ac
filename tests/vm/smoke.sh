#!/bin/sh
# Smoke test of the VM itself: cgroup2 with memory, cpu and pids, and a
# child cgroup whose memory.max the kernel echoes back.
set -eu
echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "subtree_control:    $(cat /sys/fs/cgroup/cgroup.subtree_control)"
grep cgroup /proc/mounts
mkdir /sys/fs/cgroup/smoke
echo 536870912 >/sys/fs/cgroup/smoke/memory.max
got=$(cat /sys/fs/cgroup/smoke/memory.max)
echo "memory.max: $got"
[ "$got" = 536870912 ]
echo 0 >/sys/fs/cgroup/smoke/memory.swap.max
echo "50000 100000" >/sys/fs/cgroup/smoke/cpu.max
echo 64 >/sys/fs/cgroup/smoke/pids.max
echo "cpu.max: $(cat /sys/fs/cgroup/smoke/cpu.max), pids.max: $(cat /sys/fs/cgroup/smoke/pids.max)"
[ -e /sys/fs/cgroup/smoke/cgroup.kill ] && echo "cgroup.kill present"
rmdir /sys/fs/cgroup/smoke
echo "smoke ok"
