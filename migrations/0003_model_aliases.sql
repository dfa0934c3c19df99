-- Model aliases, as Anthropic's API accepts them: `claude-sonnet-4-5` names
-- `claude-sonnet-4-5-20250929`, `claude-3-7-sonnet-latest` names `claude-3-7-sonnet`, and so on.
-- The gateway resolves an alias to its model for pricing, allow-lists and usage records, forwards
-- the request body unchanged (upstreams accept the alias too) and lists only canonical ids.
ALTER TABLE models ADD COLUMN aliases TEXT[] NOT NULL DEFAULT '{}';

-- An alias names exactly one model and is never itself a model id.
CREATE FUNCTION cr_models_check_aliases() RETURNS trigger AS $$
DECLARE
    clash TEXT;
BEGIN
    IF NEW.id = ANY(NEW.aliases) THEN
        RAISE EXCEPTION 'model % lists its own id as an alias', NEW.id USING ERRCODE = 'unique_violation';
    END IF;
    SELECT a INTO clash FROM unnest(NEW.aliases) AS a GROUP BY a HAVING count(*) > 1 LIMIT 1;
    IF clash IS NOT NULL THEN
        RAISE EXCEPTION 'alias % is listed twice for model %', clash, NEW.id USING ERRCODE = 'unique_violation';
    END IF;
    SELECT m.id INTO clash FROM models m
     WHERE m.id <> NEW.id AND (m.id = ANY(NEW.aliases) OR m.aliases && NEW.aliases OR NEW.id = ANY(m.aliases))
     LIMIT 1;
    IF clash IS NOT NULL THEN
        RAISE EXCEPTION 'model % or one of its aliases clashes with model %', NEW.id, clash USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER models_check_aliases BEFORE INSERT OR UPDATE ON models
    FOR EACH ROW EXECUTE FUNCTION cr_models_check_aliases();

UPDATE models m SET aliases = v.aliases
FROM (VALUES
  ('claude-opus-4-5-20251101',   ARRAY['claude-opus-4-5']),
  ('claude-opus-4-1',            ARRAY['claude-opus-4-1-20250805']),
  ('claude-opus-4',              ARRAY['claude-opus-4-0', 'claude-opus-4-20250514']),
  ('claude-sonnet-4-5-20250929', ARRAY['claude-sonnet-4-5']),
  ('claude-sonnet-4',            ARRAY['claude-sonnet-4-0', 'claude-sonnet-4-20250514']),
  ('claude-3-7-sonnet',          ARRAY['claude-3-7-sonnet-latest', 'claude-3-7-sonnet-20250219']),
  ('claude-haiku-4-5-20251001',  ARRAY['claude-haiku-4-5']),
  ('claude-3-5-haiku',           ARRAY['claude-3-5-haiku-latest', 'claude-3-5-haiku-20241022'])
) AS v(id, aliases)
WHERE m.id = v.id;
