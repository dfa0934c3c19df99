# Shared by run.sh and test.sh: puts the project's tools on PATH and installs what is missing.
# Every step checks first, so a second run with nothing changed costs seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.cloudrouter"          # local, git-ignored: venv, private Postgres cluster, logs
mkdir -p "$STATE"
# Builds are kept outside the clone so a fresh clone on the same machine reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloudrouter-target}"
export PATH="$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"
# CI builds each clone once: incremental caches would only fill the disk.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

install_rust_tools() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32 target"
    rustup target add wasm32-unknown-unknown
  fi
  if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "0.3.10" ]; then
    say "installing cargo-leptos 0.3.10 (about 13 minutes, once)"
    cargo install cargo-leptos --version 0.3.10 --locked --features no_downloads
  fi
  # The CLI must match the wasm-bindgen crate in Cargo.lock exactly.
  local want
  want="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/,""); print; exit}' "$ROOT/Cargo.lock")"
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
    say "installing wasm-bindgen-cli $want"
    cargo install wasm-bindgen-cli --version "$want"
  fi
}

install_node_tools() {
  # Tailwind's compiler, binaryen's wasm-opt and playwright-core, pinned by package-lock.json.
  local stamp="$ROOT/node_modules/.installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/package-lock.json" -nt "$stamp" ]; then
    say "installing Node tools (tailwindcss, binaryen, playwright-core)"
    (cd "$ROOT" && npm ci --no-audit --no-fund)
    touch "$stamp"
  fi
}

apt_install() {
  # apt_install PROBE PACKAGE...: installs the packages unless PROBE is already a command.
  local probe="$1"; shift
  command -v "$probe" >/dev/null 2>&1 && return 0
  say "installing $* from Debian"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# Finds a Postgres and exports DATABASE_URL (an admin connection: tests create databases).
# Order: $DATABASE_URL as given; a server on 127.0.0.1:5432; else a private cluster under
# .cloudrouter/pg started from the installed PostgreSQL binaries.
ensure_postgres() {
  local dbname="$1"
  if [ -n "${DATABASE_URL:-}" ]; then return 0; fi
  local pgbin
  pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$pgbin" ]; then apt_install psql postgresql; pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"; fi
  if "$pgbin/pg_isready" -q -h 127.0.0.1 -p 5432; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$dbname"
  else
    local data="$STATE/pg" port=5499
    local as=()
    if [ "$(id -u)" -eq 0 ]; then
      # Postgres refuses to run as root: the cluster belongs to the postgres user, which must
      # be able to reach the folder (a clone under /root is not reachable for it).
      id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
      as=(runuser -u postgres --)
      mkdir -p "$data" && chown postgres "$data"
      if ! "${as[@]}" test -w "$data"; then
        data="/var/tmp/cloudrouter-pg"
        say "postgres cannot reach $STATE; using $data instead"
        mkdir -p "$data" && chown postgres "$data"
      fi
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
      say "creating a private Postgres cluster in $data"
      mkdir -p "$data"
      "${as[@]}" "$pgbin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
    fi
    if ! "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
      say "starting the private Postgres on 127.0.0.1:$port"
      "${as[@]}" "$pgbin/pg_ctl" -D "$data" -l "$data/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $data" start >/dev/null
    fi
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/$dbname"
  fi
  local admin="${DATABASE_URL%/*}/postgres"
  if ! "$pgbin/psql" "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$dbname'" | grep -q 1; then
    "$pgbin/psql" "$admin" -qc "CREATE DATABASE \"$dbname\""
  fi
}
