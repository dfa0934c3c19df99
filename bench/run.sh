#!/usr/bin/env bash
# CloudRouter gateway benchmark: the same load on a fast fake upstream (nginx answering a fixed
# Messages JSON and a fixed SSE stream) three ways — directly, through a bare nginx proxy_pass, and
# through the gateway (real key, metering, settlement and usage records on) — for JSON and
# streaming requests, at 1 connection and at many. A fourth way, `bare-proxy` (an axum server
# forwarding with hyper-util's client: the gateway's stack without the gateway's work), shows
# what the HTTP stack alone costs. Prints a table; see bench/RESULTS.md.
#
# Usage: bench/run.sh [seconds per run (default 10)] [many connections (default 64)]
# Needs: Postgres on 127.0.0.1:5432 (trust) or DATABASE_URL; installs nginx and wrk from Debian.
# GATEWAY_BIN=path runs another gateway-testbed build (e.g. an older commit's) instead of building.
# BARE_PROXY_BIN=path likewise for bare-proxy.
# CALLGRIND=1 prints instead the instructions per request of the gateway process and of bare-proxy
# (user space, under valgrind's callgrind; unaffected by the machine's load), JSON and SSE, at 8
# connections, and the gateway's as a multiple of bare-proxy's.
# SYSCALLS=1 prints instead the system calls per request of bare-proxy and of the gateway (`perf
# trace -s`, all threads), JSON and SSE, at 8 connections: where their kernel time differs.
# OPEN_LOOP=1 prints instead open-loop latency (bench/src/bin/open-loop.rs): requests at 20 % and
# 50 % of the gateway's closed-loop capacity, latency from each request's scheduled send time.
# LITELLM=1 adds a table for LiteLLM's proxy (installed from PyPI into a venv under the work dir)
# on the same fake upstream, with the same load.
# BODY_KB="30 120 300" prints instead the same four ways with Claude Code-sized bodies of those
# sizes (bench/claude_code_body.py: system prompt, tools with schemas, a conversation of tool
# results, cache_control; model/stream/max_tokens first, in the middle or last), JSON and SSE, at
# 1 and 8 connections: the gateway's added latency and each relay's CPU per request.
# STREAMS="1000 5000 10000" runs instead bench/streams.sh with those numbers of streams held open
# at once (memory per open stream, CPU per forwarded event, delay added per event).
# BURST_PROBE=1 prints instead the one-connection latency of bare-proxy (no Postgres work at all)
# while another process burns the CPU in periodic bursts, as a usage flush makes Postgres do: it
# shows what such bursts alone do to p99 on this machine (bench/RESULTS.md, 2026-11-26).
#
# Besides rates and latencies it prints the CPU time each way costs per request (µs, from
# /proc): the bare proxy's nginx processes, bare-proxy, the gateway process, and Postgres (usage
# records and settlement) during the gateway runs. On a shared 2-core machine these are steadier than rates.
set -euo pipefail
DUR="${1:-10}"
MANY="${2:-64}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloudrouter-target}"
work=/var/tmp/cloudrouter-bench
mkdir -p "$work/logs"
[ -n "${STREAMS:-}" ] && exec bash "$here/streams.sh" "$STREAMS"

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

JSON_BODY='{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":10,"service_tier":"standard"}}'
SSE_BODY='event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello! How can"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" I help you today?"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":10}}

event: message_stop
data: {"type":"message_stop"}

