-- name: enqueue_executions
-- Queues a request for executions by SID ($2); raises 22023 naming a bad SID.
SELECT sink.enqueue_executions($1, $2::text[]);

-- name: enqueue_flow_range
-- Queues a request for a flow's executions created in [$3, $4); raises 22023 on a bad range.
SELECT sink.enqueue_flow_range($1, $2, $3, $4);

-- name: enqueue_missing
-- Queues every stored execution whose context, or a step's context, was never fetched.
SELECT sink.enqueue_missing($1);

-- name: enqueue_listed_executions
-- Queues the executions a flow listing found ($2 flow, $3 SIDs) on request $1; returns how many.
SELECT sink.enqueue_listed_executions($1, $2, $3::text[]);

-- name: claim_item
-- The next claimable item, leased to a worker ($1 token, $2 lease seconds, $3 request or NULL).
WITH next AS (
    SELECT item_id FROM sink.backfill_items
    WHERE state IN ('queued', 'running') AND not_before <= now()
      AND ($3::bigint IS NULL OR request_id = $3)
    ORDER BY not_before, item_id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE sink.backfill_items i
SET state = 'running', attempts = i.attempts + 1, locked_by = $1,
    locked_until = now() + $2 * interval '1 second',
    not_before = now() + $2 * interval '1 second'
FROM next
WHERE i.item_id = next.item_id
RETURNING i.item_id, i.request_id, i.kind, i.flow_sid, i.execution_sid, i.since, i.until,
          i.listed, i.attempts, i.account_sid;

-- name: extend_leases
-- Renews by $2 seconds the leases of running items held by tokens $1, so no one else claims them.
UPDATE sink.backfill_items
SET locked_until = now() + $2 * interval '1 second', not_before = now() + $2 * interval '1 second'
WHERE locked_by = ANY($1::text[]) AND state = 'running';

-- name: finish_item
-- Records an item's final state $3 and reason $4, only while token $2 still holds its lease.
UPDATE sink.backfill_items
SET state = $3, reason = $4, finished_at = now(), locked_by = NULL, locked_until = NULL
WHERE item_id = $1 AND locked_by = $2;

-- name: retry_item
-- Requeues an item token $2 holds, claimable again in $4 s (reason $3); $5 refunds the attempt.
UPDATE sink.backfill_items
SET state = 'queued', reason = $3, not_before = now() + $4 * interval '1 second',
    attempts = attempts - CASE WHEN $5 THEN 1 ELSE 0 END, locked_by = NULL, locked_until = NULL
WHERE item_id = $1 AND locked_by = $2;

-- name: request_progress
-- A request's status and item counts, as the consumer view studio.backfill_requests shows them.
SELECT * FROM studio.backfill_requests WHERE request_id = $1;

-- name: request_failures
-- Up to $2 failed, gone or waiting items of request $1 in queue order: each one's SID, state and reason.
SELECT coalesce(execution_sid, flow_sid, account_sid) AS sid, state, reason
FROM sink.backfill_items
WHERE request_id = $1 AND state IN ('failed', 'gone', 'waiting_for_credentials')
ORDER BY item_id
LIMIT $2;

-- name: queue_depth
-- How many backfill items are queued or running (the queue-depth gauge).
SELECT count(*) FROM sink.backfill_items WHERE state IN ('queued', 'running');

-- name: items_waiting
-- How many backfill items wait for their account's credentials (the items-waiting gauge).
SELECT count(*) FROM sink.backfill_items WHERE state = 'waiting_for_credentials';

-- name: next_due
-- Seconds until an open item (of request $1, or any if NULL) may be claimed; NULL if none is.
SELECT extract(epoch FROM min(not_before) - now())::float8 FROM sink.backfill_items
WHERE state IN ('queued', 'running') AND ($1::bigint IS NULL OR request_id = $1);

-- name: flow_of_execution
-- The flow of a stored execution: the REST API addresses an execution through its flow.
SELECT flow_sid FROM sink.executions WHERE execution_sid = $1;

-- name: merge_api_executions
-- Merges execution facts from REST API resources (one array per column); contexts untouched.
SELECT sink.merge_api_executions($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::int[], $7::text[], $8::timestamptz[], $9::timestamptz[]);

-- name: set_execution_context
-- Stores a fetched execution context; returns its revision, whether flow and revision are stored.
UPDATE sink.executions e
SET context = $2::jsonb, context_fetched_at = now(), gone_at = NULL, updated_at = now()
WHERE execution_sid = $1
RETURNING e.flow_revision,
          EXISTS (SELECT 1 FROM sink.flows f WHERE f.flow_sid = e.flow_sid) AS flow_known,
          EXISTS (SELECT 1 FROM sink.flow_revisions r
                  WHERE r.flow_sid = e.flow_sid AND r.revision = e.flow_revision)
              AS revision_known;

-- name: merge_api_steps
-- Merges step facts from REST API step resources (one array per column); contexts untouched.
SELECT sink.merge_api_steps($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[], $9::text[],
                            $10::timestamptz[], $11::timestamptz[]);

-- name: steps_without_context
-- An execution's steps whose context was never fetched and that are not gone, in creation order.
SELECT step_sid FROM sink.steps
WHERE execution_sid = $1 AND context_fetched_at IS NULL AND gone_at IS NULL
ORDER BY date_created, step_sid;

-- name: set_step_contexts
-- Stores fetched step contexts ($1 SIDs, $2 JSON texts), locking rows in SID order like ingest.
UPDATE sink.steps s
SET context = c.context::jsonb, context_fetched_at = now(), gone_at = NULL, updated_at = now()
FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(step_sid, context) ORDER BY 1) c
WHERE s.step_sid = c.step_sid;

