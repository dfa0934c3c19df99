#!/usr/bin/env bash
# Runs CloudRouter (console + gateway) at http://127.0.0.1:3000, installing what is missing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_rust_tools
install_node_tools
ensure_postgres cloudrouter
cd "$ROOT"
say "building (release; the first build takes several minutes)"
cargo leptos build --release
cat <<MSG

  CloudRouter console:  http://127.0.0.1:3000
  Gateway base URL:     http://127.0.0.1:3000  (ANTHROPIC_BASE_URL)
  Database:             $DATABASE_URL

  Make yourself staff (in another terminal, from this folder):
    DATABASE_URL=$DATABASE_URL $CARGO_TARGET_DIR/release/server admin create --email you@example.com --password 'choose-a-strong-one'
  then sign in at http://127.0.0.1:3000/login

MSG
exec "$CARGO_TARGET_DIR/release/server"
