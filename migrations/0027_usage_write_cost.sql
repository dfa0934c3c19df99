-- The usage flush made cheaper for Postgres (issue #16, part 4). Measured by bench/usage_write.sh
-- (the backend's own CPU time per record, 500-record flushes), two costs stood out:
--
--  * the per-row conflict check. `ON CONFLICT DO NOTHING` makes every row a speculative insertion
--    into the partitioned table, which cost more than the plain insert itself. It is needed only
--    when a batch may hold records stored before: a retry after a failure (the commit may have
--    happened) or a replayed spool. The writer now says so (`p_fresh` false); a batch's first
--    attempt from the live writer holds only records never sent before, whose request ids are new,
--    and is inserted without the check. Should a fresh batch still meet a stored id (a spool
--    replayed while its instance lived), the insert fails as a whole and the writer retries it as
--    not fresh: nothing is stored or charged twice either way.
--  * the hourly rollups' histograms: 2 × 32 FILTER counts per row, for usage_hourly and again for
--    usage_hourly_global. The rows are now first counted per group and latency/TTFT bucket (a few
--    dozen rows per batch), the histograms are taken over those, and both rollups are upserted
--    from that one pass in one statement (as the status rollup of 0022 does).
--  * settlement, with many customers in a flush: five statements per customer (~110 µs each
--    customer in 500-record flushes over 50 customers). It is now one statement for all of them.

-- The upsert of the rows of relation `rel` (a transition table or usage_records) into both hourly
-- rollups with sign `sign` (1 add, -1 subtract), as one statement.
DROP FUNCTION cr_usage_rollup_sql(TEXT, INT);
CREATE FUNCTION cr_usage_rollup_sql(rel TEXT, sign INT) RETURNS TEXT AS $$
DECLARE
    lh TEXT; th TEXT; add_l TEXT; add_t TEXT; sums TEXT; sets TEXT;
BEGIN
    SELECT 'ARRAY[' || string_agg(format('%s * COALESCE(sum(g.n) FILTER (WHERE g.lb = %s), 0)', sign, i), ', ' ORDER BY i) || ']::int[]',
           'ARRAY[' || string_agg(format('%s * COALESCE(sum(g.n) FILTER (WHERE g.tb = %s), 0)', sign, i), ', ' ORDER BY i) || ']::int[]',
           'ARRAY[' || string_agg(format('t.latency_hist[%s] + EXCLUDED.latency_hist[%s]', i + 1, i + 1), ', ' ORDER BY i) || ']',
           'ARRAY[' || string_agg(format('t.ttft_hist[%s] + EXCLUDED.ttft_hist[%s]', i + 1, i + 1), ', ' ORDER BY i) || ']'
      INTO lh, th, add_l, add_t
      FROM generate_series(0, 31) i;
    sums := format($f$%1$s * sum(g.n), %1$s * sum(g.errors), %1$s * sum(g.input_tokens), %1$s * sum(g.output_tokens),
            %1$s * sum(g.cache_write_tokens), %1$s * sum(g.cache_read_tokens), %1$s * sum(g.cost_micro_usd),
            %1$s * sum(g.charge_micros), %1$s * sum(g.latency_sum_ms), %1$s * sum(g.ttft_count), %1$s * sum(g.ttft_sum_ms),
            %2$s, %3$s$f$, sign, lh, th);
    sets := format($f$requests = t.requests + EXCLUDED.requests, errors = t.errors + EXCLUDED.errors,
            input_tokens = t.input_tokens + EXCLUDED.input_tokens, output_tokens = t.output_tokens + EXCLUDED.output_tokens,
            cache_write_tokens = t.cache_write_tokens + EXCLUDED.cache_write_tokens,
            cache_read_tokens = t.cache_read_tokens + EXCLUDED.cache_read_tokens,
            cost_micro_usd = t.cost_micro_usd + EXCLUDED.cost_micro_usd, charge_micros = t.charge_micros + EXCLUDED.charge_micros,
            latency_sum_ms = t.latency_sum_ms + EXCLUDED.latency_sum_ms, ttft_count = t.ttft_count + EXCLUDED.ttft_count,
            ttft_sum_ms = t.ttft_sum_ms + EXCLUDED.ttft_sum_ms, latency_hist = %s, ttft_hist = %s$f$, add_l, add_t);
    -- Both upserts lock their rows in key order, usage_hourly_global's first (the main statement
    -- runs before the unreferenced WITH insert), the same order in every writer: no deadlocks.
    RETURN format($f$WITH g AS MATERIALIZED (
        SELECT date_trunc('hour', x.created_at) AS hour, x.user_id, x.key_id, x.channel,
               COALESCE(x.served_model, x.requested_model) AS model, x.upstream_id,
               cr_ms_bucket(x.latency_ms) AS lb, cr_ms_bucket(x.ttft_ms) AS tb,
               -- integers, not the numeric that sum(bigint) gives: the sums over these are cheaper
               count(*)::int AS n, (count(*) FILTER (WHERE x.status >= 400))::int AS errors,
               sum(x.input_tokens)::bigint AS input_tokens, sum(x.output_tokens)::bigint AS output_tokens,
               sum(x.cache_write_5m_tokens + x.cache_write_1h_tokens)::bigint AS cache_write_tokens,
               sum(x.cache_read_tokens)::bigint AS cache_read_tokens, sum(x.cost_micro_usd)::bigint AS cost_micro_usd,
               sum(x.charge_micros)::bigint AS charge_micros, sum(x.latency_ms)::bigint AS latency_sum_ms,
               count(x.ttft_ms)::int AS ttft_count, COALESCE(sum(x.ttft_ms), 0)::bigint AS ttft_sum_ms
          FROM %1$s x
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ), per_user AS (
        INSERT INTO usage_hourly AS t (hour, user_id, key_id, channel, model, upstream_id, requests, errors,
            input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros,
            latency_sum_ms, ttft_count, ttft_sum_ms, latency_hist, ttft_hist)
        SELECT g.hour, g.user_id, g.key_id, g.channel, g.model, g.upstream_id, %2$s
          FROM g
         GROUP BY 2, 1, 3, 4, 5, 6
         ORDER BY 2, 1, 3, 4, 5, 6
        ON CONFLICT (user_id, hour, key_id, channel, model, upstream_id) DO UPDATE SET %3$s
    )
    INSERT INTO usage_hourly_global AS t (hour, channel, model, upstream_id, requests, errors,
        input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros,
        latency_sum_ms, ttft_count, ttft_sum_ms, latency_hist, ttft_hist)
    SELECT g.hour, g.channel, g.model, g.upstream_id, %2$s
      FROM g
     GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, channel, model, upstream_id) DO UPDATE SET %3$s$f$, rel, sums, sets);
