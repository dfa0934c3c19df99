-- Usage rollups for the usage pages (see server/core/src/insights.rs).
--
-- Two hourly rollups of usage_records, both keyed by the UTC hour of created_at:
--   usage_hourly         (hour, user_id, key_id, channel, model, upstream_id) — customer views,
--                         and staff views of one customer or one key;
--   usage_hourly_global  (hour, channel, model, upstream_id)                  — staff views across
--                         all customers (per model, channel, upstream), a few rows per hour.
-- model = COALESCE(served_model, requested_model). errors = status >= 400.
-- Daily buckets (Asia/Shanghai days, UTC+8 without daylight saving, so every Shanghai day is
-- exactly 24 whole UTC hours) are summed from hourly rows at query time.
--
-- Exactness: the rollups are maintained by statement-level triggers on usage_records, in the same
-- transaction as the change, from the transition tables: one INSERT … SELECT … GROUP BY … ON
-- CONFLICT DO UPDATE per rollup and statement (the usage writer inserts a whole batch in one
-- statement). DELETE subtracts (and drops rows whose request count reaches 0), UPDATE subtracts the
-- old rows and adds the new ones, TRUNCATE empties the rollups. So at every commit, for every hour
-- and group, the rollup equals the sums over usage_records. Rows are upserted in key order, so
-- concurrent writers lock rollup rows in the same order (no deadlocks between gateway instances).
-- The backfill below runs after the trigger exists, inside this migration's transaction: CREATE
-- TRIGGER locks usage_records against writes until commit, so no row is missed or counted twice.
--
-- Latency and time-to-first-token histograms: 32 buckets (int[] of 32 counts, index 1..32) with
-- log-scale edges 10·2^(k/2) ms, rounded (10, 14, 20, 28, …, 231705, 327680): bucket 1 is < 10 ms,
-- bucket 32 is ≥ 327680 ms, each other bucket spans a factor √2. A percentile read from the
-- histogram lies in the same bucket as the exact (nearest-rank) percentile; the reported value is
-- the bucket's geometric midpoint, within a factor 2^(1/4) (±19 %) of any value in that bucket.
-- The edges are repeated in insights.rs (HIST_EDGES_MS); change both together.

CREATE FUNCTION cr_ms_bucket(ms INT) RETURNS INT AS $$
    SELECT width_bucket(ms, ARRAY[10, 14, 20, 28, 40, 57, 80, 113, 160, 226, 320, 453, 640, 905, 1280,
        1810, 2560, 3620, 5120, 7241, 10240, 14482, 20480, 28963, 40960, 57926, 81920, 115852, 163840,
        231705, 327680]::int[]);
$$ LANGUAGE sql IMMUTABLE PARALLEL SAFE;

-- Histogram (32 counts) of bucket numbers 0..31 (NULL = empty); times `sign` (1 or -1).
CREATE FUNCTION cr_hist(b INT[], sign INT DEFAULT 1) RETURNS INT[] AS $$
    SELECT array_agg(COALESCE(s.c, 0) * sign ORDER BY i)::int[]
    FROM generate_series(0, 31) i
    LEFT JOIN (SELECT x, count(*)::int AS c FROM unnest(b) x GROUP BY x) s ON s.x = i;
$$ LANGUAGE sql IMMUTABLE PARALLEL SAFE;

-- Element-wise sum of two histograms.
CREATE FUNCTION cr_hist_add(a INT[], b INT[]) RETURNS INT[] AS $$
    SELECT array_agg(COALESCE(x, 0) + COALESCE(y, 0) ORDER BY i)::int[]
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i);
$$ LANGUAGE sql IMMUTABLE PARALLEL SAFE;