'
q() { printf '%s' "$1" | sed "s/'/\\\\'/g"; }
# Two nginx processes: the fake upstream (one worker, shared by all three ways, so each way sees
# the same upstream) and the bare proxy (two workers, like the gateway's two runtime threads on
# this 2-core machine), so that the proxy is not capped at one core while the gateway has two.
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server { listen 127.0.0.1:18081; location / { default_type application/json; return 200 '$(q "$JSON_BODY")'; } }
  server { listen 127.0.0.1:18082; location / { default_type "text/event-stream; charset=utf-8"; return 200 '$(q "$SSE_BODY")\n\n'; } }
}
CONF
cat > "$work/nginx-proxy.conf" <<CONF
worker_processes ${PROXY_WORKERS:-2};
pid $work/nginx-proxy.pid;
error_log $work/logs/error-proxy.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  # Claude Code-sized bodies (BODY_KB) stay in memory instead of a temporary file
  client_body_buffer_size 1m;
  client_max_body_size 2m;
  upstream fake_json { server 127.0.0.1:18081; keepalive 256; }
  upstream fake_sse  { server 127.0.0.1:18082; keepalive 256; }
  server {
    listen 127.0.0.1:18090;
    location /json/ { proxy_pass http://fake_json/; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    location /sse/  { proxy_pass http://fake_sse/;  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
CONF
for c in nginx nginx-proxy; do
  "$NGINX" -t -c "$work/$c.conf" -p "$work" >/dev/null 2>&1 || { "$NGINX" -t -c "$work/$c.conf" -p "$work"; exit 1; }
  [ -f "$work/$c.pid" ] && kill "$(cat "$work/$c.pid")" 2>/dev/null || true
done
sleep 0.3
"$NGINX" -c "$work/nginx.conf" -p "$work"
"$NGINX" -c "$work/nginx-proxy.conf" -p "$work"
sleep 0.3
NGINX_PID="$(cat "$work/nginx.pid") $(cat "$work/nginx-proxy.pid")"

bins=()
[ "${OPEN_LOOP:-0}" = 1 ] && bins+=(--bin open-loop)
[ -z "${GATEWAY_BIN:-}" ] && bins+=(--bin gateway-testbed)
[ -z "${BARE_PROXY_BIN:-}" ] && bins+=(--bin bare-proxy)
if [ "${#bins[@]}" -gt 0 ]; then
  echo "building ${bins[*]} (release)..." >&2
  (cd "$root" && cargo build --quiet --release -p cloudrouter-bench "${bins[@]}")
fi
mkfifo "$work/stdin.$$"
wrap=() bp_wrap=()
if [ "${CALLGRIND:-0}" = 1 ]; then
  rm -f "$work"/callgrind.out* "$work"/callgrind-bare.out*
  wrap=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out")
  bp_wrap=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind-bare.out")
fi
"${bp_wrap[@]}" "${BARE_PROXY_BIN:-$CARGO_TARGET_DIR/release/bare-proxy}" --upstream-json http://127.0.0.1:18081 --upstream-sse http://127.0.0.1:18082 \
   <"$work/stdin.$$" >"$work/bare.out" 2>"$work/logs/bare.err" &
BP_PID=$!
"${wrap[@]}" "${GATEWAY_BIN:-$CARGO_TARGET_DIR/release/gateway-testbed}" --upstream-json http://127.0.0.1:18081 --upstream-sse http://127.0.0.1:18082 \
   --balance 100000000 <"$work/stdin.$$" >"$work/testbed.out" 2>"$work/logs/testbed.err" &
TB_PID=$!
exec 9>"$work/stdin.$$"
cleanup() { exec 9>&- || true; wait "$TB_PID" "$BP_PID" 2>/dev/null || true; kill $NGINX_PID 2>/dev/null || true; rm -f "$work/stdin.$$"; }
trap cleanup EXIT
for _ in $(seq 1 600); do [ -s "$work/testbed.out" ] && [ -s "$work/bare.out" ] && break; sleep 0.1; done  # slow under callgrind
info="$(head -1 "$work/testbed.out")"
GW="$(printf '%s' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_url"])')"
KEY_JSON="$(printf '%s' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
KEY_SSE="$(printf '%s' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key_sse"])')"
BP="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_url"])' "$work/bare.out")"

