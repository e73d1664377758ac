#!/usr/bin/env bash
# The whole test suite in the privilege matrix:
#   1. as root (unit tests of every crate + integration tests),
#   2. as an unprivileged user,
#   3. inside `unshare --user --map-root-user` (as that unprivileged user:
#      one id, the user's own; mode `userns-user`),
#   4. as that user with /etc/subuid and /etc/subgid ranges (added for the
#      run, then restored),
#   5. as root inside `unshare --user --map-auto --map-root-user`, root
#      given /etc/subuid and /etc/subgid ranges for the run (mode `userns`:
#      each tenant its own non-root id; root under plain --map-root-user
#      is refused, tests/tests/hardening.rs);
# the Python client's tests run in the root mode, after the cargo tests;
# then the cgroup-v2 VM, bounded fuzzing (tests/fuzz) and the browser
# end-to-end test.
# Run it as root on a Linux host: sudo tests/matrix.sh. It first installs
# what the suite needs (tests/install-deps.sh), so a fresh Debian machine
# needs only a Rust toolchain.
# With CI=true (or WARREN_MUST_RUN=1) a mode that cannot run fails the run
# instead of being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

must_run() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" || "${WARREN_MUST_RUN:-}" == "1" ]]; }
skip() {
  if must_run; then echo "matrix: FAIL: $1 (CI requires every mode)" >&2; exit 1; fi
  echo "matrix: SKIP: $1" >&2
}

echo "== set-up (tests/install-deps.sh: the Debian packages the suite needs, when missing)"
if [[ $(id -u) -eq 0 ]]; then
  tests/install-deps.sh
else
  tests/install-deps.sh --check || skip "not root: cannot install what is missing"
fi

