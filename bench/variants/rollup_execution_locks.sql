-- Lever 3b: the rollup's writers lock the executions they touch (a lock per execution)
-- instead of 64 hash slots, so two batches of different executions no longer wait for each
-- other's commit at their first step. Rebuilds, and writers of more than 512 executions,
-- take the one exclusive lock that every other writer holds shared.
CREATE OR REPLACE FUNCTION sink.rollup_lock(p_sids text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_sids) > 512 THEN
        PERFORM sink.rollup_lock_all();
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1397903180, 64);
    PERFORM count(pg_advisory_xact_lock(1397903181, h)) FROM (
        SELECT DISTINCT hashtext(s) AS h FROM unnest(p_sids) AS s ORDER BY 1
    ) x;
END $$;

CREATE OR REPLACE FUNCTION sink.rollup_lock_all() RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1397903180, 64)
$$;