for mode in json sse; do
  stream=false; [ "$mode" = sse ] && stream=true
  cat > "$work/$mode.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"claude-sonnet-4-6","max_tokens":256,"stream":$stream,"messages":[{"role":"user","content":"Hello, Claude"}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY") or "none"
LUA
done

# CPU ticks (utime + stime, all threads) of the given processes; "u:PID" counts only the user
# time of PID (the rest of it is the kernel's: sockets, wake-ups, the spool's writes)
ticks() {
  local t=0 p f
  for p in "$@"; do
    f='$14 + $15'; [[ "$p" == u:* ]] && { p="${p#u:}"; f='$14'; }
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk "{print $f}" "/proc/$p/stat")))
  done
  echo "$t"
}
PROXY_PIDS="$(pgrep -P "$(cat "$work/nginx-proxy.pid")" | tr '\n' ' ')"
pg_pids() { pgrep -x postgres | tr '\n' ' '; }
HZ="$(getconf CLK_TCK)"

# run MODE CONNS URL KEY [PIDS...] -> "rps p50_ms p99_ms non2xx cpu_us_per_request_of_PIDS..."
# (the PIDS arguments are groups separated by commas, e.g. "12 13,14")
run() {
  local mode=$1 conns=$2 url=$3 key=$4 groups=${5:-} threads=1 g before=() after=()
  [ "$conns" -gt 1 ] && threads=2
  IFS=, read -ra gs <<<"$groups"
  for g in "${gs[@]}"; do before+=("$(ticks $g)"); done
  BENCH_KEY="$key" wrk -t"$threads" -c"$conns" -d"${DUR}s" --latency -s "$work/$mode.lua" "$url" >"$work/wrk.out" 2>&1 || true
  for g in "${gs[@]}"; do after+=("$(ticks $g)"); done
  local cpu=""; for i in "${!before[@]}"; do cpu+="$(( after[i] - before[i] )) "; done
  python3 - "$work/wrk.out" "$HZ" $cpu <<'PY'
import re, sys
t = open(sys.argv[1]).read()
hz = float(sys.argv[2]); cpu = [int(x) for x in sys.argv[3:]]
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, u = float(m.group(1)), m.group(2)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
if not re.search(r"Requests/sec:", t) or not re.search(r"99%", t):
    print("0 0 0 err" + " 0" * len(cpu)); sys.exit(0)
n = int(re.search(r"(\d+) requests in", t).group(1)) or 1
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", t, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {bad.group(1) if bad else 0}", *[f"{c / hz / n * 1e6:.1f}" for c in cpu])
PY
}

if [ "${BURST_PROBE:-0}" = 1 ]; then
  for burst in none 5/50 1/10 0.5/5; do  # busy ms / period ms
    burner=""
    if [ "$burst" != none ]; then
      python3 -c '
import sys, time
busy, period = (float(x) / 1000 for x in sys.argv[1].split("/"))
end = time.time() + float(sys.argv[2])
while time.time() < end:
    t = time.perf_counter()
    while time.perf_counter() - t < busy:
        pass
    time.sleep(period - busy)' "$burst" "$((DUR + 1))" &
      burner=$!
    fi
    wrk -t1 -c1 -d"${DUR}s" --latency -s "$work/json.lua" "$BP/json/v1/messages" >"$work/wrk.out" 2>&1 || true
    [ -n "$burner" ] && wait "$burner"
    printf 'axum proxy, one connection, CPU bursts %-6s ms: ' "$burst"
    awk '/Requests\/sec/ {r=$2} /^ +(50|90|99)%/ {sub(/%/, "", $1); l=l sprintf("p%s %s  ", $1, $2)} END {print "rps " r "  " l}' "$work/wrk.out"
  done
  exit
fi

# warm-up
BENCH_KEY="$KEY_JSON" wrk -t1 -c4 -d2s -s "$work/json.lua" "$GW/v1/messages" >/dev/null 2>&1 || true
BENCH_KEY="$KEY_SSE" wrk -t1 -c4 -d2s -s "$work/sse.lua" "$GW/v1/messages" >/dev/null 2>&1 || true

