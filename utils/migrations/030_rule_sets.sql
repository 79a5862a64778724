-- Rule sets as versioned data (consumer/rulesets/): every published version is kept, unchanged,
-- for good; one row names the active version; every activation is logged. Publishing and
-- activating run as the owner role (`python -m consumer.rulesets`); the app role only reads
-- (utils/roles.py), so the pipeline can never change what it evaluates.

CREATE TABLE rule_set_versions (
    version       integer PRIMARY KEY CHECK (version > 0),
    document      jsonb NOT NULL,        -- RuleSet.document(): {"rules": {name: {enabled, severity, parameters}}}
    checksum      text NOT NULL,         -- sha256 of the canonical document (RuleSet.checksum())
    published_by  text NOT NULL CHECK (published_by <> ''),
    published_at  timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL CHECK (reason <> ''),
    db_role       name NOT NULL DEFAULT session_user
);

-- Exactly one row (the key can only be true): what running consumers read, one index probe.
CREATE TABLE rule_set_active (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version       integer NOT NULL REFERENCES rule_set_versions (version),
    activated_by  text NOT NULL CHECK (activated_by <> ''),
    activated_at  timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL CHECK (reason <> '')
);

-- Written by the trigger below, never directly: whoever changes the active row leaves a line here.
CREATE TABLE rule_set_activations (
    activation_id bigserial PRIMARY KEY,
    version       integer NOT NULL REFERENCES rule_set_versions (version),
    activated_by  text NOT NULL,
    activated_at  timestamptz NOT NULL,
    reason        text NOT NULL,
    db_role       name NOT NULL DEFAULT session_user
);

CREATE FUNCTION rule_set_log_activation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rule_set_activations (version, activated_by, activated_at, reason)
    VALUES (NEW.version, NEW.activated_by, NEW.activated_at, NEW.reason);
    RETURN NULL;
END
$$;

CREATE TRIGGER rule_set_active_logged AFTER INSERT OR UPDATE ON rule_set_active
    FOR EACH ROW EXECUTE FUNCTION rule_set_log_activation();

-- Insert-only, even for the owner: a version that could change would make "which rules raised
-- this alert" unanswerable.
CREATE FUNCTION rule_set_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on %: the rule-set history is insert-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'publish a new version or activate an earlier one: python -m consumer.rulesets --help';
END
$$;

CREATE TRIGGER rule_set_versions_insert_only BEFORE UPDATE OR DELETE ON rule_set_versions
    FOR EACH ROW EXECUTE FUNCTION rule_set_insert_only();
CREATE TRIGGER rule_set_versions_no_truncate BEFORE TRUNCATE ON rule_set_versions
    FOR EACH STATEMENT EXECUTE FUNCTION rule_set_insert_only();
CREATE TRIGGER rule_set_activations_insert_only BEFORE UPDATE OR DELETE ON rule_set_activations
    FOR EACH ROW EXECUTE FUNCTION rule_set_insert_only();
CREATE TRIGGER rule_set_activations_no_truncate BEFORE TRUNCATE ON rule_set_activations
    FOR EACH STATEMENT EXECUTE FUNCTION rule_set_insert_only();
-- The active row changes (UPDATE) but never disappears.
CREATE TRIGGER rule_set_active_kept BEFORE DELETE ON rule_set_active
    FOR EACH ROW EXECUTE FUNCTION rule_set_insert_only();
CREATE TRIGGER rule_set_active_no_truncate BEFORE TRUNCATE ON rule_set_active
    FOR EACH STATEMENT EXECUTE FUNCTION rule_set_insert_only();

-- The version whose rules raised the alert. NULL: no version was active (the environment's
-- ALERT_* settings), as for every alert stored before this migration.
ALTER TABLE alerts ADD COLUMN rule_set_version integer REFERENCES rule_set_versions (version);
