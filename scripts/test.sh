#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests against real Postgres, the official
# `anthropic` Python SDK against the gateway, and browser tests in headless Chromium.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_rust_tools
install_node_tools
apt_install chromium chromium
ensure_postgres postgres    # an admin connection: each test creates its own fresh database
cd "$ROOT"

say "Rust tests (unit + integration, real Postgres)"
cargo test -p cloudrouter-core -p server
cargo test -p app --features ssr --lib

say "the official anthropic Python SDK against the gateway"
bash tests/python/run.sh

say "building the console (cargo leptos build)"
cargo leptos build

say "browser tests (headless Chromium)"
export SERVER_BIN="$CARGO_TARGET_DIR/debug/server"
npm run test:e2e
