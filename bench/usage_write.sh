#!/usr/bin/env bash
# Postgres CPU per usage record, the flush alone: what `cr_write_usage` (the usage writer's one
# round trip: insert, triggers, settlement, key spend) costs the database backend, measured from
# the backend's own /proc/self/schedstat (nanoseconds on a CPU), so that the load generator, the
# gateway and the machine's other jobs do not blur it the way bench/run.sh's whole-process
# figures are blurred. Each flush is its own transaction, as the gateway's are.
#
# A scratch database gets every migration, N users with a balance, two keys each, and this
# instance's leases. Then, round after round, each variant below writes FLUSHES batches of ROWS
# records; the table prints the median µs per record over the rounds, minus the cost of building
# the same arrays without writing them (the "arrays only" line), and what each part costs:
#   all             the flush as the live writer runs it (a batch's first attempt)
#   retry           the same as a retry or a replay does it (records may be stored already)
#   -status         without the status page's hourly rollup trigger
#   -hourly         without the usage_hourly / usage_hourly_global rollup trigger
#   -daily_key      without the usage_daily_key rollup trigger
#   -draw           without the trial/allowance draw trigger
#   -user_check     without the statement check that the users exist
#   -rollups        without the three rollup triggers (status, hourly, daily_key)
#   -triggers       without any of the five insert triggers above
#   capture         without them, and with one statement trigger that does nothing but take the
#                   inserted rows as its transition table (what capturing them costs)
#   floor:indexed   the floor of storing these rows: the same arrays inserted, by the same UNNEST,
#                   into a plain table shaped like usage_records with its six indexes and nothing
#                   else (no partitions, triggers, checks, settlement or key spend)
#   floor:plain     the same into the plain table without any index
#   -index:NAME     without one secondary index of usage_records (INDEXES=1; dropped, then made again)
#   base            BASE=NNNN: "all" in a second scratch database with the migrations up to NNNN
#                   only (the flush before a change, measured in the same run)
#
# Usage: bench/usage_write.sh [rows per flush (500)] [flushes per variant and round (100)] [rounds (3)]
# USERS=50 spreads the records over 50 users (default 1, the shape of bench/run.sh's testbed).
# VARIANTS="all retry" runs only those. Needs Postgres on 127.0.0.1:5432 (trust) or PGURL (a
# superuser URL: the backend reads its own /proc file with pg_read_file).
set -euo pipefail
ROWS="${1:-500}"
FLUSHES="${2:-100}"
ROUNDS="${3:-3}"
USERS="${USERS:-1}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}"
psql_main() { psql -X -q -v ON_ERROR_STOP=1 "$PGURL" "$@"; }
db_url() { echo "${PGURL%/*}/$1"; }

