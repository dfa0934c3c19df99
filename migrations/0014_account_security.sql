-- Account security (issue #12): throttling that holds across instances, sessions that end when
-- the password changes, and two-factor sign-in (TOTP).

-- One row per throttled key ("pair:<email>|<address>", "addr:<address>", "signup:<address>",
-- "code:<user>|<address>"). Attempts are counted by one atomic upsert each (see core throttle.rs).
CREATE TABLE auth_throttle (
    key          TEXT PRIMARY KEY,
    attempts     INT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX auth_throttle_window ON auth_throttle (window_start);

-- Replaced by auth_throttle: counting after the check let parallel guesses through.
DROP TABLE login_failures;

-- A session is valid only at the epoch it was signed in at: changing the password moves it on.
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;

-- TOTP (RFC 6238). Secrets are AES-256-GCM under the server secret; a secret being set up waits
-- in totp_pending_enc until a code confirms it. totp_last_step is the last time step a code was
-- accepted for: a code is never accepted twice.
ALTER TABLE users
    ADD COLUMN totp_secret_enc  BYTEA,
    ADD COLUMN totp_pending_enc BYTEA,
    ADD COLUMN totp_last_step   BIGINT;

-- One-time recovery codes for an account with TOTP, stored as SHA-256 (they are random, 50 bits).
CREATE TABLE recovery_codes (
    user_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at   TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);
