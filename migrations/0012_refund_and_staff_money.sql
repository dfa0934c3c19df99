-- Money and trust (issue #11): what a cycle's allowance paid for (refunds deduct the use beyond
-- the elapsed days' share), staff money actions that apply once (idempotency keys), and invoices
-- of refunded orders (closed, or marked for a red-letter reversal). See docs/billing.md.

-- ---------------------------------------------------------------------------------------------
-- Allowance use per cycle and channel. A cycle is identified by the order that paid it
-- (subscriptions.order_id). `payg_micros` is what the requests the allowance paid for would have
-- cost pay-as-you-go: per request, the CNY the allowance covered at the channel's rate then.
-- Written by cr_usage_draw under the subscription's row lock; read by refunds.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE allowance_use (
    order_id       UUID NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    channel        TEXT NOT NULL,
    used_micro_usd BIGINT NOT NULL CHECK (used_micro_usd >= 0),
    payg_micros    BIGINT NOT NULL CHECK (payg_micros >= 0),
    PRIMARY KEY (order_id, channel)
);

-- As in 0006, and each user's allowance draws of the statement are added to allowance_use in one
-- upsert (arrays collected in the loop, so the per-request cost stays an array append).
CREATE OR REPLACE FUNCTION cr_usage_draw() RETURNS trigger AS $$
DECLARE
    u UUID; r RECORD;
    t_id UUID; t_left BIGINT; t_drawn BIGINT; t_n INT;
    s_id UUID; s_order UUID; s_channels TEXT[]; a_left BIGINT; a_drawn BIGINT; a_n INT;
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
        s_id := NULL; a_left := 0; t_id := NULL; t_left := 0;
        SELECT id, order_id, allowance_micro_usd - allowance_used_micro_usd, cr_plan_channels(plan_snapshot)
          INTO s_id, s_order, a_left, s_channels FROM subscriptions
         WHERE user_id = u AND status = 'active' FOR UPDATE;
        SELECT id, remaining_micros INTO t_id, t_left FROM trial_applications
         WHERE user_id = u AND status = 'approved' AND remaining_micros > 0 AND expires_at > now() FOR UPDATE;
        IF s_id IS NULL THEN a_left := 0; END IF;
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
                a := LEAST(a_left, usd);
                IF a > 0 THEN
                    IF a = usd THEN
                        wallet_part := 0;
                    ELSE
                        wallet_part := cr_div_half_up(rest::numeric * (usd - a), usd);
                    END IF;
                    a_left := a_left - a; a_drawn := a_drawn + a; a_n := a_n + 1;
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
            UPDATE subscriptions SET allowance_used_micro_usd = allowance_used_micro_usd + a_drawn WHERE id = s_id;
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

-- Cycles under way when this migration runs: their allowance used so far is shared out over the
-- plan's channels in proportion to the list price of the cycle's usage on each, at each channel's
-- average charge per USD (an estimate, once; every later draw is recorded exactly).
INSERT INTO allowance_use (order_id, channel, used_micro_usd, payg_micros)
SELECT x.order_id, x.channel,
       cr_div_half_up(x.used::numeric * x.usd, x.total_usd),
       cr_div_half_up(x.used::numeric * x.cny, x.total_usd)
  FROM (SELECT s.order_id, s.allowance_used_micro_usd AS used, u.channel, sum(u.cost_micro_usd) AS usd,
               sum(u.charge_micros) AS cny, sum(sum(u.cost_micro_usd)) OVER (PARTITION BY s.id) AS total_usd
          FROM subscriptions s
          JOIN usage_records u ON u.user_id = s.user_id AND u.created_at >= s.cycle_start
               AND u.cost_micro_usd > 0 AND cr_plan_covers(cr_plan_channels(s.plan_snapshot), u.channel)
         WHERE s.status = 'active' AND s.allowance_used_micro_usd > 0
         GROUP BY s.id, s.order_id, s.allowance_used_micro_usd, u.channel) x
 WHERE x.total_usd > 0;

-- ---------------------------------------------------------------------------------------------
-- Staff money actions apply once: the first answer to an idempotency key is kept and returned to
-- a repeat; a repeat that asks for something else is refused.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE staff_idempotency (
    key        TEXT PRIMARY KEY CHECK (length(key) BETWEEN 8 AND 100),
    staff_id   UUID REFERENCES users(id) ON DELETE SET NULL,
    action     TEXT NOT NULL,
    -- what was asked (compared with a repeat) and what was answered (returned to a repeat)
    request    JSONB NOT NULL,
    response   JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- Invoices of refunded orders: an issued invoice whose order is refunded is due a red-letter
-- reversal (红字发票) of the refunded amount, which staff record (number, date).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('requested', 'issued', 'rejected', 'reversal_due', 'reversed'));
ALTER TABLE invoices
    ADD COLUMN reversal_amount_micros BIGINT CHECK (reversal_amount_micros IS NULL OR reversal_amount_micros >= 0),
    ADD COLUMN reversal_number        TEXT,
    ADD COLUMN reversal_issued_on     DATE,
    ADD COLUMN reversed_by            UUID REFERENCES users(id) ON DELETE SET NULL,
    ADD COLUMN reversed_at            TIMESTAMPTZ;
