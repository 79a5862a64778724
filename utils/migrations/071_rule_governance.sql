-- Rule sets are changed by named people, and the history cannot be undone.
--
-- Publishing and activating need a person's own login, a member of the group role
-- txmon_rules_admin (utils/roles.py: INSERT and SELECT on the two history tables, nothing else).
-- Who did it is the server's session_user, written by the trigger below whatever the client
-- sends; the owner role and superusers are refused, so the one account that could rewrite the
-- tables is not the one that publishes. No publishing role may UPDATE, DELETE, TRUNCATE or own
-- the tables, so the active version is no longer a row that is updated: it is the newest
-- activation (the view rule_set_active, with the columns the table had).

DROP TABLE rule_set_active;  -- its trigger logged every change in rule_set_activations already
DROP FUNCTION rule_set_log_activation();

CREATE VIEW rule_set_active AS
    SELECT true AS singleton, version, activated_by, activated_at, reason
    FROM rule_set_activations
    ORDER BY activation_id DESC
    LIMIT 1;

CREATE FUNCTION rule_set_named_person() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := session_user;
    fix text := 'log in as your own PostgreSQL role, a member of txmon_rules_admin '
        '(an administrator adds you: python -m utils.roles add-rules-admin NAME), and run '
        'python -m consumer.rulesets with --user NAME';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'txmon_rules_admin') THEN
        RAISE EXCEPTION 'the group role txmon_rules_admin does not exist: rule sets cannot be published'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'create it with python -m utils.roles provision (as the superuser)';
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = who)
       OR who = (SELECT tableowner FROM pg_tables WHERE schemaname = TG_TABLE_SCHEMA AND tablename = TG_TABLE_NAME)
       OR NOT pg_has_role(who, 'txmon_rules_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'role % may not change rule sets: publishing and activating need a named person''s own login', who
            USING ERRCODE = 'insufficient_privilege', HINT = fix;
    END IF;
    IF TG_TABLE_NAME = 'rule_set_versions' THEN
        NEW.published_by := who;
    ELSE
        NEW.activated_by := who;
    END IF;
    NEW.db_role := who;
    RETURN NEW;
END
$$;

CREATE TRIGGER rule_set_versions_by_a_person BEFORE INSERT ON rule_set_versions
    FOR EACH ROW EXECUTE FUNCTION rule_set_named_person();
CREATE TRIGGER rule_set_activations_by_a_person BEFORE INSERT ON rule_set_activations
    FOR EACH ROW EXECUTE FUNCTION rule_set_named_person();

-- The newest activation, found by one backward index probe of the primary key.
COMMENT ON VIEW rule_set_active IS 'the active rule-set version: the newest row of rule_set_activations';
