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
-- TODO
SELECT sink.enqueue_listed_executions($1, $2, $3::text[]);

-- name: claim_item
-- TODO
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
          i.listed, i.attempts;

-- name: extend_leases
-- TODO
UPDATE sink.backfill_items
SET locked_until = now() + $2 * interval '1 second', not_before = now() + $2 * interval '1 second'
WHERE locked_by = ANY($1::text[]) AND state = 'running';

-- name: finish_item
-- TODO
UPDATE sink.backfill_items
SET state = $3, reason = $4, finished_at = now(), locked_by = NULL, locked_until = NULL
WHERE item_id = $1 AND locked_by = $2;

-- name: retry_item
-- TODO
UPDATE sink.backfill_items
SET state = 'queued', reason = $3, not_before = now() + $4 * interval '1 second',
    attempts = attempts - CASE WHEN $5 THEN 1 ELSE 0 END, locked_by = NULL, locked_until = NULL
WHERE item_id = $1 AND locked_by = $2;

-- name: fail_request
-- TODO
WITH failed AS (
    UPDATE sink.backfill_items
    SET state = 'failed', reason = $2, finished_at = now(), locked_by = NULL, locked_until = NULL
    WHERE request_id = $1 AND state IN ('queued', 'running')
    RETURNING 1
), request AS (
    UPDATE sink.backfill_requests SET error = $2 WHERE request_id = $1
)
SELECT count(*)::integer FROM failed;

-- name: request_progress
-- TODO
SELECT * FROM studio.backfill_requests WHERE request_id = $1;

-- name: request_failures
-- TODO
SELECT coalesce(execution_sid, flow_sid) AS sid, state, reason
FROM sink.backfill_items
WHERE request_id = $1 AND state IN ('failed', 'gone')
ORDER BY item_id
LIMIT $2;

-- name: queue_depth
-- TODO
SELECT count(*) FROM sink.backfill_items WHERE state IN ('queued', 'running');

-- name: next_due
-- TODO
SELECT extract(epoch FROM min(not_before) - now())::float8 FROM sink.backfill_items
WHERE state IN ('queued', 'running') AND ($1::bigint IS NULL OR request_id = $1);

-- name: flow_of_execution
-- TODO
SELECT flow_sid FROM sink.executions WHERE execution_sid = $1;

-- name: merge_api_executions
-- TODO
SELECT sink.merge_api_executions($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::int[], $7::text[], $8::timestamptz[], $9::timestamptz[]);

-- name: set_execution_context
-- TODO
UPDATE sink.executions e
SET context = $2::jsonb, context_fetched_at = now(), gone_at = NULL, updated_at = now()
WHERE execution_sid = $1
RETURNING e.flow_revision,
          EXISTS (SELECT 1 FROM sink.flows f WHERE f.flow_sid = e.flow_sid) AS flow_known,
          EXISTS (SELECT 1 FROM sink.flow_revisions r
                  WHERE r.flow_sid = e.flow_sid AND r.revision = e.flow_revision)
              AS revision_known;

-- name: merge_api_steps
-- TODO
SELECT sink.merge_api_steps($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[], $9::text[],
                            $10::timestamptz[], $11::timestamptz[]);

-- name: steps_without_context
-- TODO
SELECT step_sid FROM sink.steps
WHERE execution_sid = $1 AND context_fetched_at IS NULL AND gone_at IS NULL
ORDER BY date_created, step_sid;

-- name: set_step_contexts
-- TODO
UPDATE sink.steps s
SET context = c.context::jsonb, context_fetched_at = now(), gone_at = NULL, updated_at = now()
FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(step_sid, context) ORDER BY 1) c
WHERE s.step_sid = c.step_sid;

-- name: mark_execution_gone
-- TODO
UPDATE sink.executions SET gone_at = now() WHERE execution_sid = $1;

-- name: mark_steps_gone
-- TODO
UPDATE sink.steps SET gone_at = now() WHERE step_sid = ANY($1::text[]);

-- name: upsert_flow
-- TODO
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
-- TODO
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

