-- The analysts' console (console/): who may sign in, their sessions, and cases that gather an
-- account's alerts until a decision. The console logs in as its own role (utils/roles.py:
-- CONSOLE_TABLE_PRIVILEGES): it reads the pipeline's tables and writes only these.

CREATE TABLE console_users (
    user_id          bigserial PRIMARY KEY,
    username         text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash    text NOT NULL,                       -- argon2id, encoded with its parameters
    role             text NOT NULL CHECK (role IN ('viewer', 'analyst', 'lead', 'admin')),
    failed_attempts  integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Server-side sessions: the cookie holds a random token, the table only its sha256, so a copy of
-- the table signs nobody in. The CSRF token of the synchronizer pattern lives with the session.
CREATE TABLE console_sessions (
    token_sha256  text PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES console_users (user_id) ON DELETE CASCADE,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);

CREATE TABLE cases (
    case_id       bigserial PRIMARY KEY,
    account_id    text NOT NULL,
    status        text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'investigating', 'pending_approval', 'closed')),
    -- Proposed when closure is asked for, final once closed.
    outcome       text CHECK (outcome IN ('confirmed_fraud', 'false_positive', 'benign')),
    severity      text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    assignee      text,
    investigator  text,                                   -- who asked for closure (four-eyes)
    due_at        timestamptz NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    closed_by     text,
    closed_at     timestamptz,
    CHECK (status <> 'closed' OR (outcome IS NOT NULL AND closed_by IS NOT NULL))
);
-- One open case per account, whatever races: concurrent attaches meet here (and on an advisory
-- lock per account taken before, so the loser finds the winner's case instead of an error).
CREATE UNIQUE INDEX cases_one_open_per_account ON cases (account_id) WHERE status <> 'closed';
-- The case queue: open work by due time (overdue first), and by assignee.
CREATE INDEX cases_due_idx ON cases (due_at, case_id) WHERE status <> 'closed';
CREATE INDEX cases_assignee_idx ON cases (assignee, status);
CREATE INDEX cases_status_idx ON cases (status, case_id);

-- An alert belongs to at most one case. The case's status and assignee are copied here (and
-- kept in step by the console whenever they change), with the alert's created_at: the queue
-- filtered by status or assignee is then one index range scan in queue order, instead of a walk
-- through every alert looking for the few in such cases.
CREATE TABLE case_alerts (
    alert_id          bigint PRIMARY KEY REFERENCES alerts (alert_id) ON DELETE CASCADE,
    case_id           bigint NOT NULL REFERENCES cases (case_id),
    alert_created_at  timestamptz NOT NULL,
    status            text NOT NULL,
    assignee          text,
    attached_by       text NOT NULL,
    attached_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_alerts_case_idx ON case_alerts (case_id, alert_id);
CREATE INDEX case_alerts_status_idx ON case_alerts (status, alert_created_at, alert_id);
CREATE INDEX case_alerts_assignee_idx ON case_alerts (assignee, alert_created_at, alert_id);

CREATE TABLE case_links (
    case_id         bigint NOT NULL REFERENCES cases (case_id),
    linked_case_id  bigint NOT NULL REFERENCES cases (case_id),
    linked_by       text NOT NULL,
    linked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, linked_case_id),
    CHECK (case_id < linked_case_id)                       -- one row per pair
);

-- Every change to a case, append-only: who, when, from -> to, why.
CREATE TABLE case_events (
    event_id     bigserial PRIMARY KEY,
    case_id      bigint NOT NULL REFERENCES cases (case_id),
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text NOT NULL,
    kind         text NOT NULL,
    from_value   text,
    to_value     text,
    reason       text,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX case_events_case_idx ON case_events (case_id, event_id);

CREATE FUNCTION case_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on %: a case''s history is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'record a new event instead of changing an old one';
END
$$;
CREATE TRIGGER case_events_append_only BEFORE UPDATE OR DELETE ON case_events
    FOR EACH ROW EXECUTE FUNCTION case_events_append_only();
CREATE TRIGGER case_events_no_truncate BEFORE TRUNCATE ON case_events
    FOR EACH STATEMENT EXECUTE FUNCTION case_events_append_only();

-- The alert queue, newest first with keyset pagination on (created_at, alert_id): one index per
-- filter that leads with the filter's column, so every page is an index range scan.
CREATE INDEX alerts_queue_idx ON alerts (created_at, alert_id);
CREATE INDEX alerts_queue_type_idx ON alerts (alert_type, created_at, alert_id);
CREATE INDEX alerts_queue_severity_idx ON alerts (severity, created_at, alert_id);
CREATE INDEX alerts_queue_account_idx ON alerts (account_id, created_at, alert_id);
-- The merchant and amount filters may start from the matching transactions (a narrow amount range
-- or a small merchant), or walk the queue and check each: the planner picks by the statistics.
-- Each costs the consumer's inserts an index entry (bench: python -m bench.run measures that).
CREATE INDEX transactions_merchant_idx ON transactions (merchant);
CREATE INDEX transactions_amount_idx ON transactions (amount);
