-- The usage spool (server/core/src/usage/spool.rs): records an instance answered but had not
-- committed when it was killed are replayed by the next instance to start, so writing a batch
-- must be idempotent in its charges too.
--
-- Before: cr_write_usage skipped a record whose id was already stored (ON CONFLICT DO NOTHING)
-- but settled the per-user and per-key sums the writer had computed over the whole batch, so a
-- record written twice (a replay, or a retry after a lost commit acknowledgement) was charged
-- twice. Now the sums are taken, in the same statement, over the rows the INSERT actually
-- stored (RETURNING): a record already stored is neither written nor charged again, and two
-- writers of the same record (ON CONFLICT waits for the first's commit) charge it once. The
-- writer passes, per row, whether its charge was held from the off-plan lease (not a column).

-- The deployment's identity: names its spool files, so that a spool directory shared by
-- two databases never replays one's records into the other.
CREATE TABLE deployment (
    id       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    only_row BOOLEAN NOT NULL DEFAULT true UNIQUE CHECK (only_row)
);
INSERT INTO deployment DEFAULT VALUES;

DROP FUNCTION cr_write_usage(UUID, TEXT[], TIMESTAMPTZ[], UUID[], UUID[], TEXT[], TEXT[], TEXT[], TEXT[], UUID[], BOOL[],
    INT[], TEXT[], TEXT[], INT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[],
    BIGINT[], INT[], INT[], BOOL[], UUID[], BIGINT[], INT[], BIGINT[], BIGINT[], UUID[], BIGINT[], TIMESTAMPTZ[]);
CREATE FUNCTION cr_write_usage(
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
        ON CONFLICT (id) DO NOTHING
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
