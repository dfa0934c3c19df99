-- Accounts: customers and support staff, and the record of failed logins used for throttling.
CREATE TABLE users (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'staff')),
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    locale        TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Emails are compared case-insensitively; the stored form keeps what the user typed.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE login_failures (
    id          BIGSERIAL PRIMARY KEY,
    email       TEXT NOT NULL,
    ip          TEXT NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (lower(email), failed_at);
CREATE INDEX login_failures_ip ON login_failures (ip, failed_at);
