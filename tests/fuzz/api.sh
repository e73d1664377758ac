#!/usr/bin/env bash
# Fuzzes the management API of a real `warren serve` (real sandboxes, as
# root) with schemathesis against docs/openapi.json: the examples, coverage,
# fuzzing and stateful phases, bounded in time. A run passes when there is
# no 500, every response conforms to the document (status and schema),
# every request the document calls valid is accepted, every invalid one is
# refused, and a refused request changes nothing (tests/fuzz/api_hooks.py).
#
#   sudo tests/fuzz/api.sh                      # uses target/debug/warren
#   WARREN_BIN=... FUZZ_API_SECONDS=300 sudo tests/fuzz/api.sh
#
# Installs schemathesis (pinned) into a venv under target/ when missing; the
# server gets its own port, state and workspace, and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

SCHEMATHESIS_VERSION=4.32.5
WARREN_BIN=${WARREN_BIN:-$repo/target/debug/warren}
seconds=${FUZZ_API_SECONDS:-90}
venv=${SCHEMATHESIS_VENV:-$repo/target/schemathesis}

must_run() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" || "${WARREN_MUST_RUN:-}" == "1" ]]; }
if [[ $(id -u) -ne 0 ]]; then
  # Tenants need host uids of their own: the real backend as root.
  if must_run; then echo "api.sh: FAIL: needs root (CI requires it)" >&2; exit 1; fi
  echo "api.sh: SKIP: needs root" >&2
  exit 0
fi
[[ -x $WARREN_BIN ]] || { echo "api.sh: no warren binary at $WARREN_BIN (cargo build)" >&2; exit 1; }

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "api.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

tmp=$(mktemp -d /tmp/warren-fuzz-api.XXXXXX)
# Tenants' host uids must reach their homes below it.
chmod 0711 "$tmp"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

export WARREN_STATE_DIR=$tmp/state WARREN_WORKSPACE_ROOT=$tmp/ws WARREN_SERVER_LOG=$tmp/server.log
# Short idle timeouts: the stateful phase makes many tenants, each with a
# sandbox; --max-sandboxes is above what one run can make.
# Services do not hold their sandboxes: the idle timeout keeps applying.
"$WARREN_BIN" serve --listen "127.0.0.1:$port" --idle-timeout 15s --terminal-grace 5s \
  --max-sandboxes 256 --shutdown-timeout 5s --services-keep-alive false >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  [[ -s $WARREN_STATE_DIR/admin-token ]] && grep -q "listening on" "$tmp/server.log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; echo "api.sh: the server exited" >&2; exit 1; }
  sleep 0.2
done
token=$(cat "$WARREN_STATE_DIR/admin-token")

echo "api.sh: schemathesis against http://127.0.0.1:$port (${seconds}s)" >&2
status=0
(cd "$tmp" && SCHEMATHESIS_HOOKS=api_hooks PYTHONPATH="$repo/tests/fuzz" \
  "$venv/bin/schemathesis" --config-file "$repo/tests/fuzz/schemathesis.toml" run "$repo/docs/openapi.json" \
    --url "http://127.0.0.1:$port" \
    -H "Authorization: Bearer $token" \
    --phases examples,coverage,fuzzing,stateful \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,positive_data_acceptance,negative_data_rejection,nothing_written_when_refused \
    --max-examples 25 --max-time "$seconds" --workers 1 \
    --suppress-health-check all --request-timeout 30 \
    --seed "${FUZZ_API_SEED:-$RANDOM}" \
    --report junit --report-junit-path "$tmp/junit.xml") || status=$?
# schemathesis exits 1 on errors too; the verdict tolerates the one error
# docs/api.md documents (a failed export's transfer is cut).
if [[ $status -ne 0 && -s $tmp/junit.xml ]]; then
  status=0
  python3 "$repo/tests/fuzz/junit_verdict.py" "$tmp/junit.xml" || status=$?
fi

# A panic in a handler task would not always surface as a 500.
if grep -n "panicked" "$tmp/server.log" >&2; then
  echo "api.sh: the server panicked (above)" >&2
  status=1
fi
if [[ $status -ne 0 ]]; then
  cp "$tmp/server.log" /tmp/warren-fuzz-api-server.log
  echo "api.sh: FAIL (schemathesis exit $status); the server's log: /tmp/warren-fuzz-api-server.log" >&2
  exit 1
fi
echo "api.sh: passed" >&2
