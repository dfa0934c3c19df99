-- Coding-plan windows. Besides its monthly allowance, a plan may cap the list-price usage its
-- allowance pays per 5-hour window and per 7-day window, as Anthropic's own subscriptions do.
-- A window opens with the first usage the allowance pays after the previous window closed, and
-- closes 5 hours (7 days) later; its whole cap is free again then.
--
-- Exact across instances like the allowance:
--  * settlement (cr_usage_draw) lets the allowance pay only what the open windows have room for:
--    used never exceeds a cap;
--  * the balance lease counts the allowance only up to that room (cr_allowance_capacity);
--  * a customer who has not opted in to pay-as-you-go beyond the windows (users.plan_overflow_payg)
--    is admitted only with a window lease (micro-USD, window_leases, cr_lease_window) covering the
--    request's worst case. The leases and the usage paid in the open window never exceed a cap,
--    so once a window is used up such a customer is refused (429), never charged to the wallet.
--    A customer who opted in is admitted without one: the wallet pays what the window cannot.

ALTER TABLE plans
    ADD COLUMN window_5h_micro_usd BIGINT CHECK (window_5h_micro_usd IS NULL OR window_5h_micro_usd > 0),
    ADD COLUMN weekly_micro_usd    BIGINT CHECK (weekly_micro_usd IS NULL OR weekly_micro_usd > 0);

-- The open windows of a subscription (the caps come from its plan snapshot).
ALTER TABLE subscriptions
    ADD COLUMN window_5h_start          TIMESTAMPTZ,
    ADD COLUMN window_5h_used_micro_usd BIGINT NOT NULL DEFAULT 0 CHECK (window_5h_used_micro_usd >= 0),
    ADD COLUMN week_start               TIMESTAMPTZ,
    ADD COLUMN week_used_micro_usd      BIGINT NOT NULL DEFAULT 0 CHECK (week_used_micro_usd >= 0);

-- Opted in: beyond a window's cap, plan requests go on, paid from trial credit and the wallet.
ALTER TABLE users ADD COLUMN plan_overflow_payg BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE window_leases (
    instance_id      UUID NOT NULL REFERENCES gateway_instances(id) ON DELETE CASCADE,
    user_id          UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amount_micro_usd BIGINT NOT NULL CHECK (amount_micro_usd >= 0),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, user_id)
);
CREATE INDEX window_leases_user ON window_leases (user_id);

-- The caps of a plan snapshot, micro-USD (NULL = none).
CREATE FUNCTION cr_window_caps(snapshot JSONB, OUT cap_5h BIGINT, OUT cap_week BIGINT) AS $$
    SELECT (snapshot->>'window_5h_micro_usd')::BIGINT, (snapshot->>'weekly_micro_usd')::BIGINT;
$$ LANGUAGE sql IMMUTABLE;

-- When the window opened at `start` closes, while it is open; NULL once it closed or when none
-- opened. The one rule of a window's lifetime: the room, the draw and the console read it.
CREATE FUNCTION cr_window_end(start TIMESTAMPTZ, length INTERVAL) RETURNS TIMESTAMPTZ AS $$
    SELECT CASE WHEN start + length > now() THEN start + length END;
$$ LANGUAGE sql STABLE;

-- The room left in a subscription's windows, micro-USD: the smaller of its caps less what the
-- allowance paid in the window if it is still open. NULL when the plan has no caps.
CREATE FUNCTION cr_window_room(s subscriptions) RETURNS BIGINT AS $$
    -- LEAST and GREATEST skip NULLs: the room is NULL only when both caps are
    SELECT GREATEST(LEAST(
        c.cap_5h - CASE WHEN cr_window_end(s.window_5h_start, '5 hours') IS NOT NULL THEN s.window_5h_used_micro_usd ELSE 0 END,
        c.cap_week - CASE WHEN cr_window_end(s.week_start, '7 days') IS NOT NULL THEN s.week_used_micro_usd ELSE 0 END),
        CASE WHEN c.cap_5h IS NOT NULL OR c.cap_week IS NOT NULL THEN 0 END)
      FROM cr_window_caps(s.plan_snapshot) c;
$$ LANGUAGE sql STABLE;

