-- One call writes a batch of usage records and settles it (the usage writer's flush).
--
-- The writer used to send BEGIN, the insert, `cr_settle`, the key update, the key-lease update
-- and COMMIT: six round trips, each waking the Postgres backend and then the gateway. On the
-- 2-core machine a round trip costs as much CPU as writing several rows, so that fixed cost per
-- flush decided how small batches could be (bench/RESULTS.md, 2026-11-25 night). The same
-- statements in one function called outside a transaction block run as one transaction in one
-- round trip; their plans are cached per session as before.
CREATE FUNCTION cr_write_usage(
    p_instance UUID,
    -- the records, one array element each
    p_ids TEXT[], p_created TIMESTAMPTZ[], p_users UUID[], p_keys UUID[], p_channels TEXT[],
    p_endpoints TEXT[], p_requested TEXT[], p_served TEXT[], p_upstreams UUID[], p_streams BOOL[],
    p_statuses INT[], p_errors TEXT[], p_outcomes TEXT[], p_attempts INT[], p_input BIGINT[],
    p_output BIGINT[], p_cache_5m BIGINT[], p_cache_1h BIGINT[], p_cache_read BIGINT[],
    p_cost BIGINT[], p_charge BIGINT[], p_latency INT[], p_ttft INT[],
    -- per charged user, in user order: charge, charged requests, charge held off-plan
    p_charged_users UUID[], p_user_amounts BIGINT[], p_user_counts INT[], p_user_off_plan BIGINT[],
    -- per key, in key order: charge and the last use
    p_key_ids UUID[], p_key_amounts BIGINT[], p_key_last TIMESTAMPTZ[])
RETURNS void AS $$
BEGIN
    -- rows of users deleted meanwhile are dropped; a batch written before (a retry after a lost
    -- commit acknowledgement) is not written twice
    INSERT INTO usage_records (id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model,
        upstream_id, stream, status, error_type, outcome, attempts, input_tokens, output_tokens,
        cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_micro_usd, charge_micros,
        latency_ms, ttft_ms)
    SELECT u.* FROM UNNEST(p_ids, p_created, p_users, p_keys, p_channels, p_endpoints, p_requested, p_served,
        p_upstreams, p_streams, p_statuses, p_errors, p_outcomes, p_attempts, p_input, p_output, p_cache_5m,
        p_cache_1h, p_cache_read, p_cost, p_charge, p_latency, p_ttft)
        AS u(id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model, upstream_id,
             stream, status, error_type, outcome, attempts, input_tokens, output_tokens, cache_write_5m_tokens,
             cache_write_1h_tokens, cache_read_tokens, cost_micro_usd, charge_micros, latency_ms, ttft_ms)
    WHERE EXISTS (SELECT 1 FROM users WHERE users.id = u.user_id)
    ON CONFLICT (id) DO NOTHING;

    IF cardinality(p_charged_users) > 0 THEN
        PERFORM cr_settle(p_instance, p_charged_users, p_user_amounts, p_user_counts, p_user_off_plan);
    END IF;

    IF cardinality(p_key_ids) > 0 THEN
        UPDATE api_keys k SET spent_micros = k.spent_micros + c.amount,
               last_used_at = GREATEST(k.last_used_at, c.last)
          FROM UNNEST(p_key_ids, p_key_amounts, p_key_last) AS c(key_id, amount, last)
         WHERE k.id = c.key_id;
        UPDATE key_leases l SET amount_micros = GREATEST(l.amount_micros - c.amount, 0), updated_at = now()
          FROM UNNEST(p_key_ids, p_key_amounts) AS c(key_id, amount)
         WHERE l.instance_id = p_instance AND l.key_id = c.key_id AND c.amount > 0;
    END IF;
END $$ LANGUAGE plpgsql;
