#!/usr/bin/env bash
# Many long streams (issue #16): N streams open at once, each an event every 50 ms for 20 s,
# from `stream-load upstream` (a fake Claude stamping each event with its send time) to
# `stream-load client`, three ways: directly, through `bare-proxy` (axum + hyper-util's client:
# the gateway's stack with none of its work) and through the gateway (`gateway-testbed`: real
# key, holds, SSE metering, settlement and usage records in Postgres). For each N it prints the
# event delay (send → client read) each way and what the gateway adds, the time to the first
# event, each relay's RSS per open stream and CPU time per forwarded event (a fresh relay process
# per run), and whether every client saw every event, in order. Results: bench/RESULTS.md.
#
# Usage: bench/streams.sh ["1000 5000 10000"] [seconds per stream (20)]
# Needs Postgres on 127.0.0.1:5432 (trust) or DATABASE_URL. GATEWAY_BIN= / BARE_PROXY_BIN= /
# STREAM_LOAD_BIN= run other builds instead of building.
set -euo pipefail
COUNTS="${1:-1000 5000 10000}"
SECS="${2:-20}"
INTERVAL_MS=50
EVENTS=$((SECS * 1000 / INTERVAL_MS))
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloudrouter-target}"
work=/var/tmp/cloudrouter-bench-streams
mkdir -p "$work"

# each stream is two sockets in a relay: N streams need 2N open files there, plus a few
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fit=$(( ($(ulimit -n) - 200) / 2 / 1000 * 1000 ))
counts=""
for n in $COUNTS; do
  if [ "$n" -gt "$fit" ]; then
    echo "open files are limited to $(ulimit -n) per process here (hard limit): a relay can hold $fit streams, not $n; measuring $fit" >&2
    n="$fit"
  fi
  counts="$counts $n"
done
COUNTS="$counts"

if [ -z "${GATEWAY_BIN:-}" ] || [ -z "${STREAM_LOAD_BIN:-}" ] || [ -z "${BARE_PROXY_BIN:-}" ]; then
  echo "building gateway-testbed, bare-proxy and stream-load (release)..." >&2
  (cd "$root" && cargo build --quiet --release -p cloudrouter-bench --bin gateway-testbed --bin bare-proxy --bin stream-load)
fi
TESTBED="${GATEWAY_BIN:-$CARGO_TARGET_DIR/release/gateway-testbed}"
BARE="${BARE_PROXY_BIN:-$CARGO_TARGET_DIR/release/bare-proxy}"
LOAD="${STREAM_LOAD_BIN:-$CARGO_TARGET_DIR/release/stream-load}"

# Each program runs until its stdin (a fifo held open on a file descriptor here) closes.
started=""
start() { # name fd command…: starts it and waits for its first line (JSON) in $work/name.out
  local name="$1" fd="$2"
  shift 2
  rm -f "$work/$name.in" "$work/$name.out"
  mkfifo "$work/$name.in"
  "$@" <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err" &
  started=$!
  eval "exec $fd>\"$work/$name.in\""
  for _ in $(seq 1 300); do [ -s "$work/$name.out" ] && break; sleep 0.1; done
}
stop() { # fd pid
  eval "exec $1>&-"
  wait "$2" 2>/dev/null || true
}
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$work/$1.out" "$2"; }

start upstream 7 "$LOAD" upstream --interval-ms "$INTERVAL_MS" --seconds "$SECS"
UP_PID=$started
UP="$(field upstream base_url)"
trap 'exec 7>&- 8>&- 9>&- 2>/dev/null || true; wait 2>/dev/null || true' EXIT

: >"$work/results.jsonl"
for n in $COUNTS; do
  ramp=$((n / 1000 + 2))
  for way in direct axum gateway; do
    # a fresh relay per run: its memory before the run is its memory at rest
    case "$way" in
      direct) url="$UP/v1/messages"; key=""; pid="$UP_PID" ;;
      axum)
        start bare 8 "$BARE" --upstream-json "$UP" --upstream-sse "$UP"
        pid=$started; url="$(field bare base_url)/sse/v1/messages"; key="" ;;
      gateway)
        start testbed 9 "$TESTBED" --upstream-json "$UP" --upstream-sse "$UP" --balance 10000000
        pid=$started; url="$(field testbed base_url)/v1/messages"; key="$(field testbed api_key_sse)" ;;
    esac
    sleep 1
    load="$(cut -d' ' -f1 /proc/loadavg)"
    r="$("$LOAD" client --url "$url" --key "$key" --streams "$n" --events "$EVENTS" --ramp-seconds "$ramp" --pid "$pid")"
    printf '{"way": "%s", "load": %s, "result": %s}\n' "$way" "$load" "$r" >>"$work/results.jsonl"
    case "$way" in
      axum) stop 8 "$pid" ;;
      gateway) stop 9 "$pid"; grep -h "ledger consistent" "$work/testbed.err" >&2 || true ;;
    esac
    sleep 2
  done
done

python3 - "$work/results.jsonl" <<'PY'
import json, sys
by = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    by.setdefault(r["result"]["streams"], {})[r["way"]] = r
ms = lambda us: f"{us / 1000:.2f}"
trio = lambda x: f"{ms(x['delay_us']['p50'])} / {ms(x['delay_us']['p99'])} / {ms(x['delay_us']['p999'])}"
def cost(r):
    rel = r["result"].get("relay") or {}
    rss, per, cpu = rel.get("rss_open_kib"), rel.get("rss_per_stream_kib"), rel.get("cpu_us_per_event")
    return (f"{rss / 1024:.0f}" if rss else "?") + f" / {per:.1f}" + f" / {cpu:.2f}", per, cpu
full = [n for n in sorted(by) if all(k in by[n] for k in ("direct", "axum", "gateway"))]
print("Event delay, upstream send → client read (ms), and time to the first event (ms):")
print()
print("| streams | direct p50 / p99 / p99.9 | axum proxy p50 / p99 / p99.9 | gateway p50 / p99 / p99.9 | gateway over direct, p50 / p99 | first event p50: direct / axum / gateway | gateway: complete / failed / out of order | load at each start |")
print("|---|---|---|---|---|---|---|---|")
for n in full:
    w = by[n]
    d, a, g = (w[k]["result"] for k in ("direct", "axum", "gateway"))
    print(f"| {n} | {trio(d)} | {trio(a)} | {trio(g)} | {ms(g['delay_us']['p50'] - d['delay_us']['p50'])} / {ms(g['delay_us']['p99'] - d['delay_us']['p99'])} "
          f"| {ms(d['first_event_us']['p50'])} / {ms(a['first_event_us']['p50'])} / {ms(g['first_event_us']['p50'])} "
          f"| {g['completed']} / {g['failed']} / {g['disordered']} | {w['direct']['load']} / {w['axum']['load']} / {w['gateway']['load']} |")
print()
print("Each relay, a fresh process per run: RSS with every stream open (MiB) / per open stream (KiB) / CPU per forwarded event (µs):")
print()
print("| streams | axum proxy | gateway | gateway ÷ axum: per stream, per event |")
print("|---|---|---|---|")
for n in full:
    (a, ap, ac), (g, gp, gc) = cost(by[n]["axum"]), cost(by[n]["gateway"])
    ratio = lambda x, y: f"{x / y:.2f}×" if x and y else "?"
    print(f"| {n} | {a} | {g} | {ratio(gp, ap)}, {ratio(gc, ac)} |")
PY
