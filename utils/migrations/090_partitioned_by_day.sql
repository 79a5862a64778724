-- transactions, alerts and rejected_transactions become declaratively partitioned by day, so that
-- retention drops whole days (DETACH + DROP: no row-by-row DELETE, no index churn, no vacuum
-- debt) and the day being written stays small and hot whatever the table's size
-- (docs/partitioning.md).
--
-- The partition key is the processing time the database stamps (processed_at, created_at,
-- rejected_at: clock_timestamp() defaults), not the event time. Retention needs a row's
-- processing time to be old (reconciliation per processing day must never show gaps that
-- retention made, reports/retention.py), and only processing time tells that from the partition
-- alone: an event-time partition of an old day can hold a row stored yesterday (a late or
-- replayed message). Processing time also grows with the stream, so every batch writes into
-- one partition, and the partitions needed are today's and the next days', which the pipeline
-- creates ahead (ensure_partitions below), instead of whatever days a producer stamps.
--
-- A partitioned table's unique keys must include the partition key, so three keys change:
--   transactions_pkey (transaction_id)  -> the registry transaction_ids (transaction_id PRIMARY
--       KEY, with the Kafka position that stored it), written in the batch's own transaction;
--       business-id uniqueness across days is its primary key. transactions keeps a plain index
--       on transaction_id for look-ups and joins.
--   alerts_one_per_rule (transaction_id, alert_type) -> a plain index of the same name's columns:
--       an alert is written only in the transaction that registered its transaction_id, once
--       per rule, so a second alert for the same transaction and rule has no way in.
--   rejected_one_per_message (topic, incarnation, partition, offset) -> a plain index: a
--       rejection is written only above the partition's stored_positions high-water mark, which
--       the batch raises under a row lock in its own transaction (consumer/positions.py).
-- alerts and rejected_transactions keep their bigserial ids (same sequences), their primary keys
-- now (id, partition key). case_alerts references (alert_id, alert_created_at).
--
-- The rows are copied into day partitions (one per day present): a rewrite, ~35,000 rows/s here,
-- under an exclusive lock; docs/partitioning.md says how to plan it on a large database.

-- ---------------------------------------------------------------------------------------------
-- The old tables step aside; their sequences stay (alert_id and rejected_id keep counting).
ALTER SEQUENCE alerts_alert_id_seq OWNED BY NONE;
ALTER SEQUENCE rejected_transactions_rejected_id_seq OWNED BY NONE;
ALTER TABLE case_alerts DROP CONSTRAINT case_alerts_alert_id_fkey;
ALTER TABLE alerts DROP CONSTRAINT alerts_transaction_id_fkey;
ALTER TABLE transactions RENAME TO transactions_unpartitioned;
ALTER TABLE alerts RENAME TO alerts_unpartitioned;
ALTER TABLE rejected_transactions RENAME TO rejected_unpartitioned;

-- Same columns, order, defaults, CHECK constraints and comments; no indexes yet (built after
-- the copy, which is faster than maintaining them row by row).
CREATE TABLE transactions (LIKE transactions_unpartitioned INCLUDING ALL EXCLUDING INDEXES)
    PARTITION BY RANGE (processed_at);
CREATE TABLE alerts (LIKE alerts_unpartitioned INCLUDING ALL EXCLUDING INDEXES)
    PARTITION BY RANGE (created_at);
CREATE TABLE rejected_transactions (LIKE rejected_unpartitioned INCLUDING ALL EXCLUDING INDEXES)
    PARTITION BY RANGE (rejected_at);
ALTER SEQUENCE alerts_alert_id_seq OWNED BY alerts.alert_id;
ALTER SEQUENCE rejected_transactions_rejected_id_seq OWNED BY rejected_transactions.rejected_id;

-- The safety net: a row whose day has no partition yet (the pipeline creates them days ahead,
-- so only when that failed for days) lands here instead of failing its batch. Creating that
-- day's partition later moves such rows into it (partition_day); retention deletes what is left
-- here row by row, by the rule of migration 070.
CREATE TABLE transactions_default PARTITION OF transactions DEFAULT;
CREATE TABLE alerts_default PARTITION OF alerts DEFAULT;
CREATE TABLE rejected_transactions_default PARTITION OF rejected_transactions DEFAULT;