-- name: mark_execution_gone
-- Marks an execution gone (the REST API answered 404), so missing-context backfills skip it.
UPDATE sink.executions SET gone_at = now() WHERE execution_sid = $1;

-- name: mark_steps_gone
-- Marks steps gone (the REST API answered 404), so they no longer count as missing a context.
UPDATE sink.steps SET gone_at = now() WHERE step_sid = ANY($1::text[]);

-- name: upsert_flow
-- Stores a flow's latest fetched state, unless the stored one has a newer revision.
INSERT INTO sink.flows AS t (flow_sid, account_sid, friendly_name, status, revision, definition,
                             commit_message, valid, date_created, date_updated)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
ON CONFLICT (flow_sid) DO UPDATE SET
    account_sid = coalesce(EXCLUDED.account_sid, t.account_sid),
    friendly_name = EXCLUDED.friendly_name, status = EXCLUDED.status,
    revision = EXCLUDED.revision, definition = EXCLUDED.definition,
    commit_message = EXCLUDED.commit_message, valid = EXCLUDED.valid,
    date_created = coalesce(EXCLUDED.date_created, t.date_created),
    date_updated = EXCLUDED.date_updated, fetched_at = now()
WHERE t.revision IS NULL OR EXCLUDED.revision >= t.revision;

-- name: upsert_flow_revision
-- Stores one fetched revision of a flow, replacing what was stored for that revision.
INSERT INTO sink.flow_revisions AS t (flow_sid, account_sid, friendly_name, status, revision,
                                      definition, commit_message, valid, date_created,
                                      date_updated)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
ON CONFLICT (flow_sid, revision) DO UPDATE SET
    account_sid = coalesce(EXCLUDED.account_sid, t.account_sid),
    friendly_name = EXCLUDED.friendly_name, status = EXCLUDED.status,
    definition = EXCLUDED.definition, commit_message = EXCLUDED.commit_message,
    valid = EXCLUDED.valid, date_created = coalesce(EXCLUDED.date_created, t.date_created),
    date_updated = EXCLUDED.date_updated, fetched_at = now();

