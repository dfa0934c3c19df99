-- One time zone per person (issue #18): the IANA name they chose in Settings, or NULL for the
-- default (Asia/Shanghai in Chinese, the browser's zone otherwise). The application checks the
-- name against its zone database; the database only bounds its length.
ALTER TABLE users ADD COLUMN time_zone TEXT CHECK (time_zone IS NULL OR length(time_zone) BETWEEN 1 AND 64);