CREATE TABLE usage_hourly (
    hour               TIMESTAMPTZ NOT NULL,
    -- no foreign keys: deleting a user deletes their usage_records, whose DELETE trigger
    -- removes these rows
    user_id            UUID NOT NULL,
    key_id             UUID,
    channel            TEXT NOT NULL,
    model              TEXT NOT NULL,
    upstream_id        UUID,
    requests           BIGINT NOT NULL,
    errors             BIGINT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    -- 5-minute + 1-hour cache writes
    cache_write_tokens BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cost_micro_usd     BIGINT NOT NULL,
    charge_micros      BIGINT NOT NULL,
    latency_sum_ms     BIGINT NOT NULL,
    ttft_count         BIGINT NOT NULL,
    ttft_sum_ms        BIGINT NOT NULL,
    latency_hist       INT[] NOT NULL,
    ttft_hist          INT[] NOT NULL
) WITH (fillfactor = 70);  -- room for HOT updates of the current hour's rows
-- the upsert key; also serves per-customer queries (user_id, hour range)
CREATE UNIQUE INDEX usage_hourly_group ON usage_hourly (user_id, hour, key_id, channel, model, upstream_id) NULLS NOT DISTINCT;
CREATE INDEX usage_hourly_key ON usage_hourly (key_id, hour);
CREATE INDEX usage_hourly_hour ON usage_hourly (hour);