END $$ LANGUAGE plpgsql IMMUTABLE;

-- The trigger function of 0005 with the one statement above; the INSERT path is static SQL,
-- planned once per session.
DO $do$
BEGIN
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION cr_usage_rollup() RETURNS trigger AS $body$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE usage_hourly, usage_hourly_global;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        %s;
        RETURN NULL;
    END IF;
    EXECUTE cr_usage_rollup_sql('old_rows', -1);
    IF TG_OP = 'UPDATE' THEN
        EXECUTE cr_usage_rollup_sql('new_rows', 1);
    END IF;
    DELETE FROM usage_hourly WHERE requests = 0 AND hour IN (SELECT DISTINCT date_trunc('hour', created_at) FROM old_rows);
    DELETE FROM usage_hourly_global WHERE requests = 0 AND hour IN (SELECT DISTINCT date_trunc('hour', created_at) FROM old_rows);
    RETURN NULL;
END $body$ LANGUAGE plpgsql$f$, cr_usage_rollup_sql('new_rows', 1));
END $do$;

-- The repair tool of 0022 with the one statement above.
CREATE OR REPLACE FUNCTION cr_usage_rollup_rebuild() RETURNS void AS $$
DECLARE s TEXT;
BEGIN
    LOCK TABLE usage_records IN SHARE MODE;
    TRUNCATE usage_hourly, usage_hourly_global, usage_daily_key, status_hourly;
    FOREACH s IN ARRAY ARRAY[cr_usage_rollup_sql('usage_records', 1), cr_usage_daily_key_sql('usage_records', 1),
                             cr_status_rollup_sql('usage_records', 1)] LOOP
        EXECUTE s;
    END LOOP;