-- Grants the largest slice up to p_want (at least p_need, else 0) of the window room that no
-- instance holds yet. The subscription's lock orders it with settlement.
CREATE FUNCTION cr_lease_window(p_instance UUID, p_user UUID, p_need BIGINT, p_want BIGINT) RETURNS BIGINT AS $$
DECLARE room BIGINT; held BIGINT; g BIGINT;
BEGIN
    SELECT cr_window_room(s) INTO room FROM subscriptions s WHERE s.user_id = p_user AND s.status = 'active' FOR UPDATE;
    IF room IS NULL THEN RETURN 0; END IF;
    SELECT COALESCE(sum(amount_micro_usd), 0) INTO held FROM window_leases WHERE user_id = p_user;
    room := room - held;
    IF room < p_need OR room <= 0 THEN RETURN 0; END IF;
    g := LEAST(room, GREATEST(p_want, p_need));
    INSERT INTO window_leases (instance_id, user_id, amount_micro_usd) VALUES (p_instance, p_user, g)
    ON CONFLICT (instance_id, user_id) DO UPDATE
        SET amount_micro_usd = window_leases.amount_micro_usd + EXCLUDED.amount_micro_usd, updated_at = now();
    RETURN g;
END $$ LANGUAGE plpgsql;

-- As in 0006, with the allowance counted only up to the room in its windows.
CREATE OR REPLACE FUNCTION cr_allowance_capacity(p_user UUID) RETURNS BIGINT AS $$
    SELECT COALESCE((
        SELECT floor(LEAST(s.allowance_micro_usd - s.allowance_used_micro_usd, cr_window_room(s))::numeric * COALESCE(
            (SELECT min(c.rate_micros_per_usd) FROM api_keys k JOIN channels c ON c.code = k.channel
              WHERE k.user_id = p_user AND k.revoked_at IS NULL
                AND cr_plan_covers(cr_plan_channels(s.plan_snapshot), k.channel)),
            (SELECT min(c.rate_micros_per_usd) FROM channels c
              WHERE cr_plan_covers(cr_plan_channels(s.plan_snapshot), c.code)),
            1) / 1000000)::BIGINT
          FROM subscriptions s WHERE s.user_id = p_user AND s.status = 'active'), 0);
$$ LANGUAGE sql STABLE;

-- The draw of migration 0012, with the allowance paying only what the windows have room for, and
-- the windows opened and counted as it pays.
CREATE OR REPLACE FUNCTION cr_usage_draw() RETURNS trigger AS $$
DECLARE
    u UUID; r RECORD; sub subscriptions%ROWTYPE;
    t_id UUID; t_left BIGINT; t_drawn BIGINT; t_n INT;
    s_id UUID; s_order UUID; s_channels TEXT[]; a_left BIGINT; a_drawn BIGINT; a_n INT; w_room BIGINT;
    c BIGINT; t BIGINT; rest BIGINT; usd BIGINT; a BIGINT; wallet_part BIGINT; covered BIGINT;
    use_ch TEXT[]; use_usd BIGINT[]; use_cny BIGINT[];
