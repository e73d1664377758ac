#!/usr/bin/env bash
# Runs the browser end-to-end test of warren's web terminal (see README.md).
#
#   tests/e2e/run.sh                    # uses target/debug/warren
#   WARREN_BIN=/path/to/warren tests/e2e/run.sh
#
# 1. installs Debian's chromium if it is missing (only as root; never
#    Playwright's own browsers),
# 2. `npm ci` here (playwright-core, pinned by package-lock.json),
# 3. runs e2e.mjs, which prints `N passed, M failed` last and exits non-zero
#    on any failure.
set -euo pipefail
cd "$(dirname "$0")"

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "run.sh: $CHROMIUM is missing; installing Debian's chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 900 apt-get install -y chromium; then
      timeout 300 apt-get update
      timeout 900 apt-get install -y chromium
    fi
  else
    echo "run.sh: $CHROMIUM is missing. Install it (as root: apt-get install -y chromium)" >&2
    echo "        or point CHROMIUM at a Chromium binary." >&2
    exit 2
  fi
fi

# Never let anything fetch Playwright's browsers.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
timeout 300 npm ci --ignore-scripts --no-audit --no-fund

# As root, everything (server, sandboxes, chromium) runs inside a fake
# internet (tests/fakenet/fakenet.sh), so check 6 can curl the fake upstream
# from alice's terminal without a packet leaving the machine.
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v dnsmasq >/dev/null; then
  world="we2e$$"
  ../fakenet/fakenet.sh up "$world"
  trap '../fakenet/fakenet.sh down "$world"' EXIT
  # e2e.mjs bounds itself (a 120 s watchdog, then it stops the server); the
  # outer timeout is only a last resort. SIGTERM lets it clean up.
  WARREN_E2E_FAKENET=1 timeout -k 10 180 ip netns exec "$world-w" node e2e.mjs
  exit
fi
exec timeout -k 10 180 node e2e.mjs
