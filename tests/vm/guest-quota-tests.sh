#!/bin/sh
# Inside the VM (run by quota-v2.sh): the workspace root on ext4 mounted
# prjquota, then real sandboxes of one tenant with a 16 MiB and 200-inode
# limit: writing stops with EDQUOT at the byte limit, creating files at the
# inode limit; warren-info names the backend; another tenant still writes;
# usage is read from the quota (`warren users stats`); a raise applies to a
# running sandbox without a restart.
set -eu
: "${WARREN_BIN:?}" "${WARREN_IMG:?}" "${WARREN_TEST_WRAPPER:?}"
mkdir -p /ws /tmp/st
# Each `warren run` in a leaf of this delegated subtree (own-cgroup.sh).
mkdir -p /sys/fs/cgroup/runner
echo "+memory +cpu +pids" >/sys/fs/cgroup/runner/cgroup.subtree_control
mount -o loop,prjquota "$WARREN_IMG" /ws
grep ' /ws ' /proc/self/mountinfo
rc=0
fail() { echo "FAIL: $*"; rc=1; }
limits="--state-dir /tmp/st --workspace-root /ws --disk 16M --disk-inodes 200"
run() { "$WARREN_TEST_WRAPPER" "$WARREN_BIN" run --user alice $limits -- "$@"; }
users() { "$WARREN_BIN" users $limits "$@"; }

echo "== byte and inode limits"
out=$(run sh -c '
    warren-info | grep -i disk
    dd if=/dev/zero of=big bs=1M count=32 2>&1 | grep -v records
    echo "big=$(($(wc -c <big) >> 20))MiB"
    rm -f big
    i=0
    while touch f$i 2>/dev/null; do i=$((i + 1)); [ $i -lt 1000 ] || break; done
    echo "files=$i"
    touch one-more 2>&1
    rm -f f*
    dd if=/dev/zero of=keep bs=1M count=4 2>/dev/null
    echo done' 2>&1) || true
echo "$out"
echo "$out" | grep -q "without the disk limit" && fail "the disk limit was reported missing"
[ "$(echo "$out" | grep -c 'Disk quota exceeded')" -ge 2 ] ||
    fail "want EDQUOT from dd and from touch"
big=$(echo "$out" | sed -n 's/^big=\([0-9]*\)MiB$/\1/p')
[ -n "$big" ] && [ "$big" -ge 15 ] && [ "$big" -le 16 ] || fail "dd wrote ${big:-?} MiB, want 15-16"
files=$(echo "$out" | sed -n 's/^files=\([0-9]*\)$/\1/p')
[ -n "$files" ] && [ "$files" -ge 150 ] && [ "$files" -lt 200 ] || fail "made ${files:-?} files, want 150-199"
echo "$out" | grep -q '^done$' || fail "the sandbox did not finish"
echo "$out" | grep -q 'disk 16.0 MiB and 200 inodes (quota)' || fail "warren-info shows no quota"

echo "== another tenant, its own project"
bob=$("$WARREN_TEST_WRAPPER" "$WARREN_BIN" run --user bob $limits -- sh -c \
    'dd if=/dev/zero of=f bs=1M count=8 2>/dev/null; echo "bob=$?"' 2>&1) || true
echo "$bob"
echo "$bob" | grep -q '^bob=0$' || fail "bob could not write beside alice's quota"

echo "== usage from the quota"
stats=$(users stats alice | tr -d ' \n')
echo "$stats" | grep -o '"disk":{[^}]*}' || fail "no disk usage in stats"
used=$(echo "$stats" | sed -n 's/.*"disk":{[^}]*"bytes_used":\([0-9]*\).*/\1/p')
total=$(echo "$stats" | sed -n 's/.*"disk":{[^}]*"bytes_total":\([0-9]*\).*/\1/p')
inodes=$(echo "$stats" | sed -n 's/.*"disk":{[^}]*"inodes_total":\([0-9]*\).*/\1/p')
[ -n "$used" ] && [ "$used" -ge 4194304 ] && [ "$used" -lt 5242880 ] || fail "bytes_used ${used:-?}, want 4-5 MiB"
[ "${total:-}" = 16777216 ] || fail "bytes_total ${total:-?}, want 16777216"
[ "${inodes:-}" = 200 ] || fail "inodes_total ${inodes:-?}, want 200"

echo "== a live raise"
home=/ws/alice
rm -f "$home/ready" "$home/go"
run sh -c '
    dd if=/dev/zero of=a bs=1M count=20 2>&1 | grep -v records
    touch ready
    n=0; while [ ! -e go ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
    dd if=/dev/zero of=b bs=1M count=20 2>/dev/null
    echo "raised-dd=$? b=$(($(wc -c <b) >> 20))MiB"
    df -k . | tail -n 1' >/tmp/live.out 2>&1 &
pid=$!
n=0
while [ ! -e "$home/ready" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
[ -e "$home/ready" ] || fail "the sandbox never got ready"
users limits alice '{"disk_bytes": 67108864}' | tr -d ' \n' | grep -o '"disk_bytes":[^,}]*' || fail "limits refused"
touch "$home/go"
wait "$pid" || fail "the live sandbox failed"
cat /tmp/live.out
[ "$(grep -c 'Disk quota exceeded' /tmp/live.out)" = 1 ] || fail "want EDQUOT before the raise only"
grep -q '^raised-dd=0 b=20MiB$' /tmp/live.out || fail "writing after the raise failed"
total=$(users stats alice | tr -d ' \n' | sed -n 's/.*"disk":{[^}]*"bytes_total":\([0-9]*\).*/\1/p')
[ "${total:-}" = 67108864 ] || fail "bytes_total after the raise ${total:-?}, want 67108864"

for d in /sys/fs/cgroup/runner/run-*; do
    rmdir "$d/warren/supervisor" "$d/warren" "$d" 2>/dev/null || true
done
umount /ws
[ "$rc" = 0 ] && echo "quota tests: ok"
exit "$rc"
