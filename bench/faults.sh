#!/usr/bin/env bash
# The fault run: each fault the gateway must survive, against real processes (the built `server`,
# a private Postgres stopped and started under load, three instances on one database, an
# upstream that is slow or failing), and a table of what each cost: requests sent, answered,
# refusals by kind, usage records lost, time to recover. The same tests run in the test command
# (server/tests/faults.rs and operations.rs), where they assert the figures; here they print them.
#
# Usage: bench/faults.sh     Needs: Postgres on 127.0.0.1:5432 (trust) or DATABASE_URL, and
# PostgreSQL's server binaries (initdb, pg_ctl) for the private cluster.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloudrouter-target}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
out="$(mktemp)"
cd "$root"
cargo test -q -p server --test faults --test operations -- --nocapture --test-threads=1 \
  postgres_restarting burst_of_hundreds sigterm_lets_open_streams sigkill_loses_no_usage_record a_529_storm > "$out" 2>&1 || true
printf '\nload average at the end: %s\n\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| fault | requests | answered | refused | records lost | recovered in |\n| --- | ---: | ---: | --- | ---: | ---: |\n'
grep -a '^FAULT' "$out" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7}'
if grep -q 'test result: FAILED' "$out"; then
  echo "a fault test failed; its output: $out" >&2
  exit 1
fi
rm -f "$out"