# load8 MODE KEY URL: the instrumented modes' load, wrk at 8 connections for DUR seconds; prints
# the number of requests answered (and warns of non-2xx answers on stderr)
load8() {
  local mode=$1 key=$2 url=$3 bad
  BENCH_KEY="$key" wrk -t1 -c8 -d"${DUR}s" -s "$work/$mode.lua" "$url" >"$work/wrk.out" 2>&1 || true
  bad="$(sed -n 's/.*Non-2xx or 3xx responses: //p' "$work/wrk.out")"
  if [ -n "$bad" ]; then echo "$mode: $bad non-2xx answers from $url!" >&2; fi
  sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/wrk.out"
}

if [ "${CALLGRIND:-0}" = 1 ]; then
  # counters zeroed before each run, dumped after it; the instructions per request of PID (whose
  # dumps are OUT.*) under load8
  per_request() {
    local pid=$1 out=$2 mode=$3 key=$4 url=$5 n ir
    callgrind_control -z "$pid" >/dev/null 2>&1
    n="$(load8 "$mode" "$key" "$url")"
    callgrind_control -d "$pid" >/dev/null 2>&1
    ir="$(sed -n 's/^totals: //p' "$(ls -t "$out".* | head -1)")"
    echo $((ir / n))
  }
  for mode in json sse; do
    key="$KEY_JSON"; [ "$mode" = sse ] && key="$KEY_SSE"
    gw="$(per_request "$TB_PID" "$work/callgrind.out" "$mode" "$key" "$GW/v1/messages")"
    bare="$(per_request "$BP_PID" "$work/callgrind-bare.out" "$mode" "$key" "$BP/$mode/v1/messages")"
    echo "$mode: gateway $gw, bare-proxy $bare instructions per request ($(awk -v g="$gw" -v b="$bare" 'BEGIN {printf "%.2f", g / b}')×)"
  done
  exit
fi

if [ "${SYSCALLS:-0}" = 1 ]; then
  # per_call PID MODE KEY URL -> "name calls-per-request ..." for the calls PID's threads made
  # under load8
  per_call() {
    local pid=$1 mode=$2 key=$3 url=$4 n
    perf trace -s -p "$pid" -o "$work/trace.out" & local tp=$!
    sleep 0.5
    n="$(load8 "$mode" "$key" "$url")"
    kill -INT "$tp"; wait "$tp" 2>/dev/null || true
    awk -v n="$n" '$2 ~ /^[0-9]+$/ && $1 ~ /^[a-z_0-9]+$/ {c[$1] += $2} END {for (k in c) printf "%s %.2f\n", k, c[k] / n}' "$work/trace.out"
  }
  for mode in json sse; do
    key="$KEY_JSON"; [ "$mode" = sse ] && key="$KEY_SSE"
    per_call "$BP_PID" "$mode" "$key" "$BP/$mode/v1/messages" >"$work/sys.bare"
    per_call "$TB_PID" "$mode" "$key" "$GW/v1/messages" >"$work/sys.gw"
    echo "$mode, system calls per request (8 connections):"
    echo "| call | bare-proxy | gateway |"
    echo "|---|---|---|"
    join -a1 -a2 -e 0 -o 0,1.2,2.2 <(sort "$work/sys.bare") <(sort "$work/sys.gw") \
      | awk '$2 >= 0.01 || $3 >= 0.01 {print} {b += $2; g += $3} END {printf "total %.2f %.2f\n", b, g}' \
      | sort -k3 -rn | awk '{printf "| %s | %s | %s |\n", $1, $2, $3}'
  done
  exit
fi

