-- Staff API tokens expire: 90 days from issue unless `server admin token --days N` says otherwise.
-- Tokens issued before had no end; they get the default lifetime from now.
ALTER TABLE admin_tokens ADD COLUMN expires_at TIMESTAMPTZ;
UPDATE admin_tokens SET expires_at = now() + interval '90 days';
ALTER TABLE admin_tokens ALTER COLUMN expires_at SET NOT NULL;
