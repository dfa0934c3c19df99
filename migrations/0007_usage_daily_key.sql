-- A third rollup, per Asia/Shanghai day and key: (day, user_id, key_id). Charts by key, and
-- any chart of one customer or key, over 7, 30 or 90 days read it instead of summing hourly
-- rows by (channel, model, upstream) at query time: staff "spend by key across all customers"
-- read ~1 M hourly rows for 30 days at 10 M records (0.8 s); this reads one row per key and day.
-- No histograms: latency charts stay on the hourly rollups.
--
-- Kept exact the same way as 0005's rollups: statement-level triggers on usage_records, in the
-- writing transaction, from the transition tables (DELETE subtracts, UPDATE subtracts and adds,
-- TRUNCATE empties), rows upserted in key order. `day` is the Shanghai midnight as an instant
-- (UTC+8 without daylight saving, as in insights.rs).

CREATE TABLE usage_daily_key (
    day                TIMESTAMPTZ NOT NULL,
    user_id            UUID NOT NULL,
    key_id             UUID,
    requests           BIGINT NOT NULL,
    errors             BIGINT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cost_micro_usd     BIGINT NOT NULL,
    charge_micros      BIGINT NOT NULL
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX usage_daily_key_group ON usage_daily_key (user_id, day, key_id) NULLS NOT DISTINCT;
CREATE INDEX usage_daily_key_key ON usage_daily_key (key_id, day);
CREATE INDEX usage_daily_key_day ON usage_daily_key (day);

-- The upsert of relation `rel` (a transition table or usage_records) with sign 1 or -1.
CREATE FUNCTION cr_usage_daily_key_sql(rel TEXT, sign INT) RETURNS TEXT AS $$
    SELECT format($f$INSERT INTO usage_daily_key AS t (day, user_id, key_id, requests, errors, input_tokens,
            output_tokens, cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros)
        SELECT date_bin('1 day', r.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+08'), r.user_id, r.key_id,
            %1$s * count(*), %1$s * count(*) FILTER (WHERE r.status >= 400), %1$s * sum(r.input_tokens),
            %1$s * sum(r.output_tokens), %1$s * sum(r.cache_write_5m_tokens + r.cache_write_1h_tokens),
            %1$s * sum(r.cache_read_tokens), %1$s * sum(r.cost_micro_usd), %1$s * sum(r.charge_micros)
        FROM %2$s r
        GROUP BY 2, 1, 3
        ORDER BY 2, 1, 3
        ON CONFLICT (user_id, day, key_id) DO UPDATE SET requests = t.requests + EXCLUDED.requests,
            errors = t.errors + EXCLUDED.errors, input_tokens = t.input_tokens + EXCLUDED.input_tokens,
            output_tokens = t.output_tokens + EXCLUDED.output_tokens,
            cache_write_tokens = t.cache_write_tokens + EXCLUDED.cache_write_tokens,
            cache_read_tokens = t.cache_read_tokens + EXCLUDED.cache_read_tokens,
            cost_micro_usd = t.cost_micro_usd + EXCLUDED.cost_micro_usd,
            charge_micros = t.charge_micros + EXCLUDED.charge_micros$f$, sign, rel);
$$ LANGUAGE sql IMMUTABLE;

-- The INSERT path (the usage writer's) is static SQL, planned once per session.
DO $do$
BEGIN
    EXECUTE format($f$
CREATE FUNCTION cr_usage_daily_key() RETURNS trigger AS $body$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE usage_daily_key;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        %s;
        RETURN NULL;
    END IF;
    EXECUTE cr_usage_daily_key_sql('old_rows', -1);
    IF TG_OP = 'UPDATE' THEN
        EXECUTE cr_usage_daily_key_sql('new_rows', 1);
    END IF;
    DELETE FROM usage_daily_key WHERE requests = 0
       AND day IN (SELECT DISTINCT date_bin('1 day', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+08') FROM old_rows);
    RETURN NULL;
END $body$ LANGUAGE plpgsql$f$, cr_usage_daily_key_sql('new_rows', 1));
END $do$;

CREATE TRIGGER usage_records_daily_key_ins AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();
CREATE TRIGGER usage_records_daily_key_del AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();
CREATE TRIGGER usage_records_daily_key_upd AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();
CREATE TRIGGER usage_records_daily_key_trunc AFTER TRUNCATE ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();

-- The operator's repair tool now rebuilds all three rollups (and backfills this one, under the
-- same SHARE lock that keeps writes out between the truncate and the rebuild).
CREATE OR REPLACE FUNCTION cr_usage_rollup_rebuild() RETURNS void AS $$
DECLARE s TEXT;
BEGIN
    LOCK TABLE usage_records IN SHARE MODE;
    TRUNCATE usage_hourly, usage_hourly_global, usage_daily_key;
    FOREACH s IN ARRAY cr_usage_rollup_sql('usage_records', 1) || cr_usage_daily_key_sql('usage_records', 1) LOOP
        EXECUTE s;
    END LOOP;
END $$ LANGUAGE plpgsql;

SELECT cr_usage_rollup_rebuild();
