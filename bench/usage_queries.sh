#!/usr/bin/env bash
# Usage-insight benchmark: fills a scratch database with N usage records (default 10 million,
# generate_series in SQL, spread over 90 days, 50 customers with skewed traffic, 2 keys each over
# 3 channels, 5 models, 3 upstreams chosen at random — the worst case for rollup size), builds the
# rollups with cr_usage_rollup_rebuild(), measures what the rollup trigger adds to a 500-row batch
# insert, then times every page query through the real `insights` functions (the ignored test
# `bench_page_queries` in server/core/tests/insights.rs: 1 warm-up + 5 runs each, median and max)
# and prints a table. See bench/RESULTS.md.
#
# Usage: bench/usage_queries.sh [rows (default 10000000)]
# Needs: Postgres on 127.0.0.1:5432 (trust) or PGURL=postgres://…/postgres (a superuser URL).
# KEEP=1 reuses an already filled scratch database (skips the fill). UNLOGGED=1 makes the scratch
# tables unlogged (no WAL: for a machine short of disk; query timings are unaffected, the batch
# insert figures then exclude WAL writes).
set -euo pipefail
ROWS="${1:-10000000}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloudrouter-target}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}"
DB=cloudrouter_usage_bench
BENCH_URL="${PGURL%/*}/$DB"
psql_main() { psql -X -q -v ON_ERROR_STOP=1 "$PGURL" "$@"; }
psql_b() { psql -X -q -v ON_ERROR_STOP=1 "$BENCH_URL" "$@"; }
t() { local s=$(date +%s.%N); "$@"; echo "  $(echo "$(date +%s.%N) - $s" | bc | xargs printf '%.1f') s" >&2; }

