#!/usr/bin/env bash
# Fuzzes the WebSocket protocol (docs/protocol.md) for a bounded time:
# fuzz/fuzz_targets/client_frames.rs sends arbitrary client frames to a real
# server in its own process (see that file for what must hold). A crash, a
# panic or a broken invariant fails the run and leaves the input in
# fuzz/artifacts/client_frames/.
#
#   tests/fuzz/protocol.sh                      # 30 s
#   FUZZ_PROTOCOL_SECONDS=600 tests/fuzz/protocol.sh
#
# cargo fuzz wants a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one
# take its -Z flags. No sanitizer: the server crate has no unsafe code
# (#![forbid(unsafe_code)]), so what this looks for is panics, hangs and
# broken invariants, and an unoptimised build (--dev) compiles in half the
# time while the target, bound by loopback round trips, runs as fast.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_PROTOCOL_SECONDS:-30}
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "protocol.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
cd fuzz
# The harness's terminals run /bin/sh, stty and cat.
RUSTC_BOOTSTRAP=1 cargo fuzz run --dev --sanitizer none client_frames -- \
  -max_total_time="$seconds" -max_len=8192 -len_control=0 -dict=client_frames.dict -print_final_stats=1
