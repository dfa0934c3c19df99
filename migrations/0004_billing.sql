-- Billing: plans, subscriptions with a per-cycle allowance, orders and payments, refunds,
-- invoices, trial credit, the staff audit log, and the funding order of API usage
-- (trial credit → plan allowance → wallet balance). See docs/billing.md.
--
-- Money stays BIGINT micro-units: micro-CNY for prices, orders, balances and trial credit,
-- micro-USD (list price) for plan allowances.
--
-- Lock order (every writer follows it, so concurrent writers never deadlock):
--   balances(user) → subscriptions → trial_applications → orders → refund_requests / invoices.

-- ---------------------------------------------------------------------------------------------
-- Ledger: more kinds, and one running balance per funding source.
--   source 'wallet'    amounts in micro-CNY, balance_after = balances.balance_micros
--   source 'trial'     amounts in micro-CNY, balance_after = the trial credit left
--   source 'allowance' amounts in micro-USD, balance_after = the current cycle's allowance left
-- ---------------------------------------------------------------------------------------------
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('credit', 'debit', 'usage', 'refund', 'adjustment', 'purchase', 'grant', 'expiry'));
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_source_check
    CHECK (source IN ('wallet', 'allowance', 'trial'));
CREATE INDEX ledger_entries_user_source ON ledger_entries (user_id, source, id);

-- ---------------------------------------------------------------------------------------------
-- Plans (staff edit them; subscriptions keep a snapshot, so edits never change what was bought).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE plans (
    code                TEXT PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_-]{1,31}$'),
    name                TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    audience            TEXT NOT NULL DEFAULT '',
    -- micro-CNY per monthly cycle (0 for pay-as-you-go; enterprise is priced by contract)
    price_micros        BIGINT NOT NULL CHECK (price_micros >= 0),
    -- list-price micro-USD of usage included in each cycle
    allowance_micro_usd BIGINT NOT NULL CHECK (allowance_micro_usd >= 0),
    channels            TEXT[] NOT NULL DEFAULT '{}',
    rpm_limit           INT CHECK (rpm_limit IS NULL OR rpm_limit > 0),
    concurrency_limit   INT CHECK (concurrency_limit IS NULL OR concurrency_limit > 0),
    sla                 BOOLEAN NOT NULL DEFAULT false,
    -- NULL = refunds by negotiation
    refund_window_days  INT CHECK (refund_window_days IS NULL OR refund_window_days >= 0),
    purchasable         BOOLEAN NOT NULL DEFAULT false,
    sort                INT NOT NULL DEFAULT 0,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO plans (code, name, description, audience, price_micros, allowance_micro_usd, channels, rpm_limit, concurrency_limit, sla, refund_window_days, purchasable, sort) VALUES
  ('starter', 'Starter', '$30 of usage at list price every month, Value and Smart channels.',
   'Personal learning / light usage', 99000000, 30000000, ARRAY['value','smart'], 60, 5, false, 7, true, 1),
  ('pro', 'Pro', '$150 of usage at list price every month, every channel.',
   'Small team collaboration / frequent usage', 399000000, 150000000, ARRAY['value','smart','stable'], 300, 20, false, 30, true, 2),
  ('ultra', 'Ultra', '$800 of usage at list price every month, every channel, enterprise-grade SLA.',
   'Enterprise-grade applications / mission-critical workloads', 1999000000, 800000000, ARRAY['value','smart','stable'], 1000, 100, true, NULL, true, 3),
  ('payg', 'Pay-as-you-go', 'No subscription: top up your balance and pay for what you use at the channel rate.',
   'Flexible spending / uncertain usage', 0, 0, ARRAY['value','smart','stable'], NULL, NULL, false, NULL, false, 4),
  ('enterprise', 'Enterprise', 'Custom terms, private deployment, corporate contract and invoices. Send us an enquiry.',
   'Special requirements / large-scale usage', 0, 0, ARRAY['value','smart','stable'], NULL, NULL, true, NULL, false, 5);

