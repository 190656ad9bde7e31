-- One SQL function per kind of backfill request, in place of sink.enqueue_backfill's
-- branches, and the database's one copy of the SID rule (sink.twilio in Python).

CREATE FUNCTION sink.is_sid(value text, prefix text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT value IS NOT NULL AND value ~ ('^' || prefix || '[0-9a-fA-F]{32}$')
$$;

-- A request row; its items are added by the caller. NOTIFY is sent at commit.
CREATE FUNCTION sink.new_backfill_request(
    p_kind text, p_requested_by text, p_flow_sid text, p_since timestamptz, p_until timestamptz
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rid bigint;
BEGIN
    INSERT INTO sink.backfill_requests (kind, flow_sid, since, until, requested_by)
    VALUES (p_kind, p_flow_sid, p_since, p_until, p_requested_by)
    RETURNING request_id INTO rid;
    PERFORM pg_notify('studio_sink_backfill', rid::text);
    RETURN rid;
END $$;

-- Executions by SID; an execution not stored yet is queued without its flow.
CREATE FUNCTION sink.enqueue_executions(p_requested_by text, p_execution_sids text[])
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rid bigint;
    bad text;
BEGIN
    IF coalesce(cardinality(p_execution_sids), 0) = 0 THEN
        RAISE EXCEPTION 'no execution SID given'
            USING ERRCODE = '22023', HINT = 'name at least one Execution SID (FN...)';
    END IF;
    SELECT s INTO bad FROM unnest(p_execution_sids) AS s WHERE NOT sink.is_sid(s, 'FN') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'not an Execution SID: %', coalesce(quote_literal(bad), 'NULL')
            USING ERRCODE = '22023', HINT = 'an Execution SID is FN followed by 32 hex digits';
    END IF;
    rid := sink.new_backfill_request('executions', p_requested_by, NULL, NULL, NULL);
    INSERT INTO sink.backfill_items (request_id, kind, execution_sid, flow_sid)
    SELECT rid, 'execution', x.sid, e.flow_sid
    FROM (SELECT DISTINCT s AS sid FROM unnest(p_execution_sids) AS s) x
    LEFT JOIN sink.executions e ON e.execution_sid = x.sid
    ORDER BY x.sid;
    RETURN rid;
END $$;

-- A flow's executions created in [since, until): one listing item.
CREATE FUNCTION sink.enqueue_flow_range(
    p_requested_by text, p_flow_sid text, p_since timestamptz, p_until timestamptz
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rid bigint;
BEGIN
    IF NOT sink.is_sid(p_flow_sid, 'FW') THEN
        RAISE EXCEPTION 'not a Flow SID: %', coalesce(quote_literal(p_flow_sid), 'NULL')
            USING ERRCODE = '22023', HINT = 'a Flow SID is FW followed by 32 hex digits';
    END IF;
    IF p_since IS NULL OR p_until IS NULL OR p_since >= p_until THEN
        RAISE EXCEPTION 'the time range [%, %) is empty', p_since, p_until
            USING ERRCODE = '22023', HINT = 'give since < until (until defaults to now)';
    END IF;
    rid := sink.new_backfill_request('flow', p_requested_by, p_flow_sid, p_since, p_until);
    INSERT INTO sink.backfill_items (request_id, kind, flow_sid, since, until)
    VALUES (rid, 'flow_range', p_flow_sid, p_since, p_until);
    RETURN rid;
END $$;

-- Every stored execution whose context, or one of whose steps' contexts, was never fetched.
CREATE FUNCTION sink.enqueue_missing(p_requested_by text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rid bigint;
BEGIN
    rid := sink.new_backfill_request('missing', p_requested_by, NULL, NULL, NULL);
    INSERT INTO sink.backfill_items (request_id, kind, execution_sid, flow_sid)
    SELECT rid, 'execution', e.execution_sid, e.flow_sid
    FROM sink.executions e
    WHERE e.gone_at IS NULL
      AND (e.context_fetched_at IS NULL
           OR EXISTS (SELECT 1 FROM sink.steps s
                      WHERE s.execution_sid = e.execution_sid
                        AND s.context_fetched_at IS NULL AND s.gone_at IS NULL))
    ORDER BY e.first_seen_at, e.execution_sid;
    RETURN rid;
END $$;

-- The consumers' functions keep their signatures and now call the per-kind functions.
CREATE OR REPLACE FUNCTION studio.request_backfill(execution_sid text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT sink.enqueue_executions('sql', ARRAY[execution_sid])
$$;

CREATE OR REPLACE FUNCTION studio.request_backfill(
    flow_sid text, since timestamptz, until timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT sink.enqueue_flow_range('sql', flow_sid, since, until)
$$;

REVOKE ALL ON FUNCTION sink.new_backfill_request(text, text, text, timestamptz, timestamptz)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.enqueue_executions(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.enqueue_flow_range(text, text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.enqueue_missing(text) FROM PUBLIC;

DROP FUNCTION sink.enqueue_backfill(text, text, text[], text, timestamptz, timestamptz);