# scratch DB, migrations up to $2 (all if empty), users, keys, leases, bench_flush()
make_db() {
  local db="$1" upto="$2" url; url="$(db_url "$1")"
  echo "== scratch database $db: migrations${upto:+ up to $upto}, $USERS users" >&2
  psql_main -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  for m in "$root"/migrations/*.sql; do
    if [[ -n "$upto" && "$(basename "$m" | cut -c1-4)" > "$upto" ]]; then break; fi
    psql -X -q -v ON_ERROR_STOP=1 "$url" -1 -f "$m" >/dev/null
  done
  psql -X -q -v ON_ERROR_STOP=1 -v users="$USERS" "$url" <<'SQL'
INSERT INTO users (id, email, password_hash)
SELECT md5('user' || u)::uuid, 'bench' || u || '@example.com', 'x' FROM generate_series(0, :users - 1) u;
INSERT INTO balances (user_id, balance_micros) SELECT id, 1000000000000000 FROM users;
INSERT INTO api_keys (id, user_id, channel, secret_hash, prefix, name)
SELECT md5('key' || u || '-' || k)::uuid, md5('user' || u)::uuid, 'smart', decode(md5('s' || u || k), 'hex'), 'sk-cr-' || u || k, 'k' || k
  FROM generate_series(0, :users - 1) u, generate_series(0, 1) k;
INSERT INTO gateway_instances (id) VALUES (md5('instance')::uuid);
INSERT INTO balance_leases (instance_id, user_id, amount_micros) SELECT md5('instance')::uuid, id, 1000000000000 FROM users;
INSERT INTO key_leases (instance_id, key_id, amount_micros) SELECT md5('instance')::uuid, id, 1000000000 FROM api_keys;

-- the capture variant's trigger: takes the inserted rows as a transition table, does nothing
CREATE FUNCTION bench_noop() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ LANGUAGE plpgsql;
CREATE TRIGGER usage_records_bench_capture AFTER INSERT ON usage_records REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_noop();
ALTER TABLE usage_records DISABLE TRIGGER usage_records_bench_capture;

-- the floor variants' tables: usage_records' columns, and on floor_indexed its indexes
CREATE TABLE floor_plain (LIKE usage_records INCLUDING DEFAULTS);
CREATE TABLE floor_indexed (LIKE usage_records INCLUDING DEFAULTS);
DO $$
DECLARE d TEXT;
BEGIN
    FOR d IN SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'usage_records'::regclass LOOP
        EXECUTE replace(replace(d, 'ON ONLY public.usage_records', 'ON floor_indexed'), 'INDEX usage_records', 'INDEX floor_indexed');
    END LOOP;
END $$;

-- One flush of n records, shaped like the gateway's: ids that grow (req_ + time + random), the
-- last few seconds, 3 % upstream errors, streams and JSON, a charge below the hold.
CREATE FUNCTION bench_flush(tag TEXT, n INT, users INT, write BOOL, fresh BOOL) RETURNS void AS $$
DECLARE
    ids TEXT[]; created TIMESTAMPTZ[]; us UUID[]; ks UUID[]; chans TEXT[]; eps TEXT[]; req TEXT[]; srv TEXT[];
    ups UUID[]; streams BOOL[]; statuses INT[]; errs TEXT[]; outcomes TEXT[]; att INT[]; inp BIGINT[]; outp BIGINT[];
    c5 BIGINT[]; c1 BIGINT[]; cr BIGINT[]; ws BIGINT[]; wf BIGINT[]; cost BIGINT[]; charge BIGINT[]; held BIGINT[];
    lat INT[]; ttft INT[]; aff BOOL[]; off BOOL[];
BEGIN
    SELECT array_agg('req_' || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::BIGINT), 12, '0') || tag || '_' || i ORDER BY i),
           array_agg(now() - (n - i) * interval '100 microseconds' ORDER BY i),
           array_agg(md5('user' || (i % users))::uuid ORDER BY i), array_agg(md5('key' || (i % users) || '-' || (i / users % 2))::uuid ORDER BY i),
           array_agg('smart'::TEXT ORDER BY i), array_agg('messages'::TEXT ORDER BY i),
           array_agg('claude-sonnet-4-6'::TEXT ORDER BY i), array_agg(CASE WHEN e THEN NULL ELSE 'claude-sonnet-4-6' END::TEXT ORDER BY i),
           array_agg(md5('up1')::uuid ORDER BY i), array_agg(i % 2 = 0 ORDER BY i),
           array_agg(CASE WHEN e THEN 529 ELSE 200 END ORDER BY i), array_agg(CASE WHEN e THEN 'overloaded_error' END::TEXT ORDER BY i),
           array_agg(CASE WHEN e THEN 'upstream_error' ELSE 'ok' END::TEXT ORDER BY i), array_agg(1 ORDER BY i),
           array_agg(CASE WHEN e THEN 0 ELSE 12 END::BIGINT ORDER BY i), array_agg(CASE WHEN e THEN 0 ELSE 10 END::BIGINT ORDER BY i),
           array_agg(0::BIGINT ORDER BY i), array_agg(0::BIGINT ORDER BY i), array_agg(0::BIGINT ORDER BY i),
           array_agg(0::BIGINT ORDER BY i), array_agg(0::BIGINT ORDER BY i),
           array_agg(CASE WHEN e THEN 0 ELSE 186 END::BIGINT ORDER BY i), array_agg(CASE WHEN e THEN 0 ELSE 186 END::BIGINT ORDER BY i),
           array_agg(CASE WHEN e THEN 0 ELSE 500 END::BIGINT ORDER BY i),
           array_agg((1 + i % 40)::INT ORDER BY i), array_agg(CASE WHEN i % 2 = 0 THEN 1 + i % 20 END ORDER BY i),
           array_agg(false ORDER BY i), array_agg(false ORDER BY i)
      INTO ids, created, us, ks, chans, eps, req, srv, ups, streams, statuses, errs, outcomes, att, inp, outp,
           c5, c1, cr, ws, wf, cost, charge, held, lat, ttft, aff, off
      FROM (SELECT i, i % 33 = 0 AS e FROM generate_series(1, n) i) g;
    IF write AND current_setting('bench.floor_table', true) <> '' THEN
        EXECUTE format($i$INSERT INTO %I (id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model,
            upstream_id, stream, status, error_type, outcome, attempts, input_tokens, output_tokens, cache_write_5m_tokens,
            cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests, cost_micro_usd, charge_micros,
            held_micros, latency_ms, ttft_ms, affinity)
            SELECT * FROM UNNEST($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                $21, $22, $23, $24, $25, $26, $27)$i$, current_setting('bench.floor_table'))
            USING ids, created, us, ks, chans, eps, req, srv, ups, streams, statuses, errs, outcomes, att, inp, outp,
                  c5, c1, cr, ws, wf, cost, charge, held, lat, ttft, aff;
    ELSIF write AND EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'cr_write_usage' AND 'p_fresh' = ANY (proargnames)) THEN
        PERFORM cr_write_usage(md5('instance')::uuid, fresh, ids, created, us, ks, chans, eps, req, srv, ups, streams, statuses,
            errs, outcomes, att, inp, outp, c5, c1, cr, ws, wf, cost, charge, held, lat, ttft, aff, off);
    ELSIF write THEN  -- before migration 0027
        PERFORM cr_write_usage(md5('instance')::uuid, ids, created, us, ks, chans, eps, req, srv, ups, streams, statuses,
            errs, outcomes, att, inp, outp, c5, c1, cr, ws, wf, cost, charge, held, lat, ttft, aff, off);
    END IF;
END $$ LANGUAGE plpgsql;
SQL
}

# ns on a CPU of the backend in `db` running the flushes (write, fresh) after `setup`, then `teardown`.
measure() {
  local db="$1" tag="$2" write="$3" fresh="$4" setup="$5" teardown="$6"
  {
    echo "$setup"
    echo "SELECT bench_flush('w_$tag', 1, $USERS, $write, $fresh);"  # plans and caches before the clock starts
    echo "SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1);"
    for i in $(seq "$FLUSHES"); do echo "SELECT bench_flush('${tag}_$i', $ROWS, $USERS, $write, $fresh);"; done
    echo "SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1);"
    echo "$teardown"
  } | psql -X -q -At -v ON_ERROR_STOP=1 "$(db_url "$db")" | grep -E '^[0-9]+$' | paste -sd' ' | awk '{print $2 - $1}'
}

DB=cloudrouter_write_bench
make_db "$DB" ""
VARIANTS="${VARIANTS:-all retry -status -hourly -daily_key -draw -user_check -triggers capture floor:indexed floor:plain}"
if [[ "${INDEXES:-0}" == 1 ]]; then
  for ix in usage_records_key usage_records_time usage_records_user usage_records_overage usage_records_user_errors; do
    VARIANTS="$VARIANTS -index:$ix"
  done
fi
if [[ -n "${BASE:-}" ]]; then
  make_db "${DB}_base" "$BASE"
  VARIANTS="base $VARIANTS"
fi

trigger_of() {
  case "$1" in
    -status) echo usage_records_status_ins ;; -hourly) echo usage_records_rollup_ins ;;
    -daily_key) echo usage_records_daily_key_ins ;; -draw) echo usage_records_draw ;;
    -user_check) echo usage_records_user_ins ;;
    -rollups) echo "$(trigger_of -status) $(trigger_of -hourly) $(trigger_of -daily_key)" ;;
    -triggers|capture) echo "$(trigger_of -rollups) $(trigger_of -draw) $(trigger_of -user_check)" ;;
  esac
}
declare -A samples
arrays=()
for r in $(seq "$ROUNDS"); do
  echo "== round $r of $ROUNDS: $FLUSHES flushes of $ROWS records per variant (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  arrays+=("$(measure "$DB" "arrays_$r" false true "" "")")
  for v in $VARIANTS; do
    db="$DB" fresh=true setup="" teardown=""
    case "$v" in
      all) ;;
      base) db="${DB}_base" ;;
      retry) fresh=false ;;
      floor:*) setup="SET bench.floor_table = 'floor_${v#floor:}';" teardown="RESET bench.floor_table;" ;;
      -index:*)
        ix="${v#-index:}"
        setup="DROP INDEX $ix;"
        teardown="$(psql -X -q -At "$(db_url "$DB")" -c "SELECT pg_get_indexdef('$ix'::regclass)");" ;;
      *)
        for tg in $(trigger_of "$v"); do
          setup+="ALTER TABLE usage_records DISABLE TRIGGER $tg;"; teardown+="ALTER TABLE usage_records ENABLE TRIGGER $tg;"
        done
        if [[ "$v" == capture ]]; then
          setup+="ALTER TABLE usage_records ENABLE TRIGGER usage_records_bench_capture;"
          teardown+="ALTER TABLE usage_records DISABLE TRIGGER usage_records_bench_capture;"
        fi ;;
    esac
    samples[$v]+="$(measure "$db" "${v//[^a-z_]/}_$r" true "$fresh" "$setup" "$teardown") "
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
per_row() { awk -v ns="$1" -v n="$((ROWS * FLUSHES))" 'BEGIN {printf "%.2f", ns / n / 1000}'; }
a="$(printf '%s ' "${arrays[@]}" | median)"
all="$(echo "${samples[all]:-}" | median)"
echo
echo "Postgres CPU per usage record, flushes of $ROWS records, $USERS user(s), median of $ROUNDS rounds of $FLUSHES flushes, $(date -u '+%F %H:%M') UTC, load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| variant | µs per record | each round | against all |"
echo "|---|---|---|---|"
echo "| arrays only (subtracted below) | $(per_row "$a") | $(for s in "${arrays[@]}"; do per_row "$s"; echo -n ' '; done)| |"
for v in $VARIANTS; do
  m="$(echo "${samples[$v]}" | median)"
  rounds="$(for s in ${samples[$v]}; do per_row "$((s - a))"; echo -n ' '; done)"
  diff=""
  [[ -n "$all" && "$v" != all ]] && diff="$(per_row "$((m - all))")"
  echo "| $v | $(per_row "$((m - a))") | $rounds| $diff |"
done
