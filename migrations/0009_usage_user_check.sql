-- usage_records.user_id: the foreign key's guarantee, checked once per statement instead of once
-- per row.
--
-- The foreign key ran its check (a query on users and a row lock) for every inserted usage row:
-- ~5 µs of Postgres CPU per request, a quarter of what writing a usage row costs
-- (bench/RESULTS.md, 2026-11-25 night). The usage writer inserts hundreds of rows per statement,
-- mostly of a few users, so checking each distinct user once per statement gives the same
-- guarantee for a fraction of the cost:
--  * every user a statement's rows name must exist, and is locked FOR KEY SHARE (as the foreign
--    key's check locked it) until the transaction ends, so it cannot be deleted meanwhile;
--  * deleting users deletes their usage rows (ON DELETE CASCADE did), after which the rollups'
--    DELETE triggers remove them from the rollups;
--  * user ids never change (ON UPDATE NO ACTION refused a change while usage referred to it).
ALTER TABLE usage_records DROP CONSTRAINT usage_records_user_id_fkey;

CREATE FUNCTION cr_usage_users_exist() RETURNS trigger AS $$
DECLARE
    ids UUID[] := ARRAY(SELECT DISTINCT user_id FROM new_rows);
    locked INT;
BEGIN
    PERFORM FROM users WHERE id = ANY(ids) FOR KEY SHARE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked < cardinality(ids) THEN
        RAISE EXCEPTION 'insert or update on table "usage_records" names a user that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER usage_records_user_ins AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_users_exist();
CREATE TRIGGER usage_records_user_upd AFTER UPDATE ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cr_usage_users_exist();

CREATE FUNCTION cr_users_delete_usage() RETURNS trigger AS $$
BEGIN
    DELETE FROM usage_records WHERE user_id IN (SELECT id FROM old_users);
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER users_delete_usage AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_users FOR EACH STATEMENT EXECUTE FUNCTION cr_users_delete_usage();

CREATE FUNCTION cr_users_keep_id() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'a user''s id cannot change' USING ERRCODE = 'foreign_key_violation';
END $$ LANGUAGE plpgsql;

CREATE TRIGGER users_keep_id BEFORE UPDATE OF id ON users
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION cr_users_keep_id();
