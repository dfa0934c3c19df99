-- The public status page (/status, /status.json; server/core/src/status.rs, docs/status.md):
-- a rollup of availability and latency per channel and hour, and the incidents staff post.
--
-- status_hourly (hour, channel) counts the requests that count toward availability and those of
-- them that failed, and holds latency histograms of the requests answered in full. The usage
-- rollups of 0005 cannot give these: their `errors` is every status >= 400, a customer's own 401,
-- 402 or 429 included, and their histograms cover every request, refusals included.
--
-- Classification of a usage record (the definition docs/status.md publishes; change both together):
--   * not counted — the customer's own refusals: a 4xx answered to the client (bad request,
--     key, balance, the key's rate or concurrency limit, an upstream's refusal of the request
--     itself), except a 429 whose outcome is 'upstream_error' (every upstream was rate limited:
--     the relay had no capacity, not the customer's limit);
--   * succeeded — counted, status < 400 and outcome 'ok' or 'client_closed' (the client left a
--     working answer);
--   * failed — every other counted request: a 5xx (gateway or upstream error, 502/503/504, 529
--     overloaded or the channel at capacity, the upstream's timeout), an upstream 429 as above,
--     or an answer that began and then broke (outcome upstream_error, upstream_cut, idle_timeout,
--     shutdown).
--   * latency_hist: latency_ms of counted `messages` requests with outcome 'ok' (the whole
--     request, arrival to last byte); ttft_hist: ttft_ms of those that streamed. Same 32 buckets
--     as 0005 (cr_ms_bucket; insights.rs HIST_EDGES_MS).
--
-- Kept exact like 0005's and 0007's rollups: statement-level triggers on usage_records in the
-- writing transaction, from the transition tables (DELETE subtracts, UPDATE subtracts and adds,
-- TRUNCATE empties), rows upserted in key order. Only counted rows reach the rollup, so a row
-- whose `requests` falls to 0 is empty and is removed. Hours are UTC (date_bin, independent of
-- the session's TimeZone). A few rows an hour: the page reads at most 3 channels × 2160 hours.

CREATE TABLE status_hourly (
    hour         TIMESTAMPTZ NOT NULL,
    channel      TEXT NOT NULL,
    requests     BIGINT NOT NULL,
    failures     BIGINT NOT NULL,
    latency_hist INT[] NOT NULL,
    ttft_hist    INT[] NOT NULL,
    PRIMARY KEY (hour, channel)
) WITH (fillfactor = 70);  -- room for HOT updates of the current hour's rows

-- The upsert of the counted rows of relation `rel` (a transition table or usage_records) with
-- sign 1 or -1. The rows are first counted per (hour, channel, latency bucket, TTFT bucket), a few
-- dozen groups per batch, and the 2 × 32 histogram counts are taken over those groups: 32 FILTER
-- counts per row, as 0005 does, measured ~4x slower here on 500-row batches.
CREATE FUNCTION cr_status_rollup_sql(rel TEXT, sign INT) RETURNS TEXT AS $$
DECLARE
    lh TEXT; th TEXT; add_l TEXT; add_t TEXT;
BEGIN
    SELECT 'ARRAY[' || string_agg(format('%s * COALESCE(sum(g.n) FILTER (WHERE g.lb = %s), 0)', sign, i), ', ' ORDER BY i) || ']::int[]',
           'ARRAY[' || string_agg(format('%s * COALESCE(sum(g.n) FILTER (WHERE g.tb = %s), 0)', sign, i), ', ' ORDER BY i) || ']::int[]',
           'ARRAY[' || string_agg(format('t.latency_hist[%s] + EXCLUDED.latency_hist[%s]', i + 1, i + 1), ', ' ORDER BY i) || ']',
           'ARRAY[' || string_agg(format('t.ttft_hist[%s] + EXCLUDED.ttft_hist[%s]', i + 1, i + 1), ', ' ORDER BY i) || ']'
      INTO lh, th, add_l, add_t
      FROM generate_series(0, 31) i;
    RETURN format($f$INSERT INTO status_hourly AS t (hour, channel, requests, failures, latency_hist, ttft_hist)
        SELECT g.hour, g.channel, %1$s * sum(g.n), %1$s * sum(g.failed), %2$s, %3$s
        FROM (SELECT date_bin('1 hour', x.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, x.channel COLLATE "C" AS channel,
                     CASE WHEN x.outcome = 'ok' AND x.status < 400 AND x.endpoint = 'messages' THEN cr_ms_bucket(x.latency_ms) END AS lb,
                     CASE WHEN x.outcome = 'ok' AND x.status < 400 AND x.endpoint = 'messages' THEN cr_ms_bucket(x.ttft_ms) END AS tb,
                     count(*)::int AS n,
                     (count(*) FILTER (WHERE NOT (x.status < 400 AND x.outcome IN ('ok', 'client_closed'))))::int AS failed
                FROM %4$s x
               WHERE x.status NOT BETWEEN 400 AND 499 OR (x.status = 429 AND x.outcome = 'upstream_error')
               GROUP BY 1, 2, 3, 4) g
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (hour, channel) DO UPDATE SET requests = t.requests + EXCLUDED.requests,
            failures = t.failures + EXCLUDED.failures, latency_hist = %5$s, ttft_hist = %6$s$f$,
        sign, lh, th, rel, add_l, add_t);
END $$ LANGUAGE plpgsql IMMUTABLE;

-- The INSERT path (the usage writer's) is static SQL, planned once per session.
DO $do$
BEGIN
    EXECUTE format($f$
CREATE FUNCTION cr_status_rollup() RETURNS trigger AS $body$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE status_hourly;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        %s;
        RETURN NULL;
    END IF;
    EXECUTE cr_status_rollup_sql('old_rows', -1);
    IF TG_OP = 'UPDATE' THEN
        EXECUTE cr_status_rollup_sql('new_rows', 1);
    END IF;
    DELETE FROM status_hourly WHERE requests = 0
       AND hour IN (SELECT DISTINCT date_bin('1 hour', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') FROM old_rows);
    RETURN NULL;
END $body$ LANGUAGE plpgsql$f$, cr_status_rollup_sql('new_rows', 1));
END $do$;

CREATE TRIGGER usage_records_status_ins AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_status_rollup();
CREATE TRIGGER usage_records_status_del AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_status_rollup();
CREATE TRIGGER usage_records_status_upd AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_status_rollup();
CREATE TRIGGER usage_records_status_trunc AFTER TRUNCATE ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION cr_status_rollup();

-- The operator's repair tool rebuilds this rollup too (under the same SHARE lock that keeps
-- writes out between the truncate and the rebuild).
CREATE OR REPLACE FUNCTION cr_usage_rollup_rebuild() RETURNS void AS $$
DECLARE s TEXT;
BEGIN
    LOCK TABLE usage_records IN SHARE MODE;
    TRUNCATE usage_hourly, usage_hourly_global, usage_daily_key, status_hourly;
    FOREACH s IN ARRAY cr_usage_rollup_sql('usage_records', 1) || cr_usage_daily_key_sql('usage_records', 1)
        || cr_status_rollup_sql('usage_records', 1) LOOP
        EXECUTE s;
    END LOOP;
END $$ LANGUAGE plpgsql;

-- Backfill: CREATE TRIGGER above locks usage_records against writes until this migration
-- commits, so no row is missed or counted twice.
DO $$ BEGIN EXECUTE cr_status_rollup_sql('usage_records', 1); END $$;

-- Incidents staff post on the status page. Staff write the title and each update in English,
-- Chinese or both; the page shows the reader's language and falls back to the other.
-- `status` and `impact` are the latest update's; `resolved_at` is set while the status is
-- 'resolved'. `channels` names the affected channels (empty: none in particular).
CREATE TABLE incidents (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    title_en    TEXT NOT NULL,
    title_zh    TEXT NOT NULL,
    impact      TEXT NOT NULL CHECK (impact IN ('minor', 'major')),
    channels    TEXT[] NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    started_at  TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    CHECK (title_en <> '' OR title_zh <> ''),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE INDEX incidents_open ON incidents (started_at) WHERE resolved_at IS NULL;
CREATE INDEX incidents_resolved ON incidents (resolved_at) WHERE resolved_at IS NOT NULL;

CREATE TABLE incident_updates (
    id          BIGSERIAL PRIMARY KEY,
    incident_id UUID NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    status      TEXT NOT NULL CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    message_en  TEXT NOT NULL,
    message_zh  TEXT NOT NULL,
    posted_at   TIMESTAMPTZ NOT NULL,
    -- who posted it (the audit log keeps the same); history outlives the account
    posted_by   UUID REFERENCES users(id) ON DELETE SET NULL,
    CHECK (message_en <> '' OR message_zh <> '')
);
CREATE INDEX incident_updates_incident ON incident_updates (incident_id, posted_at);
