-- name: ui_deliveries_per_minute
-- TODO
SELECT date_trunc('minute', received_at) AS minute, count(*) AS deliveries,
       coalesce(sum(events), 0) AS events
FROM studio.deliveries
WHERE received_at >= now() - make_interval(mins => $1)
GROUP BY 1
ORDER BY 1;

-- name: ui_last_delivery
-- TODO
SELECT max(received_at) FROM studio.deliveries;

-- name: ui_last_test_event
-- TODO
SELECT received_at, time, data FROM studio.events
WHERE type = $1
ORDER BY received_at DESC
LIMIT 1;

-- name: ui_rejected_last_day
-- TODO
SELECT count(*) FROM studio.rejected_events WHERE received_at >= now() - interval '24 hours';

-- name: ui_last_rejected
-- TODO
SELECT max(received_at) FROM studio.rejected_events;

-- name: relation_exists
-- TODO
SELECT to_regclass($1) IS NOT NULL;

-- name: function_exists
-- TODO
SELECT to_regprocedure($1) IS NOT NULL;

-- name: ui_backfill_summary
-- TODO
SELECT status, count(*) AS requests, coalesce(sum(items_total), 0) AS items_total,
       coalesce(sum(items_done), 0) AS items_done,
       coalesce(sum(items_failed), 0) AS items_failed,
       coalesce(sum(items_gone), 0) AS items_gone
FROM studio.backfill_requests
GROUP BY status
ORDER BY status;

-- name: ui_backfill_recent
-- TODO
SELECT request_id, kind, flow_sid, status, items_total, items_done, items_failed, items_gone,
       created_at, finished_at, requested_by
FROM studio.backfill_requests
ORDER BY created_at DESC
LIMIT 5;

-- name: ui_backfill_request
-- TODO
SELECT request_id, kind, status, items_total, items_done, items_failed, items_gone,
       created_at, finished_at
FROM studio.backfill_requests
WHERE request_id = $1;

-- name: ui_request_backfill
-- TODO
SELECT studio.request_backfill($1);

-- name: ui_executions_select
-- The executions list: fixed fragments, composed by executions_query(); values are bound.
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, first_seen_at
FROM studio.executions;

-- name: ui_execution
-- TODO
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, first_seen_at,
       context, context_fetched_at, updated_at
FROM studio.executions WHERE execution_sid = $1;

-- name: ui_steps
-- TODO
SELECT step_sid, name, transitioned_from, transitioned_to, parent_step_sid, date_created,
       context, context_fetched_at, first_seen_at
FROM studio.steps
WHERE execution_sid = $1
ORDER BY date_created NULLS LAST, first_seen_at, step_sid
LIMIT 1000  -- a Studio execution has at most 1000 steps;

-- name: ui_flow_revision
-- TODO
SELECT definition FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = $2;

-- name: ui_flow_revision_exists
-- TODO
SELECT EXISTS (SELECT FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = $2);

-- name: ui_rejected_page
-- TODO
SELECT rejected_id, received_at, reason, detail, event_type, event_id, source, request_id,
       octet_length(raw) AS raw_bytes,
       left(raw_text, 65536) AS raw_text,
       CASE WHEN raw_text IS NULL
            THEN encode(substring(raw FROM 1 FOR 65536), 'hex') END AS raw_hex
FROM studio.rejected_events
WHERE rejected_id < $1
ORDER BY rejected_id DESC
LIMIT $2;