if [[ "${KEEP:-0}" != 1 ]]; then
  echo "== scratch database $DB, $ROWS rows" >&2
  psql_main -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  for m in "$root"/migrations/*.sql; do psql_b -1 -f "$m" >/dev/null; done
  if [[ "${UNLOGGED:-0}" == 1 ]]; then
    psql_b -c "ALTER TABLE usage_records SET UNLOGGED" -c "ALTER TABLE usage_hourly SET UNLOGGED" -c "ALTER TABLE usage_hourly_global SET UNLOGGED" -c "ALTER TABLE usage_daily_key SET UNLOGGED"
  fi
  echo "== fill usage_records (triggers and secondary indexes off while loading)" >&2
  t psql_b <<SQL
ALTER TABLE usage_records DISABLE TRIGGER USER;
DROP INDEX usage_records_user; DROP INDEX usage_records_key; DROP INDEX usage_records_time;
INSERT INTO users (id, email, password_hash)
SELECT md5('user' || u)::uuid, 'bench' || u || '@example.com', 'x' FROM generate_series(0, 49) u;
SET synchronous_commit = off;
INSERT INTO usage_records (id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model,
    upstream_id, stream, status, error_type, outcome, attempts, input_tokens, output_tokens,
    cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_micro_usd, charge_micros, latency_ms, ttft_ms)
SELECT 'req_' || i, now() - random() * interval '90 days', md5('user' || u)::uuid, md5('key' || u || '-' || k)::uuid,
       (ARRAY['value', 'smart', 'stable'])[1 + (u + k) % 3], 'messages',
       (ARRAY['claude-sonnet-4-6', 'claude-opus-4-8', 'claude-haiku-4-5-20251001', 'claude-opus-5-5', 'claude-sonnet-5'])[1 + floor(random() * 5)::int],
       NULL, (ARRAY[md5('up1')::uuid, md5('up2')::uuid, md5('up3')::uuid])[1 + floor(random() * 3)::int],
       s, CASE WHEN e THEN 529 ELSE 200 END, CASE WHEN e THEN 'overloaded_error' END, CASE WHEN e THEN 'upstream_error' ELSE 'ok' END, 1,
       (random() * 20000)::int, (random() * 2000)::int, 0, 0, (random() * 10000)::int,
       (random() * 50000)::int, (random() * 300000)::int, (200 + random() * random() * 60000)::int,
       CASE WHEN s THEN (100 + random() * 3000)::int END
FROM (SELECT i, (50 * random() ^ 2)::int % 50 AS u, (random() < 0.5)::int AS k, random() < 0.7 AS s, random() < 0.03 AS e
      FROM generate_series(1, $ROWS) i) g;
SQL
  echo "== indexes" >&2
  t psql_b <<'SQL'
SET maintenance_work_mem = '512MB';
CREATE INDEX usage_records_user ON usage_records (user_id, created_at DESC);
CREATE INDEX usage_records_key ON usage_records (key_id, created_at DESC);
CREATE INDEX usage_records_time ON usage_records (created_at DESC);
SQL
  echo "== rollups (cr_usage_rollup_rebuild)" >&2
  t psql_b -c "SET work_mem = '256MB'" -c "SELECT cr_usage_rollup_rebuild()" -c "ALTER TABLE usage_records ENABLE TRIGGER USER"
  t psql_b -c "VACUUM ANALYZE usage_records" -c "VACUUM ANALYZE usage_hourly" -c "VACUUM ANALYZE usage_hourly_global" -c "VACUUM ANALYZE usage_daily_key"
fi

echo "== sizes" >&2
psql_b -At -F ' | ' <<'SQL'
SELECT 'usage_records', count(*), pg_size_pretty(pg_total_relation_size('usage_records')) FROM usage_records
UNION ALL SELECT 'usage_hourly', count(*), pg_size_pretty(pg_total_relation_size('usage_hourly')) FROM usage_hourly
UNION ALL SELECT 'usage_hourly_global', count(*), pg_size_pretty(pg_total_relation_size('usage_hourly_global')) FROM usage_hourly_global
UNION ALL SELECT 'usage_daily_key', count(*), pg_size_pretty(pg_total_relation_size('usage_daily_key')) FROM usage_daily_key;
SQL

echo "== batch insert cost: 40 statements x 500 rows (50 users x 5 models = 250 groups), with and without the rollup triggers (ms per statement)" >&2
psql_b -At <<'SQL'
CREATE OR REPLACE FUNCTION pg_temp.batch(tag text) RETURNS numeric AS $$
DECLARE s timestamptz; total numeric := 0; b int;
BEGIN
  FOR b IN 1 .. 40 LOOP
    s := clock_timestamp();
    INSERT INTO usage_records (id, created_at, user_id, key_id, channel, endpoint, requested_model, upstream_id, stream, status, outcome,
        input_tokens, output_tokens, cost_micro_usd, latency_ms, ttft_ms)
    SELECT tag || '_' || b || '_' || i, now() - random() * interval '5 seconds', md5('user' || (i % 50))::uuid, md5('key' || (i % 50) || '-0')::uuid,
           'smart', 'messages', (ARRAY['claude-sonnet-4-6', 'claude-opus-4-8', 'claude-haiku-4-5-20251001', 'claude-opus-5-5', 'claude-sonnet-5'])[1 + i % 5], md5('up1')::uuid, true, 200, 'ok', 1000, 100, 5000, 800 + i, 300 + i
    FROM generate_series(1, 500) i;
    total := total + extract(epoch FROM clock_timestamp() - s);
  END LOOP;
  RETURN round(total * 1000 / 40, 2);
END $$ LANGUAGE plpgsql;
BEGIN;
SELECT 'with rollup triggers: ' || pg_temp.batch('bench_on') || ' ms';
ROLLBACK;
BEGIN;
ALTER TABLE usage_records DISABLE TRIGGER usage_records_rollup_ins;
ALTER TABLE usage_records DISABLE TRIGGER usage_records_daily_key_ins;
SELECT 'without:              ' || pg_temp.batch('bench_off') || ' ms';
ROLLBACK;
SQL

echo "== page queries" >&2
cd "$root"
BENCH_DATABASE_URL="$BENCH_URL" DATABASE_URL="$PGURL" \
  cargo test -q --release -p cloudrouter-core --test insights -- --ignored --nocapture bench_page_queries 2>&1 \
  | grep -E '^\|'
