-- A request is charged for everything the upstream billed for it, never silently less.
--
-- Before: the gateway cut a charge down to the hold taken before forwarding, and settlement cut
-- the wallet debit down to the balance. A request whose input is not in its body (documents and
-- images by URL, web fetch), that ran server tools, or that crossed a model's long-context
-- threshold was charged a fraction of its price. Now:
--   * the catalogue prices every part of Anthropic's usage object: long-context rates above a
--     model's threshold, and server tools (web search, web fetch) per thousand requests;
--   * each usage record keeps the amount held for it, so a charge above the hold (an overage) is
--     visible per request;
--   * settlement debits the whole charge; the part above the hold is its own ledger row; and only
--     settlement may take a wallet below zero (every other debit is still refused there).

-- Catalogue: long-context prices (NULL threshold = none) and server-tool prices, micro-USD.
ALTER TABLE models
    ADD COLUMN long_context_threshold_tokens BIGINT CHECK (long_context_threshold_tokens IS NULL OR long_context_threshold_tokens > 0),
    ADD COLUMN long_context_input_price          BIGINT NOT NULL DEFAULT 0 CHECK (long_context_input_price >= 0),
    ADD COLUMN long_context_output_price         BIGINT NOT NULL DEFAULT 0 CHECK (long_context_output_price >= 0),
    ADD COLUMN long_context_cache_write_5m_price BIGINT NOT NULL DEFAULT 0 CHECK (long_context_cache_write_5m_price >= 0),
    ADD COLUMN long_context_cache_write_1h_price BIGINT NOT NULL DEFAULT 0 CHECK (long_context_cache_write_1h_price >= 0),
    ADD COLUMN long_context_cache_read_price     BIGINT NOT NULL DEFAULT 0 CHECK (long_context_cache_read_price >= 0),
    -- per 1,000 requests
    ADD COLUMN web_search_price_per_1k BIGINT NOT NULL DEFAULT 10000000 CHECK (web_search_price_per_1k >= 0),
    ADD COLUMN web_fetch_price_per_1k  BIGINT NOT NULL DEFAULT 0 CHECK (web_fetch_price_per_1k >= 0);

-- Anthropic's list: a request whose input (uncached + cache writes + cache reads) exceeds 200k
-- tokens on a 1M-context model is priced at 2x input and 1.5x output, cache multipliers applied
-- to the long-context input price. Web search USD 10 per 1,000; web fetch free beyond its tokens.
UPDATE models SET long_context_threshold_tokens = 200000,
       long_context_input_price = input_price * 2,
       long_context_output_price = output_price * 3 / 2,
       long_context_cache_write_5m_price = input_price * 2 * 5 / 4,
       long_context_cache_write_1h_price = input_price * 2 * 2,
       long_context_cache_read_price = input_price * 2 / 10
 WHERE id IN ('claude-sonnet-4', 'claude-sonnet-4-5-20250929', 'claude-sonnet-4-6',
              'claude-opus-4-6', 'claude-opus-4-7', 'claude-opus-4-8');

-- Usage records: server tools and the hold.
ALTER TABLE usage_records
    ADD COLUMN web_search_requests BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN web_fetch_requests  BIGINT NOT NULL DEFAULT 0,
    -- micro-CNY reserved before forwarding; charge_micros - held_micros > 0 is an overage
    ADD COLUMN held_micros         BIGINT NOT NULL DEFAULT 0,
    -- answered by the conversation's sticky upstream (cache-aware routing, migration 0016)
    ADD COLUMN affinity            BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX usage_records_overage ON usage_records (created_at DESC) WHERE charge_micros > held_micros;

-- Only usage settlement may take a wallet below zero (a debt the next top-up pays first). Every
-- other debit keeps failing as the old CHECK made it fail (same SQLSTATE 23514).
ALTER TABLE balances DROP CONSTRAINT balances_balance_micros_check;
CREATE FUNCTION cr_balances_no_overdraw() RETURNS trigger AS $$
BEGIN
    IF NEW.balance_micros < 0
       AND (TG_OP = 'INSERT'
            OR (NEW.balance_micros < OLD.balance_micros
                AND current_setting('cloudrouter.settling_usage', true) IS DISTINCT FROM 'on')) THEN
        RAISE EXCEPTION 'new row for relation "balances" violates check constraint "balances_balance_micros_check"'
            USING ERRCODE = '23514', CONSTRAINT = 'balances_balance_micros_check';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER balances_no_overdraw BEFORE INSERT OR UPDATE OF balance_micros ON balances
    FOR EACH ROW EXECUTE FUNCTION cr_balances_no_overdraw();