echo "== build"
cargo build --workspace --all-targets
# The integration tests exec target/debug/{warren,warren-shim}; list their
# test executables once so the other modes can run the same files.
mapfile -t test_bins < <( (cargo test -p warren-tests --no-run --message-format=json;
  cargo test -p warren --test real_sandboxes --test backpressure --test sandbox_lifecycle --test doctor --test api --test cli_users --test api_fuzz_findings --test import_atomic --test files --test logs --test login_shell --test sandbox_record --test node --test disk_limits --test terminal_burst --test services --test previews --no-run --message-format=json) 2>/dev/null \
  | grep -E '"profile":\{[^}]*"test":true' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[[ ${#test_bins[@]} -gt 0 ]] || { echo "matrix: no integration test binaries found" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
  skip "not root: the root, user and userns modes need root to set up"
  echo "== mode: $(id -un) (single mode, as invoked)"
  cargo test --workspace
  exit 0
fi

echo "== mode: root"
# Includes server/tests/scale_out.rs (network namespaces: root mode only).
WARREN_TEST_MODE=root cargo test --workspace
echo "== Python client (clients/python: pytest against a real warren serve)"
clients/python/run-tests.sh
echo "== deploy: the HAProxy configuration and the Kubernetes manifests, offline"
deploy/check.sh

user=${WARREN_TEST_USER:-warren-test}
if ! id "$user" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$user" \
    || { skip "cannot create the unprivileged user $user"; exit 0; }
fi
# The unprivileged user must reach the binaries, and needs a home of its own.
chmod a+rX target target/debug target/debug/deps target/debug/build "$(dirname "$(dirname "$(find target/debug/build -name warren-probe -type f | head -1)")")" 2>/dev/null || true
find target/debug/build -name warren-probe -type f -exec chmod a+rx {} + -exec sh -c 'chmod a+x "$(dirname "$1")"' _ {} \;
dir=$PWD
while [[ "$dir" != "/" ]]; do chmod a+x "$dir"; dir=$(dirname "$dir"); done
home=$(mktemp -d -p /tmp)
chown "$user": "$home"
# A setuid-root copy of the probe, which only root can make: the
# unprivileged modes check that running it inside a sandbox gains nothing.
suid_dir=$(mktemp -d -p /tmp)
chmod 755 "$suid_dir"
install -m 4755 -o root "$(find target/debug/build -name warren-probe -type f | head -1)" "$suid_dir/suid-probe"
trap 'rm -rf "$home" "$suid_dir"' EXIT

# The network test runs inside a fake internet built as root
# (tests/fakenet/fakenet.sh): `$net` puts the mode's command in it.
net=()
as_user() {
  # --init-groups: the user's groups from /etc/group, as a login has them,
  # so the tests see that no supplementary group reaches a tenant.
  "${net[@]}" setpriv --reuid="$user" --regid="$user" --init-groups --reset-env \
    env HOME="$home" TMPDIR="$home" CI="${CI:-}" WARREN_MUST_RUN="${WARREN_MUST_RUN:-}" PATH=/usr/bin:/bin \
    WARREN_SUID_PROBE="$suid_dir/suid-probe" WARREN_FAKENET="${WARREN_FAKENET:-}" "$@"
}

# The subuid mode gives the user /etc/subuid and /etc/subgid ranges for the
# run (restored afterwards); the other modes run without them.
restore_subids() {
  for f in subuid subgid; do
    if [[ -e "$suid_dir/$f.orig" ]]; then cp "$suid_dir/$f.orig" "/etc/$f"; else rm -f "/etc/$f"; fi
  done
}
for f in subuid subgid; do [[ -e /etc/$f ]] && cp "/etc/$f" "$suid_dir/$f.orig"; done
trap 'restore_subids; tests/fakenet/fakenet.sh down wmatrix; rm -rf "$home" "$suid_dir"' EXIT
for mode in user userns-user subuid userns; do
  echo "== mode: $mode"
  if [[ $mode == subuid || $mode == userns ]]; then
    command -v newuidmap >/dev/null || { skip "newuidmap is not installed (apt-get install uidmap)"; continue; }
  fi
  [[ $mode == subuid ]] && for f in subuid subgid; do echo "$user:3000000000:65536" >>"/etc/$f"; done
  # First in the file: util-linux 2.38's --map-auto takes the first entry.
  [[ $mode == userns ]] && for f in subuid subgid; do
    { echo "root:3100000000:65536"; cat "$suid_dir/$f.orig" 2>/dev/null || true; } >"/etc/$f"
  done
  for bin in "${test_bins[@]}"; do
    echo "-- $(basename "$bin")"
    net=() && unset WARREN_FAKENET
    if [[ $(basename "$bin") == network-* ]]; then
      tests/fakenet/fakenet.sh up wmatrix
      net=(ip netns exec wmatrix-w) && export WARREN_FAKENET=wmatrix
    fi
    case $mode in
      userns-user) as_user unshare --user --map-root-user env WARREN_TEST_MODE=userns-user "$bin" ;;
      userns) "${net[@]}" unshare --user --map-auto --map-root-user env WARREN_TEST_MODE=userns WARREN_SUID_PROBE="$suid_dir/suid-probe" "$bin" ;;
      *) as_user env WARREN_TEST_MODE="$mode" "$bin" ;;
    esac
    [[ ${#net[@]} -eq 0 ]] || tests/fakenet/fakenet.sh down wmatrix
  done
  if [[ $mode == subuid || $mode == userns ]]; then restore_subids; fi
done
echo "== cgroup v2 (throw-away VM: this host's controllers are on v1)"
# Both install qemu-system-x86, linux-image-amd64 and busybox-static when
# missing, and exit non-zero when the VM cannot boot.
tests/vm/cgroup-v2-tests.sh
tests/vm/limits-v2.sh
# The kernel project-quota disk backend: this host's kernel has no quotas.
tests/vm/quota-v2.sh
echo "== fuzzing, bounded: the WebSocket protocol (cargo fuzz) and the management API (schemathesis)"
tests/fuzz/protocol.sh
WARREN_BIN="$PWD/target/debug/warren" tests/fuzz/api.sh
echo "== browser end to end (Debian chromium driven by playwright-core)"
WARREN_BIN="$PWD/target/debug/warren" tests/e2e/run.sh
echo "== matrix: all modes passed"