-- Business-id uniqueness across every day, and where each id was stored: the consumer's write
-- path adds a row for every transaction it stores, in the same database transaction (COPY, or
-- INSERT ... ON CONFLICT DO NOTHING on the replay path), and reads the position back when an id
-- is already here. processed_at is never before its transaction's, so retention may delete the
-- rows older than the partitions it dropped (purge_expired) and never frees a stored id.
CREATE TABLE transaction_ids (
    transaction_id  text PRIMARY KEY,
    kafka_topic     text NOT NULL,
    kafka_topic_id  uuid NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Grows with insertion order: a BRIN range answers retention's "older than" at almost no cost
-- per insert.
CREATE INDEX transaction_ids_processed_at_brin ON transaction_ids USING brin (processed_at);

-- ---------------------------------------------------------------------------------------------
-- Partition maintenance, owned by the owner role. partition_day is internal (nobody else may
-- call it); ensure_partitions is what the pipeline's app role may call (utils/roles.py): it can
-- only create today's and the next few days' partitions, nothing else.

-- The partition key of each partitioned table; NULL for anything else.
CREATE FUNCTION partition_key(parent text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE parent WHEN 'transactions' THEN 'processed_at' WHEN 'alerts' THEN 'created_at'
                          WHEN 'rejected_transactions' THEN 'rejected_at' END $$;

-- The day partitions of `parent` with their UTC day, oldest first. Named <parent>_pYYYYMMDD by
-- partition_day, the only thing that creates them.
CREATE FUNCTION day_partitions(parent text) RETURNS TABLE (name text, day date)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.relname::text, to_date(right(c.relname, 8), 'YYYYMMDD')
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = format('public.%I', parent)::regclass
      AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
    ORDER BY 2
$$;

-- Creates `parent`'s partition for the UTC day `day` if it is missing; true if it made one. Rows
-- of that day waiting in the default partition move into it (their case links kept for alerts).
CREATE FUNCTION partition_day(parent text, day date) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text := public.partition_key(parent);
    part text := format('%s_p%s', parent, to_char(day, 'YYYYMMDD'));
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    waiting boolean;
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION 'partition_day: % is not a table partitioned by day', parent;
    END IF;
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM public.%I WHERE %I >= $1 AND %I < $2)',
                   parent || '_default', key, key)
        INTO waiting USING lo, hi;
    IF NOT waiting THEN
        EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%L) TO (%L)',
                       part, parent, lo, hi);
        RETURN true;
    END IF;
    -- Rows of the day are in the default partition: the new partition would overlap them, so
    -- it is filled first and attached after. An alert's case link would go with it (ON DELETE
    -- CASCADE) and is put back.
    EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   part, parent);
    EXECUTE format('INSERT INTO public.%I SELECT * FROM public.%I WHERE %I >= $1 AND %I < $2',
                   part, parent || '_default', key, key) USING lo, hi;
    IF parent = 'alerts' THEN
        CREATE TEMP TABLE IF NOT EXISTS moved_case_alerts (LIKE public.case_alerts) ON COMMIT DROP;
        INSERT INTO moved_case_alerts SELECT ca.* FROM public.case_alerts ca
            JOIN public.alerts_default a ON a.alert_id = ca.alert_id AND a.created_at = ca.alert_created_at
            WHERE a.created_at >= lo AND a.created_at < hi;
    END IF;
    EXECUTE format('DELETE FROM public.%I WHERE %I >= $1 AND %I < $2', parent || '_default', key, key)
        USING lo, hi;
    EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    IF parent = 'alerts' THEN
        INSERT INTO public.case_alerts SELECT * FROM moved_case_alerts;
        DELETE FROM moved_case_alerts;
    END IF;
    RETURN true;
END
$$;

-- Today's partition (the server's clock, in UTC, the clock that stamps processed_at) and the
-- next `days_ahead` days' (at most 31), for each partitioned table; how many it created. Called
-- by the consumer at start and hourly (consumer/partitions.py) and by this migration. A lock
-- it cannot get within 5 s fails the call, never the pipeline: the days ahead leave time.
CREATE FUNCTION ensure_partitions(days_ahead integer) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    made integer := 0;
    parent text;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 31 THEN
        RAISE EXCEPTION 'ensure_partitions: days_ahead must be 0..31, got %', days_ahead;
    END IF;
    -- Two consumers starting together: one creates, the other finds them made.
    PERFORM pg_advisory_xact_lock(7141592654);
    FOREACH parent IN ARRAY ARRAY['transactions', 'alerts', 'rejected_transactions'] LOOP
        FOR d IN 0..days_ahead LOOP
            IF public.partition_day(parent, today + d) THEN
                made := made + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN made;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- The data: one partition per day present, then the rows, then the indexes.