if [ "${OPEN_LOOP:-0}" = 1 ]; then
  # Offered rates of 20 % and 50 % of the gateway's closed-loop capacity (measured here first),
  # the same four ways; latency from each request's scheduled send time.
  printf '| mode | load | rate /s | direct p50 / p99 / p99.9 | nginx proxy p50 / p99 / p99.9 | axum proxy p50 / p99 / p99.9 | gateway p50 / p99 / p99.9 | gateway over direct p50 / p99 / p99.9 | gateway over nginx p99 | gateway answered / failed | load avg |\n'
  printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
  for mode in json sse; do
    port=18081; key="$KEY_JSON"; flag=""; [ "$mode" = sse ] && { port=18082; key="$KEY_SSE"; flag="--stream"; }
    read -r cap _ <<<"$(run "$mode" 64 "$GW/v1/messages" "$key")"
    for pct in 20 50; do
      rate=$((cap * pct / 100))
      declare -A r=()
      for way in direct nginx axum gateway; do
        case "$way" in
          direct) url="http://127.0.0.1:$port/v1/messages" ;;
          nginx) url="http://127.0.0.1:18090/$mode/v1/messages" ;;
          axum) url="$BP/$mode/v1/messages" ;;
          gateway) url="$GW/v1/messages" ;;
        esac
        r[$way]="$("${OPEN_LOOP_BIN:-$CARGO_TARGET_DIR/release/open-loop}" --url "$url" --key "$key" --rate "$rate" --seconds "$DUR" --connections 32 $flag)"
      done
      python3 - "$mode" "$pct" "$(cut -d' ' -f1 /proc/loadavg)" "${r[direct]}" "${r[nginx]}" "${r[axum]}" "${r[gateway]}" <<'PY'
import json, sys
mode, pct, load = sys.argv[1:4]
d, n, a, g = (json.loads(x) for x in sys.argv[4:8])
ms = lambda us: f"{us / 1000:.3f}"
t = lambda x: " / ".join(ms(x["latency_us"][p]) for p in ("p50", "p99", "p999"))
over = " / ".join(f"{(g['latency_us'][p] - d['latency_us'][p]) / 1000:+.3f}" for p in ("p50", "p99", "p999"))
print(f"| {mode} | {pct} % | {g['rate']:.0f} | {t(d)} | {t(n)} | {t(a)} | {t(g)} | {over} | {(g['latency_us']['p99'] - n['latency_us']['p99']) / 1000:+.3f} | {g['answered']} / {g['failed']} | {load} |")
PY
    done
  done
  exit
fi

if [ -n "${BODY_KB:-}" ]; then
  # Claude Code-sized bodies: added latency over direct, and CPU per request of each relay
  for kb in $BODY_KB; do
    for mode in json sse; do
      python3 "$here/claude_code_body.py" "$kb" "$mode" >"$work/body-$kb-$mode.json"
      cat > "$work/big-$mode-$kb.lua" <<LUA
