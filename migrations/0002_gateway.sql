-- Gateway and money: channels, model catalogue, API keys, balances + ledger, upstreams,
-- usage records, admin tokens, and the lease tables that let several gateway instances share
-- balances, spend limits, concurrency capacity and request rates without a database round trip
-- per request.
--
-- Money is always BIGINT micro-units: micro-CNY (1 CNY = 1_000_000) for balances and charges,
-- micro-USD for costs. Prices are micro-USD per million tokens (USD 3.00 / MTok = 3_000_000).

-- Any change that a gateway caches is announced on this channel (see gateway::cache).
CREATE OR REPLACE FUNCTION cr_notify(payload TEXT) RETURNS void AS $$
BEGIN
    PERFORM pg_notify('cloudrouter_gateway', payload);
END $$ LANGUAGE plpgsql;

CREATE TABLE channels (
    code                 TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    -- micro-CNY charged per 1 USD of list price (¥0.6/$ = 600000)
    rate_micros_per_usd  BIGINT NOT NULL CHECK (rate_micros_per_usd > 0),
    -- concurrent requests this channel accepts across all gateway instances
    concurrency_capacity INT NOT NULL CHECK (concurrency_capacity > 0),
    sort                 INT NOT NULL DEFAULT 0,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO channels (code, name, description, rate_micros_per_usd, concurrency_capacity, sort) VALUES
  ('value',  'Value',             'Lowest cost, for testing and non-critical work',       600000,  200, 1),
  ('smart',  'Smart',             'Balanced cost and performance for daily development', 1000000, 500, 2),
  ('stable', 'High-Speed Stable', 'Highest stability and speed for production',          5000000, 1000, 3);

CREATE TABLE models (
    id                   TEXT PRIMARY KEY,
    display_name         TEXT NOT NULL,
    family               TEXT NOT NULL,
    -- micro-USD per million tokens
    input_price          BIGINT NOT NULL CHECK (input_price >= 0),
    output_price         BIGINT NOT NULL CHECK (output_price >= 0),
    cache_write_5m_price BIGINT NOT NULL CHECK (cache_write_5m_price >= 0),
    cache_write_1h_price BIGINT NOT NULL CHECK (cache_write_1h_price >= 0),
    cache_read_price     BIGINT NOT NULL CHECK (cache_read_price >= 0),
    -- Claude models tried, in order, when the key allows fallback and this one cannot be served
    fallbacks            TEXT[] NOT NULL DEFAULT '{}',
    enabled              BOOLEAN NOT NULL DEFAULT true,
    released_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    deprecated_at        TIMESTAMPTZ,
    sort                 INT NOT NULL DEFAULT 0,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Seed: list prices (USD / MTok). Cache writes 1.25x (5 minutes) and 2x (1 hour) input,
-- cache reads 0.1x input (Haiku 5.5: 0.01 as listed).
INSERT INTO models (id, display_name, family, input_price, output_price, cache_write_5m_price, cache_write_1h_price, cache_read_price, fallbacks, enabled, released_at, deprecated_at, sort)
SELECT id, name, family, inp, outp, inp * 5 / 4, inp * 2, inp / 10, fb, en, rel::timestamptz, dep::timestamptz, s
FROM (VALUES
  ('claude-opus-5-5',            'Claude Opus 5.5',   'opus',   4000000, 20000000, ARRAY['claude-opus-5','claude-opus-4-8'],   true,  '2026-09-01', NULL, 10),
  ('claude-opus-5',              'Claude Opus 5',     'opus',   5000000, 25000000, ARRAY['claude-opus-5-5','claude-opus-4-8'], true,  '2026-05-01', NULL, 11),
  ('claude-opus-4-8',            'Claude Opus 4.8',   'opus',   5000000, 25000000, ARRAY['claude-opus-4-7','claude-opus-5'],   true,  '2026-03-01', NULL, 12),
  ('claude-opus-4-7',            'Claude Opus 4.7',   'opus',   5000000, 25000000, ARRAY['claude-opus-4-8','claude-opus-4-6'], true,  '2026-01-15', NULL, 13),
  ('claude-opus-4-6',            'Claude Opus 4.6',   'opus',   5000000, 25000000, ARRAY['claude-opus-4-7','claude-opus-4-5-20251101'], true, '2025-12-15', NULL, 14),
  ('claude-opus-4-5-20251101',   'Claude Opus 4.5',   'opus',   5000000, 25000000, ARRAY['claude-opus-4-6'],                   true,  '2025-11-01', '2027-01-22', 15),
  ('claude-opus-4-1',            'Claude Opus 4.1',   'opus',  15000000, 75000000, ARRAY[]::text[],                            true,  '2025-08-05', NULL, 16),
  ('claude-opus-4',              'Claude Opus 4',     'opus',  15000000, 75000000, ARRAY[]::text[],                            true,  '2025-05-22', NULL, 17),
  ('claude-sonnet-5-5',          'Claude Sonnet 5.5', 'sonnet', 2000000, 10000000, ARRAY['claude-sonnet-5','claude-sonnet-4-6'], true, '2026-09-01', NULL, 20),
  ('claude-sonnet-5',            'Claude Sonnet 5',   'sonnet', 2000000, 10000000, ARRAY['claude-sonnet-5-5','claude-sonnet-4-6'], true, '2026-05-01', NULL, 21),
  ('claude-sonnet-4-6',          'Claude Sonnet 4.6', 'sonnet', 3000000, 15000000, ARRAY['claude-sonnet-4-5-20250929','claude-sonnet-5'], true, '2026-02-01', NULL, 22),
  ('claude-sonnet-4-5-20250929', 'Claude Sonnet 4.5', 'sonnet', 3000000, 15000000, ARRAY['claude-sonnet-4-6'],                 true,  '2025-09-29', '2026-11-30', 23),
  ('claude-sonnet-4',            'Claude Sonnet 4',   'sonnet', 3000000, 15000000, ARRAY[]::text[],                            true,  '2025-05-22', NULL, 24),
  ('claude-3-7-sonnet',          'Claude Sonnet 3.7', 'sonnet', 3000000, 15000000, ARRAY[]::text[],                            true,  '2025-02-24', NULL, 25),
  ('claude-haiku-5-5',           'Claude Haiku 5.5',  'haiku',   100000,   500000, ARRAY['claude-haiku-4-5-20251001'],         true,  '2026-09-01', NULL, 30),
  ('claude-haiku-4-5-20251001',  'Claude Haiku 4.5',  'haiku',  1000000,  5000000, ARRAY['claude-haiku-5-5'],                  true,  '2025-10-01', NULL, 31),
  ('claude-3-5-haiku',           'Claude Haiku 3.5',  'haiku',   800000,  4000000, ARRAY[]::text[],                            true,  '2024-10-22', NULL, 32),
  ('claude-fable-5-2',           'Claude Fable 5.2',  'fable',  8000000, 40000000, ARRAY['claude-fable-5-1'],                  true,  '2026-10-01', NULL, 40),
  ('claude-fable-5-1',           'Claude Fable 5.1',  'fable', 10000000, 50000000, ARRAY['claude-fable-5-2','claude-fable-5'], true,  '2026-08-01', NULL, 41),
  ('claude-fable-5',             'Claude Fable 5',    'fable', 10000000, 50000000, ARRAY['claude-fable-5-1'],                  true,  '2026-06-01', NULL, 42),
  ('claude-mythos-5-2',          'Claude Mythos 5.2', 'mythos', 8000000, 40000000, ARRAY['claude-mythos-5-1'],                 true,  '2026-10-01', NULL, 50),
  ('claude-mythos-5-1',          'Claude Mythos 5.1', 'mythos',10000000, 50000000, ARRAY['claude-mythos-5-2','claude-mythos-5'], true, '2026-08-01', NULL, 51),
  ('claude-mythos-5',            'Claude Mythos 5',   'mythos',10000000, 50000000, ARRAY['claude-mythos-5-1'],                 true,  '2026-06-01', NULL, 52)
) AS v(id, name, family, inp, outp, fb, en, rel, dep, s);
-- Haiku 5.5's cache read is listed at USD 0.01 / MTok (0.1x input, exact).
UPDATE models SET cache_read_price = 10000 WHERE id = 'claude-haiku-5-5';

CREATE TABLE api_keys (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    prefix             TEXT NOT NULL,
    secret_hash        BYTEA NOT NULL UNIQUE,
    channel            TEXT NOT NULL REFERENCES channels(code),
    spend_limit_micros BIGINT CHECK (spend_limit_micros IS NULL OR spend_limit_micros >= 0),
    spent_micros       BIGINT NOT NULL DEFAULT 0,
    expires_at         TIMESTAMPTZ,
    allowed_models     TEXT[] NOT NULL DEFAULT '{}',
    allow_fallback     BOOLEAN NOT NULL DEFAULT false,
    rpm_limit          INT CHECK (rpm_limit IS NULL OR rpm_limit > 0),
    concurrency_limit  INT CHECK (concurrency_limit IS NULL OR concurrency_limit > 0),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at       TIMESTAMPTZ,
    revoked_at         TIMESTAMPTZ
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at DESC);

-- Balances: one row per user. balance_micros always equals the sum of the user's ledger rows.
CREATE TABLE balances (
    user_id        UUID PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    balance_micros BIGINT NOT NULL DEFAULT 0 CHECK (balance_micros >= 0),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Append-only. Each balance change is exactly one row, written in the same transaction.
-- `source` names the funding source ('wallet' today; plan allowances later draw first).
CREATE TABLE ledger_entries (
    id                   BIGSERIAL PRIMARY KEY,
    user_id              UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amount_micros        BIGINT NOT NULL,
    balance_after_micros BIGINT NOT NULL,
    kind                 TEXT NOT NULL CHECK (kind IN ('credit', 'debit', 'usage', 'refund', 'adjustment')),
    source               TEXT NOT NULL DEFAULT 'wallet',
    note                 TEXT NOT NULL DEFAULT '',
    actor_id             UUID REFERENCES users(id) ON DELETE SET NULL,
    request_count        INT NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_user ON ledger_entries (user_id, id DESC);

CREATE TABLE upstreams (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name            TEXT NOT NULL UNIQUE,
    base_url        TEXT NOT NULL,
    credential_enc  BYTEA NOT NULL,
    credential_hint TEXT NOT NULL DEFAULT '',
    auth_scheme     TEXT NOT NULL DEFAULT 'x-api-key' CHECK (auth_scheme IN ('x-api-key', 'bearer')),
    channels        TEXT[] NOT NULL DEFAULT '{}',
    -- empty = serves every model
    models          TEXT[] NOT NULL DEFAULT '{}',
    priority        INT NOT NULL DEFAULT 0,
    weight          INT NOT NULL DEFAULT 1 CHECK (weight > 0),
    concurrency_cap INT CHECK (concurrency_cap IS NULL OR concurrency_cap > 0),
    enabled         BOOLEAN NOT NULL DEFAULT true,
    is_demo         BOOLEAN NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per request that passed authentication. Never the prompt or the reply.
CREATE TABLE usage_records (
    id                    TEXT PRIMARY KEY,
    created_at            TIMESTAMPTZ NOT NULL,
    user_id               UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- key and upstream ids are history: no foreign keys, so deleting either never loses usage
    key_id                UUID,
    channel               TEXT NOT NULL,
    endpoint              TEXT NOT NULL,
    requested_model       TEXT NOT NULL,
    served_model          TEXT,
    upstream_id           UUID,
    stream                BOOLEAN NOT NULL,
    status                INT NOT NULL,
    error_type            TEXT,
    outcome               TEXT NOT NULL,
    attempts              INT NOT NULL DEFAULT 0,
    input_tokens          BIGINT NOT NULL DEFAULT 0,
    output_tokens         BIGINT NOT NULL DEFAULT 0,
    cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_micro_usd        BIGINT NOT NULL DEFAULT 0,
    charge_micros         BIGINT NOT NULL DEFAULT 0,
    latency_ms            INT NOT NULL DEFAULT 0,
    ttft_ms               INT
);
CREATE INDEX usage_records_user ON usage_records (user_id, created_at DESC);
CREATE INDEX usage_records_key ON usage_records (key_id, created_at DESC);
CREATE INDEX usage_records_time ON usage_records (created_at DESC);

CREATE TABLE admin_tokens (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   BYTEA NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- ---------------------------------------------------------------------------------------------
-- Leases. A gateway instance takes a slice of a shared budget (balance, key spend limit,
-- concurrency slots, a minute's requests) in one statement, then serves requests from that slice
-- in memory. The sum of all slices never exceeds the budget, so several instances together never
-- overspend. A dead instance's leases are reaped when its heartbeat goes stale.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE gateway_instances (
    id           UUID PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE balance_leases (
    instance_id   UUID NOT NULL REFERENCES gateway_instances(id) ON DELETE CASCADE,
    user_id       UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amount_micros BIGINT NOT NULL CHECK (amount_micros >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, user_id)
);
CREATE INDEX balance_leases_user ON balance_leases (user_id);

CREATE TABLE key_leases (
    instance_id   UUID NOT NULL REFERENCES gateway_instances(id) ON DELETE CASCADE,
    key_id        UUID NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    amount_micros BIGINT NOT NULL CHECK (amount_micros >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, key_id)
);
CREATE INDEX key_leases_key ON key_leases (key_id);

CREATE TABLE slot_leases (
    instance_id UUID NOT NULL REFERENCES gateway_instances(id) ON DELETE CASCADE,
    scope       TEXT NOT NULL,
    slots       INT NOT NULL CHECK (slots >= 0),
    PRIMARY KEY (instance_id, scope)
);
CREATE INDEX slot_leases_scope ON slot_leases (scope);

CREATE TABLE rate_windows (
    scope        TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    used         INT NOT NULL,
    PRIMARY KEY (scope, window_start)
);

-- Takes up to p_want (at least p_need, else nothing) of a user's available balance.
CREATE FUNCTION cr_lease_balance(p_instance UUID, p_user UUID, p_need BIGINT, p_want BIGINT)
RETURNS BIGINT AS $$
DECLARE bal BIGINT; held BIGINT; avail BIGINT; g BIGINT;
BEGIN
    SELECT balance_micros INTO bal FROM balances WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
    SELECT COALESCE(sum(amount_micros), 0) INTO held FROM balance_leases WHERE user_id = p_user;
    avail := bal - held;
    IF avail < p_need OR avail <= 0 THEN RETURN 0; END IF;
    g := LEAST(avail, GREATEST(p_want, p_need));
    INSERT INTO balance_leases (instance_id, user_id, amount_micros) VALUES (p_instance, p_user, g)
    ON CONFLICT (instance_id, user_id) DO UPDATE
        SET amount_micros = balance_leases.amount_micros + EXCLUDED.amount_micros, updated_at = now();
    RETURN g;
END $$ LANGUAGE plpgsql;

-- Same for a key's spend limit (limit - spent - leased).
CREATE FUNCTION cr_lease_key(p_instance UUID, p_key UUID, p_need BIGINT, p_want BIGINT)
RETURNS BIGINT AS $$
DECLARE lim BIGINT; spent BIGINT; held BIGINT; avail BIGINT; g BIGINT;
BEGIN
    SELECT spend_limit_micros, spent_micros INTO lim, spent FROM api_keys WHERE id = p_key FOR UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
    IF lim IS NULL THEN RETURN GREATEST(p_want, p_need); END IF;
    SELECT COALESCE(sum(amount_micros), 0) INTO held FROM key_leases WHERE key_id = p_key;
    avail := lim - spent - held;
    IF avail < p_need OR avail <= 0 THEN RETURN 0; END IF;
    g := LEAST(avail, GREATEST(p_want, p_need));
    INSERT INTO key_leases (instance_id, key_id, amount_micros) VALUES (p_instance, p_key, g)
    ON CONFLICT (instance_id, key_id) DO UPDATE
        SET amount_micros = key_leases.amount_micros + EXCLUDED.amount_micros, updated_at = now();
    RETURN g;
END $$ LANGUAGE plpgsql;

-- Concurrency slots of a scope ('channel:smart', 'key:<uuid>', 'upstream:<uuid>').
CREATE FUNCTION cr_lease_slots(p_instance UUID, p_scope TEXT, p_capacity INT, p_need INT, p_want INT)
RETURNS INT AS $$
DECLARE held INT; avail INT; g INT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('cr_slots:' || p_scope));
    SELECT COALESCE(sum(slots), 0) INTO held FROM slot_leases WHERE scope = p_scope;
    avail := p_capacity - held;
    IF avail < p_need OR avail <= 0 THEN RETURN 0; END IF;
    g := LEAST(avail, GREATEST(p_want, p_need));
    INSERT INTO slot_leases (instance_id, scope, slots) VALUES (p_instance, p_scope, g)
    ON CONFLICT (instance_id, scope) DO UPDATE SET slots = slot_leases.slots + EXCLUDED.slots;
    RETURN g;
END $$ LANGUAGE plpgsql;

-- Requests of the current minute window of a scope.
CREATE FUNCTION cr_take_rate(p_scope TEXT, p_window TIMESTAMPTZ, p_limit INT, p_want INT)
RETURNS INT AS $$
DECLARE u INT; g INT;
BEGIN
    INSERT INTO rate_windows (scope, window_start, used) VALUES (p_scope, p_window, 0)
    ON CONFLICT (scope, window_start) DO NOTHING;
    SELECT used INTO u FROM rate_windows WHERE scope = p_scope AND window_start = p_window FOR UPDATE;
    g := LEAST(p_limit - u, p_want);
    IF g <= 0 THEN RETURN 0; END IF;
    UPDATE rate_windows SET used = used + g WHERE scope = p_scope AND window_start = p_window;
    RETURN g;
END $$ LANGUAGE plpgsql;

-- Settles a batch of usage charges: one balance update and one ledger row per user, in user order
-- (no deadlocks between instances), never below zero, and consumes the instance's lease.
CREATE FUNCTION cr_settle(p_instance UUID, p_users UUID[], p_amounts BIGINT[], p_counts INT[])
RETURNS void AS $$
DECLARE i INT; bal BIGINT; d BIGINT;
BEGIN
    FOR i IN 1 .. COALESCE(array_length(p_users, 1), 0) LOOP
        IF p_amounts[i] <= 0 THEN CONTINUE; END IF;
        SELECT balance_micros INTO bal FROM balances WHERE user_id = p_users[i] FOR UPDATE;
        IF NOT FOUND THEN CONTINUE; END IF;
        d := LEAST(p_amounts[i], bal);
        UPDATE balances SET balance_micros = balance_micros - d, updated_at = now() WHERE user_id = p_users[i];
        IF d > 0 THEN
            INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, request_count)
            VALUES (p_users[i], -d, bal - d, 'usage', 'wallet', 'API usage', p_counts[i]);
        END IF;
        UPDATE balance_leases SET amount_micros = GREATEST(amount_micros - p_amounts[i], 0), updated_at = now()
        WHERE instance_id = p_instance AND user_id = p_users[i];
    END LOOP;
END $$ LANGUAGE plpgsql;

-- ---------------------------------------------------------------------------------------------
-- Cache invalidation for every gateway instance, whoever makes the change.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION cr_api_keys_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM cr_notify('key:' || encode(OLD.secret_hash, 'hex'));
        RETURN OLD;
    END IF;
    -- spent_micros / last_used_at move with every settlement and are not cached
    IF TG_OP = 'UPDATE' AND NEW.revoked_at IS NOT DISTINCT FROM OLD.revoked_at
       AND NEW.expires_at IS NOT DISTINCT FROM OLD.expires_at
       AND NEW.spend_limit_micros IS NOT DISTINCT FROM OLD.spend_limit_micros
       AND NEW.allowed_models = OLD.allowed_models AND NEW.allow_fallback = OLD.allow_fallback
       AND NEW.rpm_limit IS NOT DISTINCT FROM OLD.rpm_limit
       AND NEW.concurrency_limit IS NOT DISTINCT FROM OLD.concurrency_limit
       AND NEW.channel = OLD.channel AND NEW.name = OLD.name THEN
        RETURN NEW;
    END IF;
    PERFORM cr_notify('key:' || encode(NEW.secret_hash, 'hex'));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION cr_api_keys_notify();

CREATE FUNCTION cr_users_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM cr_notify('user:' || OLD.id::text);
        RETURN OLD;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status OR NEW.role IS DISTINCT FROM OLD.role THEN
        PERFORM cr_notify('user:' || NEW.id::text);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER users_notify AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION cr_users_notify();

CREATE FUNCTION cr_config_notify() RETURNS trigger AS $$
BEGIN
    PERFORM cr_notify(TG_ARGV[0]);
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER upstreams_notify AFTER INSERT OR UPDATE OR DELETE ON upstreams
    FOR EACH STATEMENT EXECUTE FUNCTION cr_config_notify('upstreams');
CREATE TRIGGER models_notify AFTER INSERT OR UPDATE OR DELETE ON models
    FOR EACH STATEMENT EXECUTE FUNCTION cr_config_notify('catalogue');
CREATE TRIGGER channels_notify AFTER INSERT OR UPDATE OR DELETE ON channels
    FOR EACH STATEMENT EXECUTE FUNCTION cr_config_notify('catalogue');