SELECT public.partition_day('transactions', d)
    FROM (SELECT DISTINCT (processed_at AT TIME ZONE 'UTC')::date AS d FROM transactions_unpartitioned) s;
SELECT public.partition_day('alerts', d)
    FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS d FROM alerts_unpartitioned) s;
SELECT public.partition_day('rejected_transactions', d)
    FROM (SELECT DISTINCT (rejected_at AT TIME ZONE 'UTC')::date AS d FROM rejected_unpartitioned) s;
SELECT public.ensure_partitions(7);

INSERT INTO transactions SELECT * FROM transactions_unpartitioned;
INSERT INTO transaction_ids (transaction_id, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, processed_at)
    SELECT transaction_id, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, processed_at
    FROM transactions_unpartitioned;
INSERT INTO alerts SELECT * FROM alerts_unpartitioned;
INSERT INTO rejected_transactions SELECT * FROM rejected_unpartitioned;

DROP TABLE transactions_unpartitioned;
DROP TABLE alerts_unpartitioned;
DROP TABLE rejected_unpartitioned;

-- Every index the tables had, under the same names, on every partition. The unique keys that
-- must give way are described at the top.
CREATE INDEX transactions_transaction_id_idx ON transactions (transaction_id);
CREATE INDEX transactions_ts_idx ON transactions ("timestamp");
CREATE INDEX transactions_processed_at_brin ON transactions USING brin (processed_at);
CREATE INDEX transactions_incident_idx ON transactions (simulated_incident) WHERE simulated_incident IS NOT NULL;
CREATE INDEX transactions_account_incarnation_ts_idx
    ON transactions (account_id, kafka_topic, kafka_topic_id, "timestamp");
CREATE INDEX transactions_merchant_idx ON transactions (merchant);
CREATE INDEX transactions_amount_idx ON transactions (amount);

ALTER TABLE alerts ADD CONSTRAINT alerts_pkey PRIMARY KEY (alert_id, created_at);
CREATE INDEX alerts_one_per_rule ON alerts (transaction_id, alert_type);
CREATE INDEX alerts_created_at_idx ON alerts (created_at);
CREATE INDEX alerts_type_idx ON alerts (alert_type, created_at);
CREATE INDEX alerts_account_idx ON alerts (account_id);
CREATE INDEX alerts_queue_idx ON alerts (created_at, alert_id);
CREATE INDEX alerts_queue_type_idx ON alerts (alert_type, created_at, alert_id);
CREATE INDEX alerts_queue_severity_idx ON alerts (severity, created_at, alert_id);
CREATE INDEX alerts_queue_account_idx ON alerts (account_id, created_at, alert_id);
ALTER TABLE alerts ADD CONSTRAINT alerts_rule_set_version_fkey
    FOREIGN KEY (rule_set_version) REFERENCES rule_set_versions (version);
-- case_alerts.alert_created_at is the alert's created_at (console/store.py attach), so the
-- link names the partition too; an alert that goes takes its case link with it, as before.
ALTER TABLE case_alerts ADD CONSTRAINT case_alerts_alert_fkey
    FOREIGN KEY (alert_id, alert_created_at) REFERENCES alerts (alert_id, created_at) ON DELETE CASCADE;

ALTER TABLE rejected_transactions ADD CONSTRAINT rejected_transactions_pkey PRIMARY KEY (rejected_id, rejected_at);
CREATE INDEX rejected_one_per_message ON rejected_transactions (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset);
CREATE INDEX rejected_at_idx ON rejected_transactions (rejected_at);
CREATE INDEX rejected_reason_idx ON rejected_transactions (reason);

-- ---------------------------------------------------------------------------------------------
-- Retention drops days. The retention role still calls only purge_expired(), which runs as the
-- owner and removes only what is older than the owner's policy (migration 070).

