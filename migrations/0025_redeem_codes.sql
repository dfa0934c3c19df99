-- Redeem codes (issue #17): staff generate batches of one-time codes, each batch of one kind —
-- a balance amount, trial credit, or a plan for some months — and customers redeem them on the
-- Billing page. See server/core/src/billing/redeem.rs.
--
-- A code is never stored: only the SHA-256 of its normalised form (upper case, no dashes) and its
-- first four characters for staff to recognise it, so a leak of this table hands out no code.
-- Lock order (extends 0004's): balances(user) → redeem_codes → subscriptions → trial_applications → orders.

CREATE TABLE redeem_batches (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    kind          TEXT NOT NULL CHECK (kind IN ('balance', 'trial', 'plan')),
    -- micro-CNY credited (balance) or granted as trial credit (trial)
    amount_micros BIGINT CHECK (amount_micros > 0),
    -- trial credit stays usable this many days after the redemption
    trial_days    INT CHECK (trial_days BETWEEN 1 AND 365),
    plan_code     TEXT REFERENCES plans(code),
    plan_months   INT CHECK (plan_months BETWEEN 1 AND 12),
    note          TEXT NOT NULL DEFAULT '',
    -- codes of the batch are refused from then on (none: they never expire)
    expires_at    TIMESTAMPTZ,
    created_by    UUID REFERENCES users(id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (CASE kind
        WHEN 'balance' THEN amount_micros IS NOT NULL AND trial_days IS NULL AND plan_code IS NULL AND plan_months IS NULL
        WHEN 'trial' THEN amount_micros IS NOT NULL AND trial_days IS NOT NULL AND plan_code IS NULL AND plan_months IS NULL
        ELSE amount_micros IS NULL AND trial_days IS NULL AND plan_code IS NOT NULL AND plan_months IS NOT NULL
    END)
);

CREATE TABLE redeem_codes (
    id          BIGSERIAL PRIMARY KEY,
    batch_id    UUID NOT NULL REFERENCES redeem_batches(id) ON DELETE CASCADE,
    code_hash   BYTEA NOT NULL UNIQUE CHECK (length(code_hash) = 32),
    prefix      TEXT NOT NULL,
    redeemed_by UUID REFERENCES users(id) ON DELETE SET NULL,
    redeemed_at TIMESTAMPTZ,
    voided_at   TIMESTAMPTZ,
    voided_by   UUID REFERENCES users(id) ON DELETE SET NULL,
    CHECK (redeemed_at IS NULL OR voided_at IS NULL)
);
CREATE INDEX redeem_codes_batch ON redeem_codes (batch_id, id);

-- A plan code's subscription is paid by a ¥0 order of this method.
ALTER TABLE orders DROP CONSTRAINT orders_method_check;
ALTER TABLE orders ADD CONSTRAINT orders_method_check
    CHECK (method IN ('alipay', 'wechat', 'bank', 'sandbox', 'balance', 'redeem_code'));