local f = io.open("$work/body-$kb-$mode.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY") or "none"
LUA
    done
  done
  printf '| body | mode | conns | direct p50 / p99 | nginx proxy p50 / p99 | axum proxy p50 / p99 | gateway p50 / p99 | gateway added over direct p50 / p99 (ms) | CPU µs per request: nginx / axum / gateway / Postgres | gateway − axum CPU (µs) | load |\n'
  printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
  for kb in $BODY_KB; do
    size="$(( $(wc -c <"$work/body-$kb-json.json") / 1024 )) KB"
    for mode in json sse; do
      port=18081; key="$KEY_JSON"; [ "$mode" = sse ] && { port=18082; key="$KEY_SSE"; }
      for conns in 1 8; do
        load="$(cut -d' ' -f1 /proc/loadavg)"
        read -r _ d_p50 d_p99 _ <<<"$(run "big-$mode-$kb" "$conns" "http://127.0.0.1:$port/v1/messages" x)"
        read -r _ n_p50 n_p99 _ n_cpu <<<"$(run "big-$mode-$kb" "$conns" "http://127.0.0.1:18090/$mode/v1/messages" x "$PROXY_PIDS")"
        read -r _ a_p50 a_p99 _ a_cpu <<<"$(run "big-$mode-$kb" "$conns" "$BP/$mode/v1/messages" x "$BP_PID")"
        read -r _ g_p50 g_p99 g_bad g_cpu p_cpu <<<"$(run "big-$mode-$kb" "$conns" "$GW/v1/messages" "$key" "$TB_PID,$(pg_pids)")"
        printf '| %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s | %s | %s / %s / %s / %s | %s | %s |%s\n' "$size" "$mode" "$conns" \
          "$d_p50" "$d_p99" "$n_p50" "$n_p99" "$a_p50" "$a_p99" "$g_p50" "$g_p99" \
          "$(python3 -c "print(f'{$g_p50-$d_p50:+.3f} / {$g_p99-$d_p99:+.3f}')")" "$n_cpu" "$a_cpu" "$g_cpu" "$p_cpu" \
          "$(python3 -c "print(f'{$g_cpu-$a_cpu:+.1f}')")" "$load" "$([ "$g_bad" != 0 ] && echo " ($g_bad non-2xx!)")"
      done
    done
  done
  exit
fi

out="$work/results.txt"; : >"$out"; : >"$work/gateway.txt"
cpu_out="$work/cpu.txt"; : >"$cpu_out"
printf '%-6s %-5s | %-26s | %-26s | %-26s | %-26s | %s\n' mode conns "direct rps/p50/p99 (ms)" "nginx proxy rps/p50/p99" \
  "axum proxy rps/p50/p99" "gateway rps/p50/p99" "gateway rps vs direct / nginx / axum; p99 over direct" | tee -a "$out"
for mode in json sse; do
  port=18081; key="$KEY_JSON"; [ "$mode" = sse ] && { port=18082; key="$KEY_SSE"; }
  for conns in 1 "$MANY"; do
    read -r d_rps d_p50 d_p99 _ <<<"$(run "$mode" "$conns" "http://127.0.0.1:$port/v1/messages" x)"
    read -r n_rps n_p50 n_p99 _ n_cpu <<<"$(run "$mode" "$conns" "http://127.0.0.1:18090/$mode/v1/messages" x "$PROXY_PIDS")"
    read -r a_rps a_p50 a_p99 _ a_cpu a_user <<<"$(run "$mode" "$conns" "$BP/$mode/v1/messages" x "$BP_PID,u:$BP_PID")"
    read -r g_rps g_p50 g_p99 g_bad g_cpu p_cpu g_user <<<"$(run "$mode" "$conns" "$GW/v1/messages" "$key" "$TB_PID,$(pg_pids),u:$TB_PID")"
    printf '%-6s %-5s | %8s | %8s | %8s | %8s | %10s | %12s\n' "$mode" "$conns" "$n_cpu" "$a_cpu" "$g_cpu" "$p_cpu" \
      "$(python3 -c "print(f'{$g_cpu/max($a_cpu, 0.1):.2f}x')")" "$a_user / $g_user" >>"$cpu_out"
    echo "$mode $conns $g_rps $g_p50 $g_p99 $g_cpu" >>"$work/gateway.txt"
    ratio="$(python3 -c "
d,n,a,g=float('$d_rps') or 1,float('$n_rps') or 1,float('$a_rps') or 1,float('$g_rps')
print(f'{g/d*100:.0f}% / {g/n*100:.0f}% / {g/a*100:.0f}%; {($g_p99-$d_p99)*1000:+.0f}us')")"
    printf '%-6s %-5s | %7s %8s %8s | %7s %8s %8s | %7s %8s %8s | %7s %8s %8s | %s%s\n' "$mode" "$conns" \
      "$d_rps" "$d_p50" "$d_p99" "$n_rps" "$n_p50" "$n_p99" "$a_rps" "$a_p50" "$a_p99" "$g_rps" "$g_p50" "$g_p99" "$ratio" \
      "$([ "$g_bad" != 0 ] && echo " ($g_bad non-2xx!)")" | tee -a "$out"
  done