END $$ LANGUAGE plpgsql;

-- The settlement of 0013 as one statement for all the flush's users, by the same rules: the wallet
-- pays each user's charge less what trial credit and the allowance covered (staged by
-- cr_usage_draw), on one `usage` ledger row, and the part above the holds on a second one (the
-- requests counted on the first row written); this instance's balance leases are consumed (the
-- off-plan lease by the off-plan charge, the other by the rest). A user without a balance row is
-- skipped. The balance rows are locked already, in user order, by cr_usage_draw.
CREATE OR REPLACE FUNCTION cr_settle(p_instance UUID, p_users UUID[], p_amounts BIGINT[], p_counts INT[], p_off_plan BIGINT[],
                                     p_overage BIGINT[])
RETURNS void AS $$
BEGIN
    PERFORM set_config('cloudrouter.settling_usage', 'on', true);
    WITH due AS (
        SELECT u.user_id, u.amount, u.n, u.off_plan, w.d, LEAST(GREATEST(u.overage, 0), w.d) AS over
          FROM UNNEST(p_users, p_amounts, p_counts, p_off_plan, p_overage) AS u(user_id, amount, n, off_plan, overage)
          LEFT JOIN billing_settle_stage s ON s.txid = pg_current_xact_id() AND s.user_id = u.user_id
          CROSS JOIN LATERAL (SELECT GREATEST(u.amount - COALESCE(s.covered_micros, 0), 0) AS d) w
         WHERE u.amount > 0 AND EXISTS (SELECT 1 FROM balances b WHERE b.user_id = u.user_id)
    ), paid AS (
        UPDATE balances b SET balance_micros = b.balance_micros - due.d, updated_at = now()
          FROM due
         WHERE b.user_id = due.user_id AND due.d > 0
        RETURNING b.user_id, b.balance_micros
    ), leases AS (
        UPDATE balance_leases l
           SET amount_micros = GREATEST(l.amount_micros - CASE WHEN l.off_plan THEN due.off_plan ELSE due.amount - due.off_plan END, 0),
               updated_at = now()
          FROM due
         WHERE l.instance_id = p_instance AND l.user_id = due.user_id
    )
    INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
    SELECT due.user_id, -v.amount, v.after, 'usage', 'wallet', v.note, v.requests
      FROM paid JOIN due ON due.user_id = paid.user_id
     CROSS JOIN LATERAL (VALUES (1, due.d - due.over, paid.balance_micros + due.over, 'API usage', due.n),
                                (2, due.over, paid.balance_micros, 'API usage above the hold',
                                 CASE WHEN due.d > due.over THEN 0 ELSE due.n END)) AS v(ord, amount, after, note, requests)
     WHERE v.amount > 0
     ORDER BY due.user_id, v.ord;
    DELETE FROM billing_settle_stage WHERE txid = pg_current_xact_id();
    PERFORM set_config('cloudrouter.settling_usage', 'off', true);
END $$ LANGUAGE plpgsql;

-- The writer of 0026, told whether the batch is fresh (see above).
DROP FUNCTION cr_write_usage(UUID, TEXT[], TIMESTAMPTZ[], UUID[], UUID[], TEXT[], TEXT[], TEXT[], TEXT[], UUID[], BOOL[],
    INT[], TEXT[], TEXT[], INT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[],
    BIGINT[], INT[], INT[], BOOL[], BOOL[]);
