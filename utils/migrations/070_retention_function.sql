-- Retention that can only delete what is old. The retention role no longer deletes rows itself:
-- it may only call purge_expired(), which runs as the tables' owner (SECURITY DEFINER) and
-- deletes rows older than the policy's days and nothing else, whatever the caller passes.
-- The policy is the owner's to set (`python -m utils.database migrate` writes RETENTION_DAYS);
-- the retention role can read it, not change it.
CREATE TABLE retention_policy (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    days       integer NOT NULL CHECK (days >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_policy (days) VALUES (3650);

-- The instant before which rows have expired: the server's clock, the owner's policy.
CREATE FUNCTION retention_cutoff() RETURNS timestamptz
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT now() - make_interval(days => days) FROM public.retention_policy $$;

-- Deletes at most `batch_size` expired rows of `target` and returns how many went. Transactions
-- go when both their event and processing time are before the cutoff (reports/retention.py says
-- why); their alerts go with them (ON DELETE CASCADE).
CREATE FUNCTION purge_expired(target text, batch_size integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := public.retention_cutoff();
    n bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'purge_expired: batch_size must be at least 1, got %', batch_size;
    END IF;
    IF target = 'transactions' THEN
        DELETE FROM public.transactions WHERE transaction_id IN (
            SELECT transaction_id FROM public.transactions
            WHERE "timestamp" < cutoff AND processed_at < cutoff LIMIT batch_size);
    ELSIF target = 'rejected_transactions' THEN
        DELETE FROM public.rejected_transactions WHERE rejected_id IN (
            SELECT rejected_id FROM public.rejected_transactions
            WHERE rejected_at < cutoff LIMIT batch_size);
    ELSIF target = 'pipeline_metrics' THEN
        DELETE FROM public.pipeline_metrics WHERE measured_at < cutoff;
    ELSE
        RAISE EXCEPTION 'purge_expired: % is not a table retention purges', target;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Nobody calls it unless granted (utils/roles.py grants the retention role EXECUTE).
REVOKE ALL ON FUNCTION purge_expired(text, integer) FROM PUBLIC;