done
echo
echo "CPU time per request (µs): the bare proxy's nginx workers; bare-proxy; the gateway process; Postgres during the gateway run;"
echo "the gateway's as a multiple of bare-proxy's; the user-space part of bare-proxy's and the gateway's (the rest is the kernel's)"
printf '%-6s %-5s | %8s | %8s | %8s | %8s | %10s | %12s\n' mode conns "nginx" "axum" "gateway" "postgres" "gw / axum" "user: axum / gw"
cat "$cpu_out"

if [ "${LITELLM:-0}" = 1 ]; then
  # A peer: LiteLLM's proxy (PyPI, no database), an `anthropic/` model on the same fake upstream,
  # two workers like the gateway's two runtime threads, same load.
  venv="$work/litellm-venv"
  if [ ! -x "$venv/bin/litellm" ]; then
    echo "installing litellm[proxy] from PyPI..." >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'litellm[proxy]' >&2
  fi
  cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: bench-json
    litellm_params: {model: anthropic/claude-sonnet-4-6, api_base: "http://127.0.0.1:18081", api_key: sk-fake-upstream}
  - model_name: bench-sse
    litellm_params: {model: anthropic/claude-sonnet-4-6, api_base: "http://127.0.0.1:18082", api_key: sk-fake-upstream}
YAML
  ll_key="sk-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  LITELLM_MASTER_KEY="$ll_key" "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port 18095 --num_workers 2 \
    >"$work/logs/litellm.log" 2>&1 &
  LL_PID=$!
  for _ in $(seq 1 120); do curl -s -o /dev/null http://127.0.0.1:18095/health/liveliness && break; sleep 1; done
  for mode in json sse; do
    sed "s/claude-sonnet-4-6/bench-$mode/" "$work/$mode.lua" >"$work/litellm-$mode.lua"
  done
  BENCH_KEY="$ll_key" wrk -t1 -c4 -d2s -s "$work/litellm-json.lua" http://127.0.0.1:18095/v1/messages >/dev/null 2>&1 || true
  ll_pids="$LL_PID $(pgrep -P "$LL_PID" | tr '\n' ' ')"
  echo
  echo "LiteLLM proxy, same fake upstream and load: rps / p50 / p99 (ms); CPU µs per request; the gateway's figures from the table above"
  printf '%-6s %-5s | %-26s | %-26s | %s\n' mode conns "litellm rps/p50/p99" "gateway rps/p50/p99" "gateway rps ÷ litellm; CPU µs per request litellm / gateway"
  mapfile -t measured <"$work/gateway.txt"
  for line in "${measured[@]}"; do
    read -r mode conns g_rps g_p50 g_p99 g_cpu <<<"$line"
    read -r l_rps l_p50 l_p99 l_bad l_cpu <<<"$(run "litellm-$mode" "$conns" http://127.0.0.1:18095/v1/messages "$ll_key" "$ll_pids")"
    printf '%-6s %-5s | %7s %8s %8s | %7s %8s %8s | %s; %s / %s%s\n' "$mode" "$conns" "$l_rps" "$l_p50" "$l_p99" "$g_rps" "$g_p50" "$g_p99" \
      "$(python3 -c "print(f'{float($g_rps) / max(float($l_rps), 1):.0f}x')")" "$l_cpu" "$g_cpu" "$([ "$l_bad" != 0 ] && echo " ($l_bad non-2xx)")"
  done
  kill $ll_pids 2>/dev/null || true
fi
exec 9>&-
wait "$TB_PID" "$BP_PID" 2>/dev/null || true
echo >&2; cat "$work/logs/testbed.err" | tail -2 >&2
