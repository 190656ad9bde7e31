-- Flow definitions on request: a backfill request of kind 'flows' fetches a flow's latest
-- revision and every revision that stored executions ran (or, without a flow, those of every
-- flow of the account, listed with GET /v2/Flows). `studio-sink backfill --flows` and the
-- UI's "Fetch the definition" button queue one.

ALTER TABLE sink.backfill_requests DROP CONSTRAINT backfill_requests_kind_check;
ALTER TABLE sink.backfill_requests ADD CONSTRAINT backfill_requests_kind_check
    CHECK (kind IN ('executions', 'flow', 'missing', 'flows'));
ALTER TABLE sink.backfill_items DROP CONSTRAINT backfill_items_kind_check;
ALTER TABLE sink.backfill_items ADD CONSTRAINT backfill_items_kind_check
    CHECK (kind IN ('execution', 'flow_range', 'flows'));

-- One item: the flow p_flow_sid, or every flow of the account when it is NULL.
CREATE FUNCTION sink.enqueue_flows(p_requested_by text, p_flow_sid text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rid bigint;
BEGIN
    IF p_flow_sid IS NOT NULL AND NOT sink.is_sid(p_flow_sid, 'FW') THEN
        RAISE EXCEPTION 'not a Flow SID: %', quote_literal(p_flow_sid)
            USING ERRCODE = '22023',
                  HINT = 'a Flow SID is FW followed by 32 hex digits; NULL means every flow';
    END IF;
    rid := sink.new_backfill_request('flows', p_requested_by, p_flow_sid, NULL, NULL);
    INSERT INTO sink.backfill_items (request_id, kind, flow_sid) VALUES (rid, 'flows', p_flow_sid);
    RETURN rid;
END $$;

CREATE FUNCTION studio.request_flows_backfill(flow_sid text DEFAULT NULL) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT sink.enqueue_flows('sql', flow_sid)
$$;

REVOKE ALL ON FUNCTION sink.enqueue_flows(text, text) FROM PUBLIC;
