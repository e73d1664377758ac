#!/usr/bin/env bash
# The kernel project-quota backend (docs/disk.md) in a throw-away VM: the CI
# host's kernel has no quota support, Debian's has (ext4, loop, quota_v2 as
# modules). An ext4 image made here with `mkfs.ext4 -O quota,project` goes
# into the initramfs; the guest mounts it `-o prjquota` as the workspace
# root and starts real sandboxes with `warren run` (guest-quota-tests.sh).
# Build first (tests/matrix.sh does): cargo build --workspace --all-targets
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
dir=${CARGO_TARGET_DIR:-$repo/target}/debug
for b in warren warren-shim; do
    [ -x "$dir/$b" ] || { echo "quota-v2: no $dir/$b; build first" >&2; exit 125; }
done
command -v mkfs.ext4 >/dev/null || { echo "quota-v2: mkfs.ext4 missing (e2fsprogs)" >&2; exit 125; }
work=$(mktemp -d -p /tmp warren-quota-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
img=$work/workspaces.ext4
truncate -s 64M "$img"
mkfs.ext4 -q -F -O quota,project -E root_owner=0:0 "$img"
# Not exec: the trap removes the image after the VM.
rc=0
"$here/run-in-vm.sh" -m 1536 -t 400 -k loop -k ext4 -k quota_v2 \
    -e CI=true -e RUST_BACKTRACE=1 -e WARREN_BIN="$dir/warren" -e WARREN_IMG="$img" \
    -e WARREN_TEST_WRAPPER="$here/own-cgroup.sh" \
    "$here/guest-quota-tests.sh" "$dir/warren" "$dir/warren-shim" "$here/own-cgroup.sh" "$img" || rc=$?
exit "$rc"
