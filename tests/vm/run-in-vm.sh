#!/usr/bin/env bash
# Runs a shell script inside a throw-away qemu VM with a Debian kernel and a
# pure cgroup-v2 hierarchy, and exits with the script's exit code.
#
# Why: the CI host has memory, cpu and pids on cgroup v1, so the v2 driver
# can only be tested in a kernel of our own. The VM boots from an initramfs
# (no disk image): busybox, the given host files and their shared libraries.
#
# Usage: tests/vm/run-in-vm.sh [options] SCRIPT [FILE...]
#   SCRIPT    shell script run as root inside the guest (by busybox sh), with
#             /proc, /sys, /dev, /tmp mounted and cgroup2 at /sys/fs/cgroup
#             (memory, cpu and pids enabled in the root's subtree_control)
#   FILE...   host files (binaries) copied to the same path in the guest,
#             together with every shared library ldd lists for them
# Options:
#   -e NAME=VALUE  environment variable for SCRIPT (repeatable)
#   -k MODULE      kernel module to load at boot, with its dependencies
#   -m MIB         guest memory (default 1536; a 512 MiB limit needs room)
#   -t SECONDS     timeout for the whole VM run (default 300)
# Environment: WARREN_VM_KERNEL (default: newest /boot/vmlinuz-*),
#   WARREN_VM_ACCEL (default tcg: KVM hangs on the CI host), WARREN_VM_KEEP=1
#   keeps the work directory.
#
# Output: the guest console; the marker lines `WARREN-VM-BOOTED` and
# `WARREN-VM-EXIT=<code>`; last, a `run-in-vm:` summary with the boot time.
# Exit code: the script's, or 125 when the VM failed (no marker: panic,
# timeout, missing tools).
set -euo pipefail

die() {
    echo "run-in-vm: $*" >&2
    exit 125
}

MEM=1536
TIMEOUT=300
ENVS=()
MODULES=()
while getopts "e:k:m:t:h" opt; do
    case $opt in
    e) ENVS+=("$OPTARG") ;;
    k) MODULES+=("$OPTARG") ;;
    m) MEM=$OPTARG ;;
    t) TIMEOUT=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || die "usage: $0 [-e NAME=VALUE] [-k MODULE] [-m MIB] [-t SECONDS] SCRIPT [FILE...]"
SCRIPT=$1
shift
[ -f "$SCRIPT" ] || die "no such script: $SCRIPT"