-- ---------------------------------------------------------------------------------------------
-- Orders: subscription purchase, renewal, top-up.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE orders (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind              TEXT NOT NULL CHECK (kind IN ('subscription', 'renewal', 'topup')),
    plan_code         TEXT,
    -- the plan as sold (subscription and renewal orders)
    plan_snapshot     JSONB,
    subscription_id   UUID,
    amount_micros     BIGINT NOT NULL CHECK (amount_micros >= 0),
    status            TEXT NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'paid', 'cancelled', 'expired', 'refunded')),
    method            TEXT NOT NULL CHECK (method IN ('alipay', 'wechat', 'bank', 'sandbox', 'balance')),
    reference         TEXT NOT NULL UNIQUE,
    provider_trade_no TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at           TIMESTAMPTZ,
    expires_at        TIMESTAMPTZ NOT NULL,
    closed_at         TIMESTAMPTZ
);
CREATE INDEX orders_user ON orders (user_id, created_at DESC);
CREATE INDEX orders_open ON orders (expires_at) WHERE status = 'created';
CREATE UNIQUE INDEX orders_trade_no ON orders (method, provider_trade_no) WHERE provider_trade_no IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Subscriptions: one active per user; the plan is a snapshot taken at purchase.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE subscriptions (
    id                       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                  UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_code                TEXT NOT NULL,
    plan_name                TEXT NOT NULL,
    plan_snapshot            JSONB NOT NULL,
    price_micros             BIGINT NOT NULL CHECK (price_micros >= 0),
    allowance_micro_usd      BIGINT NOT NULL CHECK (allowance_micro_usd >= 0),
    allowance_used_micro_usd BIGINT NOT NULL DEFAULT 0
        CHECK (allowance_used_micro_usd >= 0 AND allowance_used_micro_usd <= allowance_micro_usd),
    cycle_start              TIMESTAMPTZ NOT NULL,
    cycle_end                TIMESTAMPTZ NOT NULL CHECK (cycle_end > cycle_start),
    -- the paid order of the current cycle (refunds go back through it)
    order_id                 UUID NOT NULL REFERENCES orders(id),
    status                   TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended', 'refunded')),
    pending_plan_code        TEXT REFERENCES plans(code),
    -- a renewal waiting for payment (grace period after cycle_end)
    renewal_order_id         UUID REFERENCES orders(id),
    started_at               TIMESTAMPTZ NOT NULL,
    ended_at                 TIMESTAMPTZ,
    end_reason               TEXT
);
CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (user_id) WHERE status = 'active';
CREATE INDEX subscriptions_due ON subscriptions (cycle_end) WHERE status = 'active';
CREATE INDEX subscriptions_user ON subscriptions (user_id, started_at DESC);

