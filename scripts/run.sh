#!/usr/bin/env bash
# Runs CloudRouter (console + gateway) at http://127.0.0.1:3000, installing what is missing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_rust_tools
install_node_tools
ensure_postgres cloudrouter
cd "$ROOT"
say "building (release; the first build takes several minutes)"
cargo leptos build --release

# The server secret encrypts upstream credentials: made once, kept in the state folder (0600).
if [ -z "${CLOUDROUTER_SECRET:-}" ]; then
  if [ ! -s "$STATE/secret" ]; then
    say "making the server secret ($STATE/secret; keep it: without it upstream credentials are lost)"
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/secret")
  fi
  chmod 600 "$STATE/secret"
  CLOUDROUTER_SECRET="$(cat "$STATE/secret")"
  export CLOUDROUTER_SECRET
fi

# Demo mode (no real upstream yet): sandbox payments, marked as test money in the console. A
# real upstream added later takes effect at once; the sandbox goes away at the next run.
PSQL="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n1 || true)"
if [ -z "${CLOUDROUTER_SANDBOX_PAYMENTS+set}" ] \
  && ! { [ -n "$PSQL" ] && "$PSQL" "$DATABASE_URL" -tAc "SELECT 1 FROM upstreams WHERE NOT is_demo LIMIT 1" 2>/dev/null | grep -q 1; }; then
  export CLOUDROUTER_SANDBOX_PAYMENTS=1
fi
SANDBOX="off"
if [ "${CLOUDROUTER_SANDBOX_PAYMENTS:-}" = "1" ]; then SANDBOX="on (demo: test money, no real payment)"; fi
cat <<MSG

  CloudRouter console:  http://127.0.0.1:3000
  Gateway base URL:     http://127.0.0.1:3000  (ANTHROPIC_BASE_URL)
  Database:             $DATABASE_URL
  Sandbox payments:     $SANDBOX
  Mail:                 ${CLOUDROUTER_SMTP_URL:+sent through CLOUDROUTER_SMTP_URL}${CLOUDROUTER_SMTP_URL:-written to .cloudrouter/mail/ (sign-up and reset links are in there)}

  Make yourself staff (in another terminal, from this folder):
    DATABASE_URL=$DATABASE_URL $CARGO_TARGET_DIR/release/server admin create --email you@example.com --password 'choose-a-strong-one'
  then sign in at http://127.0.0.1:3000/login (the admin pages first ask you to set up
  two-factor sign-in with an authenticator app, under Settings)

MSG
exec "$CARGO_TARGET_DIR/release/server"
