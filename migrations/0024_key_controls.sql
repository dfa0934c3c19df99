-- Per-key controls (issue #17): an IP allow-list (addresses and CIDR blocks, IPv4 and IPv6, in
-- canonical text; empty: any address), tokens per minute, and which clients may use the key. And
-- a plan's tokens per minute, across the plan's channels (in the plan and its snapshots).
ALTER TABLE api_keys
    ADD COLUMN ip_allow  TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN tpm_limit INT CHECK (tpm_limit IS NULL OR tpm_limit > 0),
    ADD COLUMN clients   TEXT NOT NULL DEFAULT 'any' CHECK (clients IN ('any', 'claude_code', 'sdk'));

ALTER TABLE plans ADD COLUMN tpm_limit INT CHECK (tpm_limit IS NULL OR tpm_limit > 0);
