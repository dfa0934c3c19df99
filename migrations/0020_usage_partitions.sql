-- usage_records partitioned by month (native range partitioning on created_at, UTC months), so
-- that the table stays fast past a billion rows and old months leave by DROP instead of DELETE.
--
-- What stays exact: the rollups (0005, 0007) and the allowance draw (0004) are statement-level
-- triggers with transition tables on the parent; a statement on the parent sees the rows of
-- every partition it touched, so they behave as before. Dropping a whole partition fires no
-- DELETE trigger: retention (cr_usage_partitions below) removes raw rows and keeps the hourly and
-- daily rollups, so the charts, the status figures and the totals stay what they were.
--
-- The primary key must include the partition key: (id, created_at). Every writer of a record
-- (the usage writer, its retry after a lost acknowledgement, a spool replay) carries the
-- created_at the gateway stamped once, so ON CONFLICT (id, created_at) still stores and charges a
-- record once.

ALTER TABLE usage_records RENAME TO usage_records_unpartitioned;
ALTER INDEX usage_records_pkey RENAME TO usage_records_unpartitioned_pkey;
DROP INDEX usage_records_user, usage_records_key, usage_records_time, usage_records_overage, usage_records_user_errors;

CREATE TABLE usage_records (LIKE usage_records_unpartitioned INCLUDING DEFAULTS, PRIMARY KEY (id, created_at))
    PARTITION BY RANGE (created_at);
-- a record whose time no monthly partition covers (a clock far off) is kept here rather than
-- refused; cr_usage_partitions moves such rows into their month when it creates it
CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;

