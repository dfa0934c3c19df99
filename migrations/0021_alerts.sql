-- Alerts (issue #14, "Telling people"): staff alerts with their history, customers' alert
-- settings, and the outbox every instance delivers them from (server/core/src/alerts/).
-- Nothing here runs on the request path: staff conditions are written by a background task of
-- each instance, customer crossings by row triggers that fire only on the crossing itself (their
-- WHEN clauses read only the row), inside the transaction that moved the money.

-- ---------------------------------------------------------------------------------------------
-- Staff alerts: one row per occurrence of a condition. At most one is open per (kind, subject),
-- whichever instance saw it first, so N instances seeing one upstream fail open one alert.
-- `clear_since`: the condition was seen gone at this time; the alert resolves once it has stayed
-- gone for the settle time (a condition that flaps inside it sends nothing new).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE staff_alerts (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    subject_name TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    opened_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    clear_since  TIMESTAMPTZ,
    resolved_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX staff_alerts_one_open ON staff_alerts (kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX staff_alerts_recent ON staff_alerts (opened_at DESC);

-- ---------------------------------------------------------------------------------------------
-- The outbox: one row per notice (an alert opened or resolved, a customer's crossing), delivered
-- by mail (rendered then, queued in mail_outbox, which retries SMTP on its own) and by signed
-- webhook POST, with retries and backoff. A sender claims due rows by moving next_at on (a lease).
-- user_id NULL: a staff notice. The webhook's target and secret are read when it is sent.
-- Amounts in `data` are decimals with six places, as the JSON APIs carry them.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE alert_outbox (
    id           BIGSERIAL PRIMARY KEY,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_id      UUID REFERENCES users (id) ON DELETE CASCADE,
    alert_id     BIGINT REFERENCES staff_alerts (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('opened', 'resolved', 'reached')),
    subject      TEXT NOT NULL DEFAULT '',
    subject_name TEXT NOT NULL DEFAULT '',
    detail       TEXT NOT NULL DEFAULT '',
    data         JSONB NOT NULL DEFAULT '{}',
    mail_due     BOOLEAN NOT NULL DEFAULT true,
    webhook_due  BOOLEAN NOT NULL DEFAULT true,
    attempts     INT NOT NULL DEFAULT 0,
    next_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    done_at      TIMESTAMPTZ,
    failed_at    TIMESTAMPTZ,
    last_error   TEXT,
    CHECK ((user_id IS NULL) = (alert_id IS NOT NULL))
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_at) WHERE done_at IS NULL AND failed_at IS NULL;
CREATE INDEX alert_outbox_user ON alert_outbox (user_id, id DESC) WHERE user_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Customer settings: the low-balance threshold lives on the balance row so that the trigger's
-- WHEN clause needs nothing else; the webhook's signing secret is encrypted like upstream
-- credentials (crypto.rs), shown to the customer once.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE balances ADD COLUMN low_balance_micros BIGINT CHECK (low_balance_micros IS NULL OR low_balance_micros > 0);
ALTER TABLE users ADD COLUMN alert_webhook_url TEXT,
                  ADD COLUMN alert_webhook_secret_enc BYTEA,
                  ADD CONSTRAINT users_alert_webhook CHECK ((alert_webhook_url IS NULL) = (alert_webhook_secret_enc IS NULL));
-- When the key's spending-limit notice went out; cleared when the limit is raised or removed
-- (re-armed).
ALTER TABLE api_keys ADD COLUMN limit_alerted_at TIMESTAMPTZ;

-- A micro-unit amount as a decimal with six places ("12.500000"), integers only.
CREATE FUNCTION cr_micros_decimal(m BIGINT) RETURNS TEXT AS $$
    SELECT CASE WHEN m < 0 THEN '-' ELSE '' END || (abs(m) / 1000000)::text || '.' || lpad((abs(m) % 1000000)::text, 6, '0')
$$ LANGUAGE sql IMMUTABLE;

-- Low balance: the wallet went below the customer's threshold (or the threshold was set above
-- it). Re-armed by construction: it fires again only after the balance was back at or above it.
CREATE FUNCTION cr_alert_low_balance() RETURNS trigger AS $$
BEGIN
    INSERT INTO alert_outbox (user_id, kind, status, data)
    VALUES (NEW.user_id, 'low_balance', 'reached',
            jsonb_build_object('balance', cr_micros_decimal(NEW.balance_micros),
                               'threshold', cr_micros_decimal(NEW.low_balance_micros), 'currency', 'CNY'));
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER balances_low_alert AFTER UPDATE OF balance_micros, low_balance_micros ON balances FOR EACH ROW
    WHEN (NEW.balance_micros < NEW.low_balance_micros
          AND NOT coalesce(OLD.balance_micros < OLD.low_balance_micros, false))
    EXECUTE FUNCTION cr_alert_low_balance();
CREATE TRIGGER balances_low_alert_new AFTER INSERT ON balances FOR EACH ROW
    WHEN (NEW.balance_micros < NEW.low_balance_micros)
    EXECUTE FUNCTION cr_alert_low_balance();

-- Plan allowance at 80 % and at 100 % of the cycle's allowance, by usage (an allowance that
-- expires at the cycle's end is not used up: billing sets cloudrouter.allowance_expiry then).
-- A usage that crosses both sends the 100 % notice only. A new cycle starts from zero: re-armed.
CREATE FUNCTION cr_alert_allowance() RETURNS trigger AS $$
BEGIN
    INSERT INTO alert_outbox (user_id, kind, status, subject, subject_name, data)
    VALUES (NEW.user_id,
            CASE WHEN NEW.allowance_used_micro_usd >= NEW.allowance_micro_usd THEN 'allowance_100' ELSE 'allowance_80' END,
            'reached', NEW.order_id::text, NEW.plan_name,
            jsonb_build_object('plan', NEW.plan_name, 'used', cr_micros_decimal(NEW.allowance_used_micro_usd),
                               'allowance', cr_micros_decimal(NEW.allowance_micro_usd), 'currency', 'USD',
                               'cycle_end', NEW.cycle_end));
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER subscriptions_allowance_alert AFTER UPDATE OF allowance_used_micro_usd ON subscriptions FOR EACH ROW
    WHEN (NEW.allowance_micro_usd > 0 AND NEW.cycle_start = OLD.cycle_start
          AND current_setting('cloudrouter.allowance_expiry', true) IS DISTINCT FROM 'on'
          AND ((NEW.allowance_used_micro_usd * 5 >= NEW.allowance_micro_usd * 4
                AND OLD.allowance_used_micro_usd * 5 < OLD.allowance_micro_usd * 4)
               OR (NEW.allowance_used_micro_usd >= NEW.allowance_micro_usd
                   AND OLD.allowance_used_micro_usd < OLD.allowance_micro_usd)))
    EXECUTE FUNCTION cr_alert_allowance();

-- A key's spending limit reached: by its spend (settlement), or by a request it refused for the
-- limit (the gateway reports those off the request path; see alerts::customer::key_limit_refused).
-- Once per limit: limit_alerted_at is set with the notice and cleared when the limit is raised.
CREATE FUNCTION cr_alert_key_limit(p_key UUID, p_user UUID, p_name TEXT, p_limit BIGINT, p_spent BIGINT) RETURNS void AS $$
    INSERT INTO alert_outbox (user_id, kind, status, subject, subject_name, data)
    VALUES (p_user, 'key_limit', 'reached', p_key::text, p_name,
            jsonb_build_object('key', p_name, 'limit', cr_micros_decimal(p_limit), 'spent', cr_micros_decimal(p_spent),
                               'currency', 'CNY'))
$$ LANGUAGE sql;
CREATE FUNCTION cr_api_keys_limit_alert() RETURNS trigger AS $$
BEGIN
    IF NEW.spend_limit_micros IS DISTINCT FROM OLD.spend_limit_micros
       AND (NEW.spend_limit_micros IS NULL OR NEW.spend_limit_micros > OLD.spend_limit_micros) THEN
        NEW.limit_alerted_at := NULL;
    END IF;
    IF NEW.spend_limit_micros IS NOT NULL AND NEW.spent_micros >= NEW.spend_limit_micros AND NEW.limit_alerted_at IS NULL
       AND NEW.revoked_at IS NULL THEN
        NEW.limit_alerted_at := now();
        PERFORM cr_alert_key_limit(NEW.id, NEW.user_id, NEW.name, NEW.spend_limit_micros, NEW.spent_micros);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER api_keys_limit_alert BEFORE UPDATE OF spent_micros, spend_limit_micros ON api_keys FOR EACH ROW
    WHEN (NEW.spend_limit_micros IS DISTINCT FROM OLD.spend_limit_micros
          OR (NEW.spend_limit_micros IS NOT NULL AND NEW.spent_micros >= NEW.spend_limit_micros AND NEW.limit_alerted_at IS NULL))
    EXECUTE FUNCTION cr_api_keys_limit_alert();
