-- name: ui_deliveries_per_minute
-- Deliveries and events per minute over the last $1 minutes, for the overview chart.
SELECT date_trunc('minute', received_at) AS minute, count(*) AS deliveries,
       coalesce(sum(events), 0) AS events
FROM studio.deliveries
WHERE received_at >= now() - make_interval(mins => $1)
GROUP BY 1
ORDER BY 1;

-- name: ui_last_delivery
-- When the last delivery arrived (NULL when none has).
SELECT max(received_at) FROM studio.deliveries;

-- name: ui_test_events_per_account
-- The latest Event Streams test event (type $1) of each account, or of account $2 alone: its account is data.account_sid, else the event id (Twilio's id is the Account SID).
SELECT DISTINCT ON (t.account_sid) t.account_sid, t.received_at, t.time, t.test_id
FROM (SELECT coalesce(data ->> 'account_sid',
                      CASE WHEN event_id ~ '^AC[0-9a-fA-F]{32}$' THEN event_id END) AS account_sid,
             received_at, time, data ->> 'test_id' AS test_id
      FROM studio.events
      WHERE type = $1) t
WHERE $2::text IS NULL OR t.account_sid = $2
ORDER BY t.account_sid, t.received_at DESC

-- name: ui_rejected_last_day
-- How many events were rejected in the last 24 hours.
SELECT count(*) FROM studio.rejected_events WHERE received_at >= now() - interval '24 hours';

-- name: ui_last_rejected
-- When the last event was rejected (NULL when none was).
SELECT max(received_at) FROM studio.rejected_events;

-- name: relation_exists
-- Whether the table or view $1 exists, so the UI also works on a schema that lacks it.
SELECT to_regclass($1) IS NOT NULL;

-- name: function_exists
-- Whether the function with signature $1 exists (a schema without backfill lacks it).
SELECT to_regprocedure($1) IS NOT NULL;

-- name: ui_backfill_summary
-- Backfill requests and their item counts, summed per status, for the overview; of account $1 only unless NULL.
SELECT status, count(*) AS requests, coalesce(sum(items_total), 0) AS items_total,
       coalesce(sum(items_done), 0) AS items_done,
       coalesce(sum(items_failed), 0) AS items_failed,
       coalesce(sum(items_gone), 0) AS items_gone
FROM studio.backfill_requests r
WHERE $1::text IS NULL OR r.account_sid = $1
   OR EXISTS (SELECT 1 FROM studio.backfill_items i
              JOIN studio.executions e ON e.execution_sid = i.execution_sid
              WHERE i.request_id = r.request_id AND e.account_sid = $1)
GROUP BY status
ORDER BY status

-- name: ui_backfill_recent
-- The five newest backfill requests and their progress, for the overview; of account $1 only unless NULL.
SELECT request_id, kind, flow_sid, status, items_total, items_done, items_failed, items_gone,
       created_at, finished_at, requested_by
FROM studio.backfill_requests r
WHERE $1::text IS NULL OR r.account_sid = $1
   OR EXISTS (SELECT 1 FROM studio.backfill_items i
              JOIN studio.executions e ON e.execution_sid = i.execution_sid
              WHERE i.request_id = r.request_id AND e.account_sid = $1)
ORDER BY created_at DESC
LIMIT 5

-- name: ui_backfill_request
-- One backfill request's status and progress, polled while it runs.
SELECT request_id, kind, status, items_total, items_done, items_failed, items_gone,
       created_at, finished_at
FROM studio.backfill_requests
WHERE request_id = $1;

-- name: ui_request_backfill
-- Queues a backfill of execution $1 through the consumers' function; returns the request ID.
SELECT studio.request_backfill($1);

-- name: ui_executions_select
-- The executions list: fixed fragments, composed by executions_query(); values are bound.
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, first_seen_at
FROM studio.executions;

-- name: ui_execution
-- One execution with its context, for its page.
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, first_seen_at,
       context, context_fetched_at, updated_at
FROM studio.executions WHERE execution_sid = $1;

-- name: ui_steps
-- An execution's steps with their contexts, in order (at most 1000, Studio's limit).
SELECT step_sid, name, transitioned_from, transitioned_to, parent_step_sid, date_created,
       context, context_fetched_at, first_seen_at
FROM studio.steps
WHERE execution_sid = $1
ORDER BY date_created NULLS LAST, first_seen_at, step_sid
LIMIT 1000  -- a Studio execution has at most 1000 steps;

-- name: ui_flow_revision
-- The definition of revision $2 of flow $1, when it has been backfilled.
SELECT definition FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = $2;

-- name: ui_flow_revision_exists
-- Whether revision $2 of flow $1 has been backfilled.
SELECT EXISTS (SELECT FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = $2);

-- name: ui_rejected_page
-- A keyset page of rejected events below ID $1, newest first; raw preview 65536 chars/bytes.
SELECT rejected_id, received_at, reason, detail, event_type, event_id, source, request_id,
       octet_length(raw) AS raw_bytes,
       left(raw_text, 65536) AS raw_text,
       CASE WHEN raw_text IS NULL
            THEN encode(substring(raw FROM 1 FOR 65536), 'hex') END AS raw_hex
FROM studio.rejected_events
WHERE rejected_id < $1
ORDER BY rejected_id DESC
LIMIT $2;

-- name: ui_account_flows
-- The flows of account $1: each flow seen in executions (an index skip scan), with the account of one of its executions.
WITH RECURSIVE f AS (
    (SELECT flow_sid FROM studio.executions ORDER BY flow_sid LIMIT 1)
    UNION ALL
    SELECT (SELECT e.flow_sid FROM studio.executions e WHERE e.flow_sid > f.flow_sid
            ORDER BY e.flow_sid LIMIT 1)
    FROM f WHERE f.flow_sid IS NOT NULL
)
SELECT f.flow_sid FROM f
WHERE f.flow_sid IS NOT NULL
  AND (SELECT e.account_sid FROM studio.executions e
       WHERE e.flow_sid = f.flow_sid AND e.account_sid IS NOT NULL LIMIT 1) = $1