-- Creates the monthly partitions from `p_from`'s month through two months after this one, and
-- the months of any row the default partition holds up to then (moving those rows in); then
-- drops the partitions that ended more than `p_keep_months` months before this month began (0:
-- keep everything). Returns the names of the partitions it dropped. Run at start and every ten
-- minutes by each instance (server/core/src/usage/partitions.rs); an advisory lock makes
-- concurrent runs wait for each other.
CREATE FUNCTION cr_usage_partitions(p_from TIMESTAMPTZ, p_keep_months INT)
RETURNS SETOF TEXT AS $$
DECLARE
    this_month TIMESTAMPTZ := date_trunc('month', now(), 'UTC');
    m TIMESTAMPTZ;
    part TEXT;
    upper_bound TIMESTAMPTZ;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('cr_usage_partitions'));
    FOR m IN
        SELECT generate_series(date_trunc('month', LEAST(p_from, now()), 'UTC'), this_month + INTERVAL '2 months', INTERVAL '1 month')
        UNION
        SELECT DISTINCT date_trunc('month', created_at, 'UTC') FROM usage_records_default
         WHERE created_at < this_month + INTERVAL '3 months'
        ORDER BY 1
    LOOP
        part := 'usage_records_' || to_char(m AT TIME ZONE 'UTC', 'YYYY"m"MM');
        IF to_regclass(part) IS NULL THEN
            -- rows of this month that landed in the default partition move into it; writing the
            -- partitions directly fires none of the parent's triggers, so the rollups are unchanged
            EXECUTE format('CREATE TABLE %I (LIKE usage_records INCLUDING DEFAULTS)', part);
            EXECUTE format('WITH moved AS (DELETE FROM usage_records_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', part) USING m, m + INTERVAL '1 month';
            EXECUTE format('ALTER TABLE usage_records ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           part, m, m + INTERVAL '1 month');
        END IF;
    END LOOP;

    IF p_keep_months > 0 THEN
        FOR part, upper_bound IN
            SELECT c.relname, (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::TIMESTAMPTZ
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'usage_records'::regclass AND c.relname <> 'usage_records_default'
        LOOP
            IF upper_bound <= this_month - make_interval(months => p_keep_months) THEN
                EXECUTE format('DROP TABLE %I', part);
                RETURN NEXT part;
            END IF;
        END LOOP;
    END IF;
END $$ LANGUAGE plpgsql;

-- the months the existing rows need, then the rows, before any trigger exists: the rollups and
-- draws already account for them
SELECT cr_usage_partitions(COALESCE((SELECT min(created_at) FROM usage_records_unpartitioned), now()), 0);
INSERT INTO usage_records SELECT * FROM usage_records_unpartitioned;
DROP TABLE usage_records_unpartitioned;

CREATE INDEX usage_records_user ON usage_records (user_id, created_at DESC);
CREATE INDEX usage_records_key ON usage_records (key_id, created_at DESC);
CREATE INDEX usage_records_time ON usage_records (created_at DESC);
CREATE INDEX usage_records_overage ON usage_records (created_at DESC) WHERE charge_micros > held_micros;
CREATE INDEX usage_records_user_errors ON usage_records (user_id, created_at DESC) WHERE status >= 400;

CREATE TRIGGER usage_records_draw AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_draw();
CREATE TRIGGER usage_records_rollup_ins AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();
CREATE TRIGGER usage_records_rollup_del AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();
CREATE TRIGGER usage_records_rollup_upd AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();
CREATE TRIGGER usage_records_rollup_trunc AFTER TRUNCATE ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_rollup();
CREATE TRIGGER usage_records_daily_key_ins AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();
CREATE TRIGGER usage_records_daily_key_del AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();
CREATE TRIGGER usage_records_daily_key_upd AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();
CREATE TRIGGER usage_records_daily_key_trunc AFTER TRUNCATE ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_daily_key();
CREATE TRIGGER usage_records_user_ins AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_users_exist();
CREATE TRIGGER usage_records_user_upd AFTER UPDATE ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_users_exist();

-- cr_write_usage (0018) unchanged but for its conflict target, which must name the whole key.
CREATE OR REPLACE FUNCTION cr_write_usage(
    p_instance UUID,
    -- the records, one array element each
    p_ids TEXT[], p_created TIMESTAMPTZ[], p_users UUID[], p_keys UUID[], p_channels TEXT[],
    p_endpoints TEXT[], p_requested TEXT[], p_served TEXT[], p_upstreams UUID[], p_streams BOOL[],
    p_statuses INT[], p_errors TEXT[], p_outcomes TEXT[], p_attempts INT[], p_input BIGINT[],
    p_output BIGINT[], p_cache_5m BIGINT[], p_cache_1h BIGINT[], p_cache_read BIGINT[],
    p_web_search BIGINT[], p_web_fetch BIGINT[],
    p_cost BIGINT[], p_charge BIGINT[], p_held BIGINT[], p_latency INT[], p_ttft INT[], p_affinity BOOL[],
    -- the charge was held from the user's off-plan lease
    p_off_plan BOOL[])
RETURNS void AS $$
DECLARE
    -- per charged user, in user order: charge, charged requests, charge held off-plan, overage
    u_ids UUID[]; u_amounts BIGINT[]; u_counts INT[]; u_off_plan BIGINT[]; u_overage BIGINT[];
    -- per key, in key order: charge and the last use
    k_ids UUID[]; k_amounts BIGINT[]; k_last TIMESTAMPTZ[];
BEGIN
    -- rows of users deleted meanwhile are dropped; a record stored before is skipped, and only
    -- what is stored here is charged
    WITH stored AS (
        INSERT INTO usage_records (id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model,
            upstream_id, stream, status, error_type, outcome, attempts, input_tokens, output_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests,
            cost_micro_usd, charge_micros, held_micros, latency_ms, ttft_ms, affinity)
        SELECT u.* FROM UNNEST(p_ids, p_created, p_users, p_keys, p_channels, p_endpoints, p_requested, p_served,
            p_upstreams, p_streams, p_statuses, p_errors, p_outcomes, p_attempts, p_input, p_output, p_cache_5m,
            p_cache_1h, p_cache_read, p_web_search, p_web_fetch, p_cost, p_charge, p_held, p_latency, p_ttft, p_affinity)
            AS u(id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model, upstream_id,
                 stream, status, error_type, outcome, attempts, input_tokens, output_tokens, cache_write_5m_tokens,
                 cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests, cost_micro_usd,
                 charge_micros, held_micros, latency_ms, ttft_ms, affinity)
        WHERE EXISTS (SELECT 1 FROM users WHERE users.id = u.user_id)
        ON CONFLICT (id, created_at) DO NOTHING
        RETURNING id, created_at, user_id, key_id, charge_micros, held_micros
    ), r AS (
        -- a semi-join: an id twice in the batch (stored once) is still counted once
        SELECT s.*, s.id IN (SELECT o.id FROM UNNEST(p_ids, p_off_plan) AS o(id, off_plan) WHERE o.off_plan) AS off_plan
          FROM stored s
    ), by_user AS (
        SELECT user_id, sum(charge_micros)::BIGINT AS amount, (count(*) FILTER (WHERE charge_micros > 0))::INT AS n,
               COALESCE(sum(charge_micros) FILTER (WHERE off_plan), 0)::BIGINT AS off_plan,
               sum(GREATEST(charge_micros - held_micros, 0))::BIGINT AS overage
          FROM r GROUP BY user_id HAVING sum(charge_micros) > 0
    ), by_key AS (
        SELECT key_id, sum(charge_micros)::BIGINT AS amount, max(created_at) AS last
          FROM r WHERE key_id IS NOT NULL GROUP BY key_id
    )
    SELECT u.ids, u.amounts, u.counts, u.off_plan, u.overage, k.ids, k.amounts, k.last
      INTO u_ids, u_amounts, u_counts, u_off_plan, u_overage, k_ids, k_amounts, k_last
      FROM (SELECT array_agg(user_id ORDER BY user_id) AS ids, array_agg(amount ORDER BY user_id) AS amounts,
                   array_agg(n ORDER BY user_id) AS counts, array_agg(off_plan ORDER BY user_id) AS off_plan,
                   array_agg(overage ORDER BY user_id) AS overage FROM by_user) u,
           (SELECT array_agg(key_id ORDER BY key_id) AS ids, array_agg(amount ORDER BY key_id) AS amounts,
                   array_agg(last ORDER BY key_id) AS last FROM by_key) k;

    IF cardinality(u_ids) > 0 THEN
        PERFORM cr_settle(p_instance, u_ids, u_amounts, u_counts, u_off_plan, u_overage);
    END IF;

    IF cardinality(k_ids) > 0 THEN
        UPDATE api_keys k SET spent_micros = k.spent_micros + c.amount,
               last_used_at = GREATEST(k.last_used_at, c.last)
          FROM UNNEST(k_ids, k_amounts, k_last) AS c(key_id, amount, last)
         WHERE k.id = c.key_id;
        UPDATE key_leases l SET amount_micros = GREATEST(l.amount_micros - c.amount, 0), updated_at = now()
          FROM UNNEST(k_ids, k_amounts) AS c(key_id, amount)
         WHERE l.instance_id = p_instance AND l.key_id = c.key_id AND c.amount > 0;
    END IF;
END $$ LANGUAGE plpgsql;