# --- Tools: installed here when missing (CI starts from a fresh machine). ---
need_install=()
command -v qemu-system-x86_64 >/dev/null || need_install+=(qemu-system-x86)
command -v busybox >/dev/null || need_install+=(busybox-static)
command -v cpio >/dev/null || need_install+=(cpio)
if [ ${#MODULES[@]} -gt 0 ]; then
    command -v modprobe >/dev/null || need_install+=(kmod)
    command -v xz >/dev/null || need_install+=(xz-utils)
fi
if [ -z "${WARREN_VM_KERNEL:-}" ] && ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
    need_install+=(linux-image-amd64)
fi
if [ ${#need_install[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${need_install[*]}; install them as root: apt-get install -y ${need_install[*]}"
    echo "run-in-vm: installing ${need_install[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need_install[@]}" </dev/null >&2 ||
        { apt-get update </dev/null >&2 && apt-get install -y --no-install-recommends "${need_install[@]}" </dev/null >&2; } ||
        die "apt-get install ${need_install[*]} failed"
fi

# The newest installed Debian kernel. The host's running kernel is usually
# not in /boot (CI runs a different build), and it need not be.
KERNEL=${WARREN_VM_KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -n 1)}
[ -r "$KERNEL" ] || die "cannot read $KERNEL (Debian installs it 0600 root: run as root)"
KVER=${KERNEL#*/vmlinuz-}
if [ -r "/boot/config-$KVER" ]; then
    for opt in BLK_DEV_INITRD RD_GZIP DEVTMPFS SERIAL_8250_CONSOLE CGROUPS MEMCG CGROUP_PIDS CFS_BANDWIDTH; do
        grep -q "^CONFIG_$opt=y" "/boot/config-$KVER" || die "$KERNEL lacks CONFIG_$opt=y"
    done
fi

WORK=$(mktemp -d -p /tmp)
cleanup() { [ "${WARREN_VM_KEEP:-0}" = 1 ] && echo "run-in-vm: kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,run,root,etc,warren,lib/modules}

# --- The guest's files. ---
# Copies a host file to the same path in the guest, resolving symlinks (the
# guest has no /lib64 -> usr/lib64 and the like).
put() {
    local src=$1 dst=$ROOT$1
    [ -e "$dst" ] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L --preserve=mode "$src" "$dst"
}
# A host file and the shared libraries (and loader) ldd finds for it.
put_with_libs() {
    local f=$1 lib
    [ -f "$f" ] || die "no such file: $f"
    put "$f"
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
    # "/lib64/ld-linux-x86-64.so.2 (0x...)"; static binaries list nothing.
    for lib in $(ldd "$f" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p'); do
        put "$lib"
    done
}

BUSYBOX=$(command -v busybox)
put_with_libs "$BUSYBOX"
cp -L "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done
for f in "$@"; do
    put_with_libs "$(realpath -s "$f")"
done
cp "$SCRIPT" "$ROOT/warren/script.sh"
: >"$ROOT/warren/env"
for e in "${ENVS[@]}"; do
    [[ $e == [A-Za-z_]*=* ]] || die "bad -e $e (want NAME=VALUE)"
    printf 'export %s=%q\n' "${e%%=*}" "${e#*=}" >>"$ROOT/warren/env"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"

# Kernel modules, decompressed (busybox insmod reads plain .ko), in the order
# modprobe would load them. Debian builds cgroup2 and the controllers in.
: >"$ROOT/warren/modules"
for m in "${MODULES[@]}"; do
    for ko in $(modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'); do
        base=$(basename "$ko")
        case $ko in
        *.xz) xz -dc "$ko" >"$ROOT/lib/modules/${base%.xz}"; base=${base%.xz} ;;
        *.zst) zstd -dcq "$ko" >"$ROOT/lib/modules/${base%.zst}"; base=${base%.zst} ;;
        *) cp "$ko" "$ROOT/lib/modules/$base" ;;
        esac
        grep -qx "$base" "$ROOT/warren/modules" || echo "$base" >>"$ROOT/warren/modules"
    done
done

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# PID 1 of the test VM: mount the basics and cgroup2, run the script,
# report its exit code on the console, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
# pivot_root(2) refuses to move away from the initramfs rootfs, and
# warren's sandboxes pivot_root: move everything onto a real tmpfs first.
if [ "$1" != on-tmpfs ]; then
    mkdir /newroot
    mount -t tmpfs -o mode=755 tmpfs /newroot
    for e in /*; do
        case $e in /newroot | /proc | /sys | /dev) ;; *) cp -a "$e" /newroot/ ;; esac
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev
    exec switch_root /newroot /init on-tmpfs
fi
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel could not open /dev/console before devtmpfs existed.
exec 0</dev/console 1>/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# The initramfs root is a tmpfs already; a fresh one on /tmp would hide
# host files that live under /tmp (e.g. a CARGO_TARGET_DIR there).
[ -n "$(ls -A /tmp)" ] || mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for m in $(cat /warren/modules); do insmod "/lib/modules/$m" || echo "insmod $m failed"; done
# The root cgroup is exempt from the no-internal-processes rule, so init
# may stay in it while its children get the controllers.
echo "+memory +cpu +pids" >/sys/fs/cgroup/cgroup.subtree_control ||
    echo "WARREN-VM: enabling controllers failed"
echo "WARREN-VM-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)s kernel=$(uname -r)"
. /warren/env
cd /tmp
sh /warren/script.sh </dev/null
echo "WARREN-VM-EXIT=$?"
sync
poweroff -f
EOF
chmod 755 "$ROOT/init" "$ROOT/warren/script.sh"
# Create /dev/console too when we can (mknod needs root); /init copes without.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true

(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$WORK/initrd.gz"

# --- Boot. ---
LOG=$WORK/console.log
start=$EPOCHREALTIME
booted=""
set +e
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
    -machine "accel=${WARREN_VM_ACCEL:-tcg}" -cpu max -smp 2 -m "$MEM" \
    -nographic -no-reboot -nic none \
    -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" \
    </dev/null 2>&1 |
    while IFS= read -r line; do
        line=${line%$'\r'}
        printf '%s\n' "$line"
        printf '%s\n' "$line" >>"$LOG"
        case $line in
        *WARREN-VM-BOOTED*) echo "$EPOCHREALTIME" >"$WORK/booted" ;;
        esac
    done
qemu_rc=${PIPESTATUS[0]}
set -e
end=$EPOCHREALTIME
[ -f "$WORK/booted" ] && booted=$(cat "$WORK/booted")

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
code=$(sed -n 's/.*WARREN-VM-EXIT=\([0-9]\{1,3\}\)$/\1/p' "$LOG" 2>/dev/null | tail -n 1)
summary="kernel $KVER, ${MEM} MiB, accel ${WARREN_VM_ACCEL:-tcg}"
[ -n "$booted" ] && summary="$summary, booted in $(secs "$start" "$booted") s"
summary="$summary, total $(secs "$start" "$end") s"
if [ -z "$code" ]; then
    [ "$qemu_rc" = 124 ] && why="timed out after ${TIMEOUT}s" || why="qemu exited with $qemu_rc"
    echo "run-in-vm: no WARREN-VM-EXIT marker ($why; kernel panic or init failure?); $summary" >&2
    exit 125
fi
echo "run-in-vm: script exited with $code; $summary" >&2
exit "$code"
