-- Sign-up confirmation and password reset by emailed one-time links (issue #12), and the mail
-- outbox every instance sends from.

-- An account exists only once its email is confirmed: a sign-up waits here (with its password
-- hash) until the link mailed to the address is opened, so nobody can claim an address they do
-- not read, and answering a sign-up never says whether the address already has an account.
-- Reset links name the account. Only a SHA-256 of each token is stored; the token is in the mail.
CREATE TABLE email_links (
    token_hash    TEXT PRIMARY KEY,
    purpose       TEXT NOT NULL CHECK (purpose IN ('signup', 'reset')),
    email         TEXT NOT NULL,
    user_id       UUID REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT,
    locale        TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ,
    CHECK ((purpose = 'signup') = (password_hash IS NOT NULL AND user_id IS NULL)),
    CHECK ((purpose = 'reset') = (user_id IS NOT NULL))
);
CREATE INDEX email_links_expiry ON email_links (expires_at);
CREATE INDEX email_links_user ON email_links (user_id) WHERE user_id IS NOT NULL;

-- When the account's address was last proven by opening a mailed link (NULL: created by staff or
-- before confirmation existed).
ALTER TABLE users ADD COLUMN email_verified_at TIMESTAMPTZ;

-- Mail waiting to be sent. A sender claims a row by moving next_at on (a lease), sends, and then
-- drops the body (it holds a one-time link): what stays is who was mailed what kind of mail when.
CREATE TABLE mail_outbox (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL,
    to_addr    TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts   INT NOT NULL DEFAULT 0,
    sent_at    TIMESTAMPTZ,
    failed_at  TIMESTAMPTZ,
    last_error TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_at) WHERE sent_at IS NULL AND failed_at IS NULL;