CREATE TABLE usage_hourly_global (
    hour               TIMESTAMPTZ NOT NULL,
    channel            TEXT NOT NULL,
    model              TEXT NOT NULL,
    upstream_id        UUID,
    requests           BIGINT NOT NULL,
    errors             BIGINT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cost_micro_usd     BIGINT NOT NULL,
    charge_micros      BIGINT NOT NULL,
    latency_sum_ms     BIGINT NOT NULL,
    ttft_count         BIGINT NOT NULL,
    ttft_sum_ms        BIGINT NOT NULL,
    latency_hist       INT[] NOT NULL,
    ttft_hist          INT[] NOT NULL
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX usage_hourly_global_group ON usage_hourly_global (hour, channel, model, upstream_id) NULLS NOT DISTINCT;

-- The statements that apply the rows of relation `rel` (a transition table or usage_records) to
-- both rollups with sign `sign` (1 add, -1 subtract). Histograms are built with 32 FILTER counts
-- and added element by element: plain expressions, no function calls per group.
CREATE FUNCTION cr_usage_rollup_sql(rel TEXT, sign INT) RETURNS TEXT[] AS $$
DECLARE
    lh TEXT; th TEXT; add_l TEXT; add_t TEXT; sums TEXT; sets TEXT; src TEXT;
BEGIN
    SELECT 'ARRAY[' || string_agg(format('%s * count(*) FILTER (WHERE r.lb = %s)', sign, i), ', ' ORDER BY i) || ']::int[]',
           'ARRAY[' || string_agg(format('%s * count(*) FILTER (WHERE r.tb = %s)', sign, i), ', ' ORDER BY i) || ']::int[]',
           'ARRAY[' || string_agg(format('t.latency_hist[%s] + EXCLUDED.latency_hist[%s]', i + 1, i + 1), ', ' ORDER BY i) || ']',
           'ARRAY[' || string_agg(format('t.ttft_hist[%s] + EXCLUDED.ttft_hist[%s]', i + 1, i + 1), ', ' ORDER BY i) || ']'
      INTO lh, th, add_l, add_t
      FROM generate_series(0, 31) i;
    src := format('(SELECT x.*, cr_ms_bucket(x.latency_ms) AS lb, cr_ms_bucket(x.ttft_ms) AS tb FROM %s x) r', rel);
    sums := format($f$%1$s * count(*), %1$s * count(*) FILTER (WHERE r.status >= 400),
            %1$s * sum(r.input_tokens), %1$s * sum(r.output_tokens), %1$s * sum(r.cache_write_5m_tokens + r.cache_write_1h_tokens),
            %1$s * sum(r.cache_read_tokens), %1$s * sum(r.cost_micro_usd), %1$s * sum(r.charge_micros),
            %1$s * sum(r.latency_ms), %1$s * count(r.ttft_ms), %1$s * COALESCE(sum(r.ttft_ms), 0), %2$s, %3$s$f$, sign, lh, th);
    sets := format($f$requests = t.requests + EXCLUDED.requests, errors = t.errors + EXCLUDED.errors,
            input_tokens = t.input_tokens + EXCLUDED.input_tokens, output_tokens = t.output_tokens + EXCLUDED.output_tokens,
            cache_write_tokens = t.cache_write_tokens + EXCLUDED.cache_write_tokens,
            cache_read_tokens = t.cache_read_tokens + EXCLUDED.cache_read_tokens,
            cost_micro_usd = t.cost_micro_usd + EXCLUDED.cost_micro_usd, charge_micros = t.charge_micros + EXCLUDED.charge_micros,
            latency_sum_ms = t.latency_sum_ms + EXCLUDED.latency_sum_ms, ttft_count = t.ttft_count + EXCLUDED.ttft_count,
            ttft_sum_ms = t.ttft_sum_ms + EXCLUDED.ttft_sum_ms, latency_hist = %s, ttft_hist = %s$f$, add_l, add_t);
    RETURN ARRAY[
      format($f$INSERT INTO usage_hourly AS t (hour, user_id, key_id, channel, model, upstream_id, requests, errors,
            input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros,
            latency_sum_ms, ttft_count, ttft_sum_ms, latency_hist, ttft_hist)
        SELECT date_trunc('hour', r.created_at), r.user_id, r.key_id, r.channel, COALESCE(r.served_model, r.requested_model),
            r.upstream_id, %s
        FROM %s
        GROUP BY 2, 1, 3, 4, 5, 6
        ORDER BY 2, 1, 3, 4, 5, 6
        ON CONFLICT (user_id, hour, key_id, channel, model, upstream_id) DO UPDATE SET %s$f$, sums, src, sets),
      format($f$INSERT INTO usage_hourly_global AS t (hour, channel, model, upstream_id, requests, errors,
            input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros,
            latency_sum_ms, ttft_count, ttft_sum_ms, latency_hist, ttft_hist)
        SELECT date_trunc('hour', r.created_at), r.channel, COALESCE(r.served_model, r.requested_model), r.upstream_id, %s
        FROM %s
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (hour, channel, model, upstream_id) DO UPDATE SET %s$f$, sums, src, sets)
    ];
END $$ LANGUAGE plpgsql IMMUTABLE;

-- The trigger function. The INSERT path (the usage writer's) has its two statements written in
-- as static SQL (planned once per session); DELETE and UPDATE run the same statements
-- dynamically on old_rows (sign -1) and new_rows.
DO $do$
DECLARE ins TEXT[] := cr_usage_rollup_sql('new_rows', 1);
BEGIN
    EXECUTE format($f$
CREATE FUNCTION cr_usage_rollup() RETURNS trigger AS $body$
DECLARE s TEXT;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE usage_hourly, usage_hourly_global;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        %s;
        %s;
        RETURN NULL;
    END IF;
    FOREACH s IN ARRAY cr_usage_rollup_sql('old_rows', -1) LOOP EXECUTE s; END LOOP;
    IF TG_OP = 'UPDATE' THEN
        FOREACH s IN ARRAY cr_usage_rollup_sql('new_rows', 1) LOOP EXECUTE s; END LOOP;
    END IF;
    DELETE FROM usage_hourly WHERE requests = 0 AND hour IN (SELECT DISTINCT date_trunc('hour', created_at) FROM old_rows);
    DELETE FROM usage_hourly_global WHERE requests = 0 AND hour IN (SELECT DISTINCT date_trunc('hour', created_at) FROM old_rows);
    RETURN NULL;
END $body$ LANGUAGE plpgsql$f$, ins[1], ins[2]);
END $do$;

CREATE TRIGGER usage_records_rollup_ins AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();
CREATE TRIGGER usage_records_rollup_del AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();
CREATE TRIGGER usage_records_rollup_upd AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();
CREATE TRIGGER usage_records_rollup_trunc AFTER TRUNCATE ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();

-- Rebuilds both rollups from usage_records (backfill; also an operator's repair tool). Takes a
-- SHARE lock on usage_records so that no write happens between the truncate and the rebuild.
CREATE FUNCTION cr_usage_rollup_rebuild() RETURNS void AS $$
DECLARE s TEXT;
BEGIN
    LOCK TABLE usage_records IN SHARE MODE;
    TRUNCATE usage_hourly, usage_hourly_global;
    FOREACH s IN ARRAY cr_usage_rollup_sql('usage_records', 1) LOOP EXECUTE s; END LOOP;
END $$ LANGUAGE plpgsql;

SELECT cr_usage_rollup_rebuild();

-- The usage log filtered to errors (a few % of rows): without it a customer's "errors of model X
-- this week" page scans all their rows of the week (≈ 0.5 s at 1 M rows per customer; 15 ms with).
CREATE INDEX usage_records_user_errors ON usage_records (user_id, created_at DESC) WHERE status >= 400;
