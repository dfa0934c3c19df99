#!/usr/bin/env bash
# The request head's cost on Claude Code-sized bodies (30, 120, 300 KB): the gateway's one-pass
# head parse (model, stream, max_tokens and the cache-aware routing key, a top-level scan) against
# the former serde-based head parse (its test oracle, same process), serde_json's validating skip
# of the same body (the floor of any serde_json parse) and a full serde_json::Value parse. Release
# build; run on a quiet machine, several times. Results: bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloudrouter-target}"
cargo test --release -p cloudrouter-core --lib bench_request_head -- --ignored --nocapture --test-threads 1 2>/dev/null | grep '^|'