-- Settlement: the wallet pays the whole rest of the charge (after trial credit and allowance),
-- even past zero; the part above the holds is its own ledger row ('API usage above the hold').
DROP FUNCTION cr_settle(UUID, UUID[], BIGINT[], INT[], BIGINT[]);
CREATE FUNCTION cr_settle(p_instance UUID, p_users UUID[], p_amounts BIGINT[], p_counts INT[], p_off_plan BIGINT[],
                          p_overage BIGINT[])
RETURNS void AS $$
DECLARE i INT; bal BIGINT; d BIGINT; cov BIGINT; over BIGINT; r RECORD;
BEGIN
    PERFORM set_config('cloudrouter.settling_usage', 'on', true);
    FOR i IN 1 .. COALESCE(array_length(p_users, 1), 0) LOOP
        IF p_amounts[i] <= 0 THEN CONTINUE; END IF;
        SELECT balance_micros INTO bal FROM balances WHERE user_id = p_users[i] FOR UPDATE;
        IF NOT FOUND THEN CONTINUE; END IF;
        SELECT covered_micros INTO cov FROM billing_settle_stage
         WHERE txid = pg_current_xact_id() AND user_id = p_users[i];
        IF NOT FOUND THEN cov := 0; END IF;
        d := GREATEST(p_amounts[i] - cov, 0);
        -- what the wallet pays above the holds (trial credit and allowance pay first)
        over := LEAST(GREATEST(p_overage[i], 0), d);
        -- the requests are counted on the first row written
        FOR r IN SELECT * FROM (VALUES (1, d - over, 'API usage', p_counts[i]),
                                       (2, over, 'API usage above the hold', CASE WHEN d > over THEN 0 ELSE p_counts[i] END))
                   AS v(ord, amount, note, requests) WHERE v.amount > 0 ORDER BY v.ord LOOP
            bal := bal - r.amount;
            UPDATE balances SET balance_micros = balance_micros - r.amount, updated_at = now() WHERE user_id = p_users[i];
            INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
            VALUES (p_users[i], -r.amount, bal, 'usage', 'wallet', r.note, r.requests);
        END LOOP;
        UPDATE balance_leases
           SET amount_micros = GREATEST(amount_micros - CASE WHEN off_plan THEN p_off_plan[i] ELSE p_amounts[i] - p_off_plan[i] END, 0),
               updated_at = now()
         WHERE instance_id = p_instance AND user_id = p_users[i];
    END LOOP;
    DELETE FROM billing_settle_stage WHERE txid = pg_current_xact_id();
    PERFORM set_config('cloudrouter.settling_usage', 'off', true);
END $$ LANGUAGE plpgsql;

DROP FUNCTION cr_write_usage(UUID, TEXT[], TIMESTAMPTZ[], UUID[], UUID[], TEXT[], TEXT[], TEXT[], TEXT[], UUID[], BOOL[],
    INT[], TEXT[], TEXT[], INT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], INT[], INT[],
    UUID[], BIGINT[], INT[], BIGINT[], UUID[], BIGINT[], TIMESTAMPTZ[]);
CREATE FUNCTION cr_write_usage(
    p_instance UUID,
    -- the records, one array element each
    p_ids TEXT[], p_created TIMESTAMPTZ[], p_users UUID[], p_keys UUID[], p_channels TEXT[],
    p_endpoints TEXT[], p_requested TEXT[], p_served TEXT[], p_upstreams UUID[], p_streams BOOL[],
    p_statuses INT[], p_errors TEXT[], p_outcomes TEXT[], p_attempts INT[], p_input BIGINT[],
    p_output BIGINT[], p_cache_5m BIGINT[], p_cache_1h BIGINT[], p_cache_read BIGINT[],
    p_web_search BIGINT[], p_web_fetch BIGINT[],
    p_cost BIGINT[], p_charge BIGINT[], p_held BIGINT[], p_latency INT[], p_ttft INT[], p_affinity BOOL[],
    -- per charged user, in user order: charge, charged requests, charge held off-plan, overage
    p_charged_users UUID[], p_user_amounts BIGINT[], p_user_counts INT[], p_user_off_plan BIGINT[],
    p_user_overage BIGINT[],
    -- per key, in key order: charge and the last use
    p_key_ids UUID[], p_key_amounts BIGINT[], p_key_last TIMESTAMPTZ[])
RETURNS void AS $$
BEGIN
    -- rows of users deleted meanwhile are dropped; a batch written before (a retry after a lost
    -- commit acknowledgement) is not written twice
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
    ON CONFLICT (id) DO NOTHING;

    IF cardinality(p_charged_users) > 0 THEN
        PERFORM cr_settle(p_instance, p_charged_users, p_user_amounts, p_user_counts, p_user_off_plan, p_user_overage);
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