BEGIN
    -- Every charged user's money lock, in user order, in one statement (cr_settle then takes the
    -- same locks again in the same order: no deadlock between gateway instances).
    PERFORM 1 FROM balances WHERE user_id IN (SELECT n.user_id FROM new_rows n WHERE n.charge_micros > 0)
     ORDER BY user_id FOR UPDATE;
    -- Only users with an allowance or trial credit left need more work (pay-as-you-go users cost
    -- this one query).
    FOR u IN SELECT DISTINCT n.user_id FROM new_rows n
              WHERE n.charge_micros > 0
                AND (EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = n.user_id AND s.status = 'active'
                               AND s.allowance_used_micro_usd < s.allowance_micro_usd)
                  OR EXISTS (SELECT 1 FROM trial_applications t WHERE t.user_id = n.user_id AND t.status = 'approved'
                               AND t.remaining_micros > 0 AND t.expires_at > now()))
              ORDER BY n.user_id LOOP
        s_id := NULL; a_left := 0; t_id := NULL; t_left := 0; w_room := NULL;
        SELECT * INTO sub FROM subscriptions WHERE user_id = u AND status = 'active' FOR UPDATE;
        IF FOUND THEN
            s_id := sub.id; s_order := sub.order_id; s_channels := cr_plan_channels(sub.plan_snapshot);
            a_left := sub.allowance_micro_usd - sub.allowance_used_micro_usd;
            w_room := cr_window_room(sub);
        END IF;
        SELECT id, remaining_micros INTO t_id, t_left FROM trial_applications
         WHERE user_id = u AND status = 'approved' AND remaining_micros > 0 AND expires_at > now() FOR UPDATE;
        IF t_id IS NULL THEN t_left := 0; END IF;
        IF a_left <= 0 AND t_left <= 0 THEN CONTINUE; END IF;
        t_drawn := 0; t_n := 0; a_drawn := 0; a_n := 0; covered := 0;
        use_ch := '{}'; use_usd := '{}'; use_cny := '{}';
        FOR r IN SELECT n.charge_micros, n.cost_micro_usd, n.channel FROM new_rows n
                  WHERE n.user_id = u AND n.charge_micros > 0 ORDER BY n.created_at, n.id LOOP
            c := r.charge_micros;
            t := LEAST(t_left, c);
            IF t > 0 THEN t_left := t_left - t; t_drawn := t_drawn + t; t_n := t_n + 1; END IF;
            rest := c - t;
            covered := covered + t;
            IF rest > 0 AND a_left > 0 AND r.cost_micro_usd > 0 AND cr_plan_covers(s_channels, r.channel) THEN
                usd := cr_div_half_up(r.cost_micro_usd::numeric * rest, c);
                a := LEAST(a_left, usd, w_room);  -- LEAST ignores a NULL room (no caps)
                IF a > 0 THEN
                    IF a = usd THEN
                        wallet_part := 0;
                    ELSE
                        wallet_part := cr_div_half_up(rest::numeric * (usd - a), usd);
                    END IF;
                    a_left := a_left - a; a_drawn := a_drawn + a; a_n := a_n + 1;
                    w_room := w_room - a;
                    covered := covered + (rest - wallet_part);
                    use_ch := use_ch || r.channel; use_usd := use_usd || a; use_cny := use_cny || (rest - wallet_part);
                END IF;
            END IF;
        END LOOP;
        IF t_drawn > 0 THEN
            UPDATE trial_applications SET remaining_micros = t_left WHERE id = t_id;
            INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
            VALUES (u, -t_drawn, t_left, 'usage', 'trial', 'API usage from trial credit', t_n);
        END IF;
        IF a_drawn > 0 THEN
            -- a window with a cap opens with the first usage it pays after it closed
            UPDATE subscriptions x SET allowance_used_micro_usd = x.allowance_used_micro_usd + a_drawn,
                   window_5h_start = CASE WHEN w.cap_5h IS NULL THEN NULL
                                          WHEN cr_window_end(x.window_5h_start, '5 hours') IS NOT NULL THEN x.window_5h_start ELSE now() END,
                   window_5h_used_micro_usd = CASE WHEN w.cap_5h IS NULL THEN 0
                                          WHEN cr_window_end(x.window_5h_start, '5 hours') IS NOT NULL THEN x.window_5h_used_micro_usd ELSE 0 END
                                          + CASE WHEN w.cap_5h IS NULL THEN 0 ELSE a_drawn END,
                   week_start = CASE WHEN w.cap_week IS NULL THEN NULL
                                     WHEN cr_window_end(x.week_start, '7 days') IS NOT NULL THEN x.week_start ELSE now() END,
                   week_used_micro_usd = CASE WHEN w.cap_week IS NULL THEN 0
                                     WHEN cr_window_end(x.week_start, '7 days') IS NOT NULL THEN x.week_used_micro_usd ELSE 0 END
                                     + CASE WHEN w.cap_week IS NULL THEN 0 ELSE a_drawn END
              FROM cr_window_caps(sub.plan_snapshot) w
             WHERE x.id = s_id;
            INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
            VALUES (u, -a_drawn, a_left, 'usage', 'allowance', 'API usage from plan allowance (USD list price)', a_n);
            INSERT INTO allowance_use (order_id, channel, used_micro_usd, payg_micros)
            SELECT s_order, x.ch, sum(x.usd), sum(x.cny) FROM unnest(use_ch, use_usd, use_cny) AS x(ch, usd, cny) GROUP BY x.ch
            ON CONFLICT (order_id, channel) DO UPDATE
                SET used_micro_usd = allowance_use.used_micro_usd + EXCLUDED.used_micro_usd,
                    payg_micros = allowance_use.payg_micros + EXCLUDED.payg_micros;
        END IF;
        IF covered > 0 THEN
            INSERT INTO billing_settle_stage (txid, user_id, covered_micros) VALUES (pg_current_xact_id(), u, covered)
            ON CONFLICT (txid, user_id) DO UPDATE
                SET covered_micros = billing_settle_stage.covered_micros + EXCLUDED.covered_micros;
        END IF;
    END LOOP;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

-- The writer of migration 0020, which also gives back the window leases of what it settled: the
-- list price of each user's plan requests (those not held off-plan).
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
    -- per user: list price of the plan requests
    w_ids UUID[]; w_costs BIGINT[];
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
