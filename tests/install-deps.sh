#!/usr/bin/env bash
# What the test suite needs on a Debian/Ubuntu host, installed when missing.
# tests/matrix.sh (the README's test command) runs it first, so a fresh
# machine needs only a Rust toolchain and this repository; .ci/run gets the
# same set-up through tests/matrix.sh.
#
#   tests/install-deps.sh           # install what is missing (as root)
#   tests/install-deps.sh --check   # list what is missing, install nothing
#
# Idempotent and quick when everything is there (one dpkg-query, no apt).
# The test tools the suite pins itself (cargo-fuzz, schemathesis,
# playwright-core) are installed by their own scripts on first use.
set -euo pipefail

# Debian packages, and why:
packages=(
  bubblewrap               # the reference rows (tests/tests/bwrap_reference.rs)
  uidmap                   # newuidmap/newgidmap: the subuid and userns modes
  util-linux               # unshare, setpriv: the privilege matrix
  iproute2 procps          # ip, ps, pkill inside and around sandboxes
  cpio busybox-static      # the cgroup-v2 VM's initramfs (tests/vm)
  qemu-system-x86 linux-image-amd64   # the cgroup-v2 VM and its kernel
  systemd                  # systemd-analyze verify of deploy/ (server/tests/deploy.rs)
  chromium                 # the browser end-to-end test (tests/e2e)
  python3 python3-venv     # schemathesis for the API fuzzer (tests/fuzz), the Python client's tests; the apps in server/tests/previews.rs
  passt nftables dnsmasq-base   # a sandbox's network: pasta, its egress filter; the tests' fake internet (tests/fakenet)
  e2fsprogs mount          # per-home disk images: mkfs.ext4, tune2fs, resize2fs, losetup (docs/disk.md)
  haproxy socat jq curl    # deploy/haproxy and its test (server/tests/scale_out.rs, deploy/check.sh)
)
# Commands that may come from elsewhere than Debian (nvm, rustup): only
# their packages are installed when the command is missing.
declare -A commands=(
  [node]=nodejs            # build.rs fetches xterm.js; tests/e2e
  [npm]=npm
  [kubectl]=kubernetes-client   # deploy/k8s/check.sh: `kubectl kustomize` (any kubectl)
)

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: tests/install-deps.sh [--check]" >&2; exit 2 ;;
esac

if ! $check && ! command -v cargo >/dev/null; then
  echo "install-deps: cargo is missing: install a Rust toolchain first (https://rustup.rs)" >&2
  exit 1
fi
if ! command -v dpkg-query >/dev/null; then
  echo "install-deps: not a Debian/Ubuntu host (no dpkg-query); install by hand: ${packages[*]} ${commands[*]}" >&2
  exit 1
fi

missing=()
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)
for p in "${packages[@]}"; do
  grep -qx "$p installed" <<<"$installed" || missing+=("$p")
done
for c in "${!commands[@]}"; do
  command -v "$c" >/dev/null || missing+=("${commands[$c]}")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: everything is installed" >&2
  exit 0
fi
if $check; then
  echo "install-deps: missing: ${missing[*]}" >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing: ${missing[*]}; run as root (sudo tests/install-deps.sh) to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