CREATE FUNCTION cr_write_usage(
    p_instance UUID,
    -- true: no record of the batch was ever sent before (a live batch's first attempt)
    p_fresh BOOL,
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
    -- the positions of the records to store when the batch is not fresh
    keep BIGINT[];
    -- per charged user, in user order: charge, charged requests, charge held off-plan, overage
    u_ids UUID[]; u_amounts BIGINT[]; u_counts INT[]; u_off_plan BIGINT[]; u_overage BIGINT[];
    -- per key, in key order: charge and the last use
    k_ids UUID[]; k_amounts BIGINT[]; k_last TIMESTAMPTZ[];
    -- per user: list price of the plan requests
    w_ids UUID[]; w_costs BIGINT[];
BEGIN
    IF NOT p_fresh THEN
        -- a retry or a replay: each record not stored yet, once (its first position)
        SELECT array_agg(k.i) INTO keep
          FROM (SELECT min(u.i) AS i FROM UNNEST(p_ids, p_created) WITH ORDINALITY AS u(id, created_at, i)
                 WHERE NOT EXISTS (SELECT 1 FROM usage_records x WHERE x.id = u.id AND x.created_at = u.created_at)
                 GROUP BY u.id, u.created_at) k;
    END IF;
    -- rows of users deleted meanwhile are dropped; only what is stored here is charged
    WITH stored AS (
        INSERT INTO usage_records (id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model,
            upstream_id, stream, status, error_type, outcome, attempts, input_tokens, output_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests,
            cost_micro_usd, charge_micros, held_micros, latency_ms, ttft_ms, affinity)
        SELECT u.id, u.created_at, u.user_id, u.key_id, u.channel, u.endpoint, u.requested_model, u.served_model,
               u.upstream_id, u.stream, u.status, u.error_type, u.outcome, u.attempts, u.input_tokens, u.output_tokens,
               u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.cache_read_tokens, u.web_search_requests,
               u.web_fetch_requests, u.cost_micro_usd, u.charge_micros, u.held_micros, u.latency_ms, u.ttft_ms, u.affinity
          FROM UNNEST(p_ids, p_created, p_users, p_keys, p_channels, p_endpoints, p_requested, p_served,
            p_upstreams, p_streams, p_statuses, p_errors, p_outcomes, p_attempts, p_input, p_output, p_cache_5m,
            p_cache_1h, p_cache_read, p_web_search, p_web_fetch, p_cost, p_charge, p_held, p_latency, p_ttft, p_affinity)
            WITH ORDINALITY AS u(id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model, upstream_id,
                 stream, status, error_type, outcome, attempts, input_tokens, output_tokens, cache_write_5m_tokens,
                 cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests, cost_micro_usd,
                 charge_micros, held_micros, latency_ms, ttft_ms, affinity, i)
        WHERE EXISTS (SELECT 1 FROM users WHERE users.id = u.user_id)
          AND (p_fresh OR u.i = ANY (keep))
        RETURNING id, created_at, user_id, key_id, charge_micros, held_micros, cost_micro_usd
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
    ), by_window AS (
        SELECT user_id, sum(cost_micro_usd)::BIGINT AS cost FROM r WHERE NOT off_plan GROUP BY user_id HAVING sum(cost_micro_usd) > 0
    )
    SELECT u.ids, u.amounts, u.counts, u.off_plan, u.overage, k.ids, k.amounts, k.last, w.ids, w.costs
      INTO u_ids, u_amounts, u_counts, u_off_plan, u_overage, k_ids, k_amounts, k_last, w_ids, w_costs
      FROM (SELECT array_agg(user_id ORDER BY user_id) AS ids, array_agg(amount ORDER BY user_id) AS amounts,
                   array_agg(n ORDER BY user_id) AS counts, array_agg(off_plan ORDER BY user_id) AS off_plan,
                   array_agg(overage ORDER BY user_id) AS overage FROM by_user) u,
           (SELECT array_agg(key_id ORDER BY key_id) AS ids, array_agg(amount ORDER BY key_id) AS amounts,
                   array_agg(last ORDER BY key_id) AS last FROM by_key) k,
           (SELECT array_agg(user_id) AS ids, array_agg(cost) AS costs FROM by_window) w;

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

    IF cardinality(w_ids) > 0 AND EXISTS (SELECT 1 FROM window_leases WHERE instance_id = p_instance) THEN
        UPDATE window_leases l SET amount_micro_usd = GREATEST(l.amount_micro_usd - c.cost, 0), updated_at = now()
          FROM UNNEST(w_ids, w_costs) AS c(user_id, cost)
         WHERE l.instance_id = p_instance AND l.user_id = c.user_id;
    END IF;
END $$ LANGUAGE plpgsql;
