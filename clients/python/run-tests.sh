#!/usr/bin/env bash
# The Python client's tests (clients/python/tests) against a real
# `warren serve` that the tests start (tests/conftest.py): makes a venv
# under target/ (once), installs the client with its test extra
# (`pip install -e .[test]`: pytest), and runs pytest.
#
#   clients/python/run-tests.sh [pytest arguments]
#   WARREN_BIN=/path/to/warren clients/python/run-tests.sh -k compat
#
# Needs python3 with venv (Debian: python3-venv) and a built
# target/debug/warren (cargo build). Under CI=true (or WARREN_MUST_RUN=1)
# a test that cannot run fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)
venv=${WARREN_PY_VENV:-$repo/target/python-client-venv}
export WARREN_BIN=${WARREN_BIN:-$repo/target/debug/warren}
[[ -x $WARREN_BIN ]] || { echo "run-tests.sh: no warren binary at $WARREN_BIN (cargo build)" >&2; exit 1; }

if [[ ! -x $venv/bin/python ]]; then
  echo "run-tests.sh: making a venv in $venv" >&2
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -e '.[test]'
exec "$venv/bin/python" -m pytest -ra "$@"
