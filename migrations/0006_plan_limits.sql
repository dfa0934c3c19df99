-- Plan limits. While a subscription is active, the plan it was bought with (its snapshot) sets:
--  * channels: the allowance pays only for requests on the plan's channels (an empty list means
--    every channel). A request on another channel is pay-as-you-go: trial credit, then wallet.
--  * rpm_limit / concurrency_limit: requests per minute and requests at once across all of the
--    customer's keys on the plan's channels (the gateway enforces them with the same leases as a
--    key's own limits). Pay-as-you-go requests on other channels have only their key's limits.
--
-- Money stays safe with two kinds of balance lease per user: `off_plan` leases back requests the
-- allowance cannot pay. Trial credit is drawn first by every request, so plan requests may use it
-- up; with h_plan / h_off the held plan / off-plan amounts, t the trial credit and a the
-- allowance in CNY, the worst case the wallet must pay for everything held is
--     cr_wallet_held = max(h_plan + h_off - t - a,  h_off - max(t - h_plan, 0),  0)
-- and cr_lease_balance grants only while that stays within the wallet.

CREATE FUNCTION cr_plan_channels(snapshot JSONB) RETURNS TEXT[] AS $$
    SELECT COALESCE(array_agg(c), '{}') FROM jsonb_array_elements_text(COALESCE(snapshot->'channels', '[]')) AS c;
$$ LANGUAGE sql IMMUTABLE;

CREATE FUNCTION cr_plan_covers(plan_channels TEXT[], channel TEXT) RETURNS BOOLEAN AS $$
    SELECT cardinality(plan_channels) = 0 OR channel = ANY (plan_channels);
$$ LANGUAGE sql IMMUTABLE;

-- A subscription that starts, changes plan or ends changes what the gateway's cached keys allow.
CREATE FUNCTION cr_subscriptions_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status
       OR NEW.plan_snapshot IS DISTINCT FROM OLD.plan_snapshot THEN
        PERFORM cr_notify('user:' || NEW.user_id::text);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER subscriptions_notify AFTER INSERT OR UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION cr_subscriptions_notify();

ALTER TABLE balance_leases ADD COLUMN off_plan BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE balance_leases DROP CONSTRAINT balance_leases_pkey;
ALTER TABLE balance_leases ADD PRIMARY KEY (instance_id, user_id, off_plan);

-- Unexpired trial credit, micro-CNY.
CREATE FUNCTION cr_trial_left(p_user UUID) RETURNS BIGINT AS $$
    SELECT COALESCE(sum(remaining_micros), 0)::BIGINT FROM trial_applications
     WHERE user_id = p_user AND status = 'approved' AND expires_at > now();
$$ LANGUAGE sql STABLE;

-- The allowance left in micro-CNY at the lowest rate among the channels it can pay for (those of
-- the user's unrevoked keys that the plan covers): a CNY of capacity never buys more than its
-- share of the allowance. Rounded down.
CREATE FUNCTION cr_allowance_capacity(p_user UUID) RETURNS BIGINT AS $$
    SELECT COALESCE((
        SELECT floor((s.allowance_micro_usd - s.allowance_used_micro_usd)::numeric * COALESCE(
            (SELECT min(c.rate_micros_per_usd) FROM api_keys k JOIN channels c ON c.code = k.channel
              WHERE k.user_id = p_user AND k.revoked_at IS NULL
                AND cr_plan_covers(cr_plan_channels(s.plan_snapshot), k.channel)),
            (SELECT min(c.rate_micros_per_usd) FROM channels c
              WHERE cr_plan_covers(cr_plan_channels(s.plan_snapshot), c.code)),
            1) / 1000000)::BIGINT
          FROM subscriptions s WHERE s.user_id = p_user AND s.status = 'active'), 0);
$$ LANGUAGE sql STABLE;

CREATE FUNCTION cr_wallet_part(h_plan BIGINT, h_off BIGINT, t BIGINT, a BIGINT) RETURNS BIGINT AS $$
    SELECT GREATEST(h_plan + h_off - t - a, h_off - GREATEST(t - h_plan, 0), 0);
$$ LANGUAGE sql IMMUTABLE;

-- The part of every gateway's holds for the user that may fall on the wallet (see above).
CREATE FUNCTION cr_wallet_held(p_user UUID) RETURNS BIGINT AS $$
    SELECT cr_wallet_part(
        COALESCE(sum(amount_micros) FILTER (WHERE NOT off_plan), 0)::BIGINT,
        COALESCE(sum(amount_micros) FILTER (WHERE off_plan), 0)::BIGINT,
        cr_trial_left(p_user), cr_allowance_capacity(p_user))
      FROM balance_leases WHERE user_id = p_user;
$$ LANGUAGE sql STABLE;

DROP FUNCTION cr_lease_balance(UUID, UUID, BIGINT, BIGINT);
DROP FUNCTION cr_extra_capacity(UUID);
DROP FUNCTION cr_user_min_rate(UUID);

-- Grants the largest slice up to p_want (at least p_need, else 0) that keeps cr_wallet_held
-- within the wallet.
CREATE FUNCTION cr_lease_balance(p_instance UUID, p_user UUID, p_need BIGINT, p_want BIGINT, p_off_plan BOOLEAN)
RETURNS BIGINT AS $$
DECLARE bal BIGINT; t BIGINT; a BIGINT; h_plan BIGINT; h_off BIGINT; avail BIGINT; g BIGINT;
BEGIN
    SELECT balance_micros INTO bal FROM balances WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
    t := cr_trial_left(p_user);
    a := cr_allowance_capacity(p_user);
    SELECT COALESCE(sum(amount_micros) FILTER (WHERE NOT off_plan), 0),
           COALESCE(sum(amount_micros) FILTER (WHERE off_plan), 0)
      INTO h_plan, h_off FROM balance_leases WHERE user_id = p_user;
    avail := bal + t + a - h_plan - h_off;
    IF p_off_plan THEN
        avail := LEAST(avail, bal + GREATEST(t - h_plan, 0) - h_off);
    ELSIF h_off > bal THEN
        -- more plan holds would leave less trial credit for the off-plan ones
        avail := LEAST(avail, bal + t - h_plan - h_off);
    END IF;
    IF avail < p_need OR avail <= 0 THEN RETURN 0; END IF;
    g := LEAST(avail, GREATEST(p_want, p_need));
    INSERT INTO balance_leases (instance_id, user_id, off_plan, amount_micros) VALUES (p_instance, p_user, p_off_plan, g)
    ON CONFLICT (instance_id, user_id, off_plan) DO UPDATE
        SET amount_micros = balance_leases.amount_micros + EXCLUDED.amount_micros, updated_at = now();
    RETURN g;
END $$ LANGUAGE plpgsql;

-- As before, and the part of each user's charges that off-plan holds reserved consumes that lease.
DROP FUNCTION cr_settle(UUID, UUID[], BIGINT[], INT[]);
CREATE FUNCTION cr_settle(p_instance UUID, p_users UUID[], p_amounts BIGINT[], p_counts INT[], p_off_plan BIGINT[])
RETURNS void AS $$
DECLARE i INT; bal BIGINT; d BIGINT; cov BIGINT;
BEGIN
    FOR i IN 1 .. COALESCE(array_length(p_users, 1), 0) LOOP
        IF p_amounts[i] <= 0 THEN CONTINUE; END IF;
        SELECT balance_micros INTO bal FROM balances WHERE user_id = p_users[i] FOR UPDATE;
        IF NOT FOUND THEN CONTINUE; END IF;
        SELECT covered_micros INTO cov FROM billing_settle_stage
         WHERE txid = pg_current_xact_id() AND user_id = p_users[i];
        IF NOT FOUND THEN cov := 0; END IF;
        d := LEAST(GREATEST(p_amounts[i] - cov, 0), bal);
        IF d > 0 THEN
            UPDATE balances SET balance_micros = balance_micros - d, updated_at = now() WHERE user_id = p_users[i];
            INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
            VALUES (p_users[i], -d, bal - d, 'usage', 'wallet', 'API usage', p_counts[i]);
        END IF;
        UPDATE balance_leases
           SET amount_micros = GREATEST(amount_micros - CASE WHEN off_plan THEN p_off_plan[i] ELSE p_amounts[i] - p_off_plan[i] END, 0),
               updated_at = now()
         WHERE instance_id = p_instance AND user_id = p_users[i];
    END LOOP;
    DELETE FROM billing_settle_stage WHERE txid = pg_current_xact_id();
END $$ LANGUAGE plpgsql;

-- The draw of migration 0004, with the allowance paying only for rows on the plan's channels.
CREATE OR REPLACE FUNCTION cr_usage_draw() RETURNS trigger AS $$
DECLARE
    u UUID; r RECORD;
    t_id UUID; t_left BIGINT; t_drawn BIGINT; t_n INT;
    s_id UUID; s_channels TEXT[]; a_left BIGINT; a_drawn BIGINT; a_n INT;
    c BIGINT; t BIGINT; rest BIGINT; usd BIGINT; a BIGINT; wallet_part BIGINT; covered BIGINT;
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
        s_id := NULL; a_left := 0; t_id := NULL; t_left := 0;
        SELECT id, allowance_micro_usd - allowance_used_micro_usd, cr_plan_channels(plan_snapshot)
          INTO s_id, a_left, s_channels FROM subscriptions
         WHERE user_id = u AND status = 'active' FOR UPDATE;
        SELECT id, remaining_micros INTO t_id, t_left FROM trial_applications
         WHERE user_id = u AND status = 'approved' AND remaining_micros > 0 AND expires_at > now() FOR UPDATE;
        IF s_id IS NULL THEN a_left := 0; END IF;
        IF t_id IS NULL THEN t_left := 0; END IF;
        IF a_left <= 0 AND t_left <= 0 THEN CONTINUE; END IF;
        t_drawn := 0; t_n := 0; a_drawn := 0; a_n := 0; covered := 0;
        FOR r IN SELECT n.charge_micros, n.cost_micro_usd, n.channel FROM new_rows n
                  WHERE n.user_id = u AND n.charge_micros > 0 ORDER BY n.created_at, n.id LOOP
            c := r.charge_micros;
            t := LEAST(t_left, c);
            IF t > 0 THEN t_left := t_left - t; t_drawn := t_drawn + t; t_n := t_n + 1; END IF;
            rest := c - t;
            covered := covered + t;
            IF rest > 0 AND a_left > 0 AND r.cost_micro_usd > 0 AND cr_plan_covers(s_channels, r.channel) THEN
                usd := cr_div_half_up(r.cost_micro_usd::numeric * rest, c);
                a := LEAST(a_left, usd);
                IF a > 0 THEN
                    IF a = usd THEN
                        wallet_part := 0;
                    ELSE
                        wallet_part := cr_div_half_up(rest::numeric * (usd - a), usd);
                    END IF;
                    a_left := a_left - a; a_drawn := a_drawn + a; a_n := a_n + 1;
                    covered := covered + (rest - wallet_part);
                END IF;
            END IF;
        END LOOP;
        IF t_drawn > 0 THEN
            UPDATE trial_applications SET remaining_micros = t_left WHERE id = t_id;
            INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
            VALUES (u, -t_drawn, t_left, 'usage', 'trial', 'API usage from trial credit', t_n);
        END IF;
        IF a_drawn > 0 THEN
            UPDATE subscriptions SET allowance_used_micro_usd = allowance_used_micro_usd + a_drawn WHERE id = s_id;
            INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
            VALUES (u, -a_drawn, a_left, 'usage', 'allowance', 'API usage from plan allowance (USD list price)', a_n);
        END IF;
        IF covered > 0 THEN
            INSERT INTO billing_settle_stage (txid, user_id, covered_micros) VALUES (pg_current_xact_id(), u, covered)
            ON CONFLICT (txid, user_id) DO UPDATE
                SET covered_micros = billing_settle_stage.covered_micros + EXCLUDED.covered_micros;
        END IF;
    END LOOP;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