-- Below this instant purge_expired drops `target`'s day partitions whole. For transactions: the
-- start of the cutoff's UTC day, or earlier, the start of the oldest day partition holding an
-- event at or after the cutoff (its rows are not all expired: reports/retention.py). Granted to
-- the retention role, so its plan counts exactly what goes.
CREATE FUNCTION retention_boundary(target text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := public.retention_cutoff();
    boundary timestamptz := ((cutoff AT TIME ZONE 'UTC')::date)::timestamp AT TIME ZONE 'UTC';
    p record;
    young boolean;
BEGIN
    IF public.partition_key(target) IS NULL THEN
        RAISE EXCEPTION 'retention_boundary: % is not a table partitioned by day', target;
    END IF;
    IF target = 'transactions' THEN
        FOR p IN SELECT * FROM public.day_partitions('transactions')
                 WHERE (day + 1)::timestamp AT TIME ZONE 'UTC' <= boundary LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM public.%I WHERE "timestamp" >= $1)', p.name)
                INTO young USING cutoff;
            IF young THEN
                RETURN p.day::timestamp AT TIME ZONE 'UTC';
            END IF;
        END LOOP;
    END IF;
    RETURN boundary;
END
$$;

-- Detaches and drops `parent`'s day partitions wholly below `boundary`; the rows they held.
CREATE FUNCTION drop_day_partitions(parent text, boundary timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    n bigint := 0;
    m bigint;
BEGIN
    FOR p IN SELECT * FROM public.day_partitions(parent)
             WHERE (day + 1)::timestamp AT TIME ZONE 'UTC' <= boundary LOOP
        EXECUTE format('SELECT count(*) FROM public.%I', p.name) INTO m;
        EXECUTE format('ALTER TABLE public.%I DETACH PARTITION public.%I', parent, p.name);
        EXECUTE format('DROP TABLE public.%I', p.name);
        n := n + m;
    END LOOP;
    RETURN n;
END
$$;

-- Same signature and contract as migration 070's: what is older than the policy goes, nothing
-- else; returns how many rows went. Day partitions go whole (below retention_boundary); rows in
-- the default partitions go by 070's row rule, at most `batch_size` per call. A transaction's
-- alerts go with it: alert partitions below the same boundary (an alert is created after its
-- transaction, in the same database transaction), and the alerts of default-partition rows.
CREATE OR REPLACE FUNCTION purge_expired(target text, batch_size integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '10s'
AS $$
DECLARE
    cutoff timestamptz := public.retention_cutoff();
    boundary timestamptz;
    n bigint := 0;
    m bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'purge_expired: batch_size must be at least 1, got %', batch_size;
    END IF;
    IF target = 'transactions' THEN
        boundary := public.retention_boundary('transactions');
        n := public.drop_day_partitions('transactions', boundary);
        -- Case links go first: a referenced partition cannot be detached.
        DELETE FROM public.case_alerts WHERE alert_created_at < boundary
            AND alert_id IN (SELECT alert_id FROM public.alerts a
                             WHERE a.created_at < boundary AND a.tableoid <> 'public.alerts_default'::regclass);
        PERFORM public.drop_day_partitions('alerts', boundary);
        DELETE FROM public.transaction_ids WHERE processed_at < boundary;
        WITH gone AS (
            DELETE FROM public.transactions_default WHERE transaction_id IN (
                SELECT transaction_id FROM public.transactions_default
                WHERE "timestamp" < cutoff AND processed_at < cutoff LIMIT batch_size)
            RETURNING transaction_id
        ), ids AS (
            DELETE FROM public.transaction_ids WHERE transaction_id IN (SELECT transaction_id FROM gone)
        ), its_alerts AS (
            DELETE FROM public.alerts WHERE transaction_id IN (SELECT transaction_id FROM gone)
        )
        SELECT count(*) INTO m FROM gone;
        n := n + m;
    ELSIF target = 'rejected_transactions' THEN
        boundary := public.retention_boundary('rejected_transactions');
        n := public.drop_day_partitions('rejected_transactions', boundary);
        DELETE FROM public.rejected_transactions_default WHERE rejected_id IN (
            SELECT rejected_id FROM public.rejected_transactions_default
            WHERE rejected_at < cutoff LIMIT batch_size);
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
    ELSIF target = 'pipeline_metrics' THEN
        DELETE FROM public.pipeline_metrics WHERE measured_at < cutoff;
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSE
        RAISE EXCEPTION 'purge_expired: % is not a table retention purges', target;
    END IF;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION partition_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION day_partitions(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION partition_day(text, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION ensure_partitions(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION retention_boundary(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION drop_day_partitions(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION purge_expired(text, integer) FROM PUBLIC;