-- ---------------------------------------------------------------------------------------------
-- Refund requests.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE refund_requests (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    subscription_id UUID NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    order_id        UUID NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    amount_micros   BIGINT NOT NULL CHECK (amount_micros >= 0),
    quote           JSONB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    reason          TEXT NOT NULL DEFAULT '',
    staff_note      TEXT NOT NULL DEFAULT '',
    decided_by      UUID REFERENCES users(id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX refund_requests_one_open ON refund_requests (subscription_id) WHERE status = 'pending';
CREATE INDEX refund_requests_user ON refund_requests (user_id, created_at DESC);

-- ---------------------------------------------------------------------------------------------
-- Invoices: an order is invoiced at most once (a rejected request may be made again).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE invoices (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    order_id      UUID NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    amount_micros BIGINT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('personal', 'vat_special')),
    details       JSONB NOT NULL,
    status        TEXT NOT NULL DEFAULT 'requested' CHECK (status IN ('requested', 'issued', 'rejected')),
    number        TEXT,
    issued_on     DATE,
    pdf           BYTEA,
    reject_reason TEXT,
    decided_by    UUID REFERENCES users(id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX invoices_once_per_order ON invoices (order_id) WHERE status <> 'rejected';
CREATE INDEX invoices_user ON invoices (user_id, created_at DESC);

-- ---------------------------------------------------------------------------------------------
-- Trials: one application per user, ever. Approved credit (micro-CNY) is drawn before any other
-- funds and expires unused.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE trial_applications (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          UUID NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'declined', 'expired')),
    amount_micros    BIGINT CHECK (amount_micros IS NULL OR amount_micros > 0),
    expires_at       TIMESTAMPTZ,
    remaining_micros BIGINT NOT NULL DEFAULT 0 CHECK (remaining_micros >= 0),
    staff_note       TEXT NOT NULL DEFAULT '',
    decided_by       UUID REFERENCES users(id) ON DELETE SET NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_at       TIMESTAMPTZ
);
CREATE INDEX trial_applications_pending ON trial_applications (created_at) WHERE status = 'pending';

-- ---------------------------------------------------------------------------------------------
-- Staff audit log (append-only).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE audit_log (
    id       BIGSERIAL PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    staff_id UUID REFERENCES users(id) ON DELETE SET NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    details  JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- ---------------------------------------------------------------------------------------------
-- Funding order of API usage: trial credit → plan allowance → wallet balance.
--
-- The gateway keeps calling the same two SQL functions:
--  * cr_lease_balance grants leases against capacity = wallet + unexpired trial credit +
--    allowance left converted to CNY at the LOWEST rate among the channels of the user's
--    unrevoked keys (every request of the user is charged at that rate or more, so a CNY of
--    capacity never buys more than its share of the allowance: the sum of leases can never
--    exceed what trial + allowance + wallet can pay).
--  * the usage writer inserts the usage rows and then calls cr_settle in the same transaction.
--    An AFTER INSERT statement trigger on usage_records sees exactly the inserted rows (with
--    cost_micro_usd and charge_micros), draws each request from trial credit, then allowance
--    (cost in micro-USD; the part that does not fit goes on pro rata:
--    wallet part = round_half_up(rest_charge × uncovered_usd / rest_usd)), writes one ledger row
--    per user and source, and stages the CNY amount covered. cr_settle debits the wallet only
--    for the rest and consumes the lease by the full charge, as before.
-- ---------------------------------------------------------------------------------------------

-- CNY covered by trial/allowance in the current transaction, per user (consumed by cr_settle).
CREATE UNLOGGED TABLE billing_settle_stage (
    txid           xid8 NOT NULL,
    user_id        UUID NOT NULL,
    covered_micros BIGINT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (txid, user_id)
);

-- Lowest channel rate (micro-CNY per USD) the user's requests can be charged at.
CREATE FUNCTION cr_user_min_rate(p_user UUID) RETURNS BIGINT AS $$
    SELECT COALESCE(
        (SELECT min(c.rate_micros_per_usd) FROM api_keys k JOIN channels c ON c.code = k.channel
          WHERE k.user_id = p_user AND k.revoked_at IS NULL),
        (SELECT min(rate_micros_per_usd) FROM channels),
        1);
$$ LANGUAGE sql STABLE;

-- Trial credit and allowance the gateway may lease on top of the wallet, in micro-CNY.
CREATE FUNCTION cr_extra_capacity(p_user UUID) RETURNS BIGINT AS $$
DECLARE t BIGINT; a BIGINT;
BEGIN
    SELECT COALESCE(sum(remaining_micros), 0) INTO t FROM trial_applications
     WHERE user_id = p_user AND status = 'approved' AND expires_at > now();
    SELECT COALESCE(sum(allowance_micro_usd - allowance_used_micro_usd), 0) INTO a FROM subscriptions
     WHERE user_id = p_user AND status = 'active';
    IF a > 0 THEN
        -- rounded down: capacity must never exceed what the allowance can pay
        a := floor(a::numeric * cr_user_min_rate(p_user) / 1000000)::BIGINT;
    END IF;
    RETURN t + a;
END $$ LANGUAGE plpgsql STABLE;

CREATE OR REPLACE FUNCTION cr_lease_balance(p_instance UUID, p_user UUID, p_need BIGINT, p_want BIGINT)
RETURNS BIGINT AS $$
DECLARE bal BIGINT; held BIGINT; avail BIGINT; g BIGINT;
BEGIN
    SELECT balance_micros INTO bal FROM balances WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
    SELECT COALESCE(sum(amount_micros), 0) INTO held FROM balance_leases WHERE user_id = p_user;
    avail := bal + cr_extra_capacity(p_user) - held;
    IF avail < p_need OR avail <= 0 THEN RETURN 0; END IF;
    g := LEAST(avail, GREATEST(p_want, p_need));
    INSERT INTO balance_leases (instance_id, user_id, amount_micros) VALUES (p_instance, p_user, g)
    ON CONFLICT (instance_id, user_id) DO UPDATE
        SET amount_micros = balance_leases.amount_micros + EXCLUDED.amount_micros, updated_at = now();
    RETURN g;
END $$ LANGUAGE plpgsql;

-- numerator / denominator rounded half up (both non-negative, denominator > 0)
CREATE FUNCTION cr_div_half_up(n NUMERIC, d NUMERIC) RETURNS BIGINT AS $$
    SELECT floor((n * 2 + d) / (d * 2))::BIGINT;
$$ LANGUAGE sql IMMUTABLE;

CREATE FUNCTION cr_usage_draw() RETURNS trigger AS $$
DECLARE
    u UUID; r RECORD;
    t_id UUID; t_left BIGINT; t_drawn BIGINT; t_n INT;
    s_id UUID; a_left BIGINT; a_drawn BIGINT; a_n INT;
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
        SELECT id, allowance_micro_usd - allowance_used_micro_usd INTO s_id, a_left FROM subscriptions
         WHERE user_id = u AND status = 'active' FOR UPDATE;
        SELECT id, remaining_micros INTO t_id, t_left FROM trial_applications
         WHERE user_id = u AND status = 'approved' AND remaining_micros > 0 AND expires_at > now() FOR UPDATE;
        IF s_id IS NULL THEN a_left := 0; END IF;
        IF t_id IS NULL THEN t_left := 0; END IF;
        IF a_left <= 0 AND t_left <= 0 THEN CONTINUE; END IF;
        t_drawn := 0; t_n := 0; a_drawn := 0; a_n := 0; covered := 0;
        FOR r IN SELECT n.charge_micros, n.cost_micro_usd FROM new_rows n
                  WHERE n.user_id = u AND n.charge_micros > 0 ORDER BY n.created_at, n.id LOOP
            c := r.charge_micros;
            t := LEAST(t_left, c);
            IF t > 0 THEN t_left := t_left - t; t_drawn := t_drawn + t; t_n := t_n + 1; END IF;
            rest := c - t;
            covered := covered + t;
            IF rest > 0 AND a_left > 0 AND r.cost_micro_usd > 0 THEN
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
CREATE TRIGGER usage_records_draw AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_draw();

CREATE OR REPLACE FUNCTION cr_settle(p_instance UUID, p_users UUID[], p_amounts BIGINT[], p_counts INT[])
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
        UPDATE balance_leases SET amount_micros = GREATEST(amount_micros - p_amounts[i], 0), updated_at = now()
        WHERE instance_id = p_instance AND user_id = p_users[i];
    END LOOP;
    DELETE FROM billing_settle_stage WHERE txid = pg_current_xact_id();
END $$ LANGUAGE plpgsql;

-- ---------------------------------------------------------------------------------------------
-- Enterprise enquiries (custom terms): the form the console posts; staff follow up.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE enterprise_enquiries (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      UUID REFERENCES users(id) ON DELETE SET NULL,
    company      TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    email        TEXT NOT NULL,
    phone        TEXT NOT NULL DEFAULT '',
    message      TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'contacted', 'closed')),
    staff_note   TEXT NOT NULL DEFAULT '',
    handled_by   UUID REFERENCES users(id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    handled_at   TIMESTAMPTZ
);
CREATE INDEX enterprise_enquiries_open ON enterprise_enquiries (created_at) WHERE status <> 'closed';
