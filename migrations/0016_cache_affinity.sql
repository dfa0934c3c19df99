-- Cache-aware routing (docs/gateway.md, "Cache-aware routing").
--
-- A conversation's upstream is a deterministic choice (weighted rendezvous hashing of the
-- conversation key over the channel's upstreams), so every instance picks the same one with no
-- shared state. Only when a conversation had to move (its upstream failed, was saturated or out of
-- rotation, and another answered) is the move written here and announced by NOTIFY: instances keep
-- the overrides in memory, so the request path never reads this table.
CREATE TABLE affinity_overrides (
    conversation BYTEA PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    upstream_id  UUID NOT NULL REFERENCES upstreams(id) ON DELETE CASCADE,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX affinity_overrides_user ON affinity_overrides (user_id);
CREATE INDEX affinity_overrides_expiry ON affinity_overrides (expires_at);

-- Per channel: how long a saturated sticky upstream is waited for before the request moves
-- (0 = availability first: move at once).
ALTER TABLE channels ADD COLUMN affinity_wait_ms INT NOT NULL DEFAULT 0
    CHECK (affinity_wait_ms >= 0 AND affinity_wait_ms <= 60000);
UPDATE channels SET affinity_wait_ms = CASE code WHEN 'value' THEN 3000 WHEN 'smart' THEN 1000 ELSE 0 END;
