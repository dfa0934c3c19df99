#!/usr/bin/env bash
# Runs the official anthropic and openai Python SDKs against a throw-away gateway (see
# test_sdk.py, test_openai_sdk.py and conftest.py).
# Needs Postgres on 127.0.0.1:5432 (trust auth) or DATABASE_URL.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloudrouter-target}"
venv="${CLOUDROUTER_PY_VENV:-/var/tmp/cloudrouter-pyvenv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "anthropic>=0.40" "openai>=1.60" "pytest>=8"
(cd "$root" && cargo build --quiet -p cloudrouter-bench --bin gateway-testbed)
export CLOUDROUTER_TESTBED="${CLOUDROUTER_TESTBED:-$CARGO_TARGET_DIR/debug/gateway-testbed}"
exec "$venv/bin/python" -m pytest -q "$here" "$@"
