-- name: export_executions
-- TODO
SELECT * FROM studio.executions
WHERE ($1::timestamptz IS NULL OR coalesce(date_created, first_seen_at) >= $1)
  AND ($2::timestamptz IS NULL OR coalesce(date_created, first_seen_at) < $2)
ORDER BY coalesce(date_created, first_seen_at), execution_sid;

-- name: export_steps
-- TODO
SELECT * FROM studio.steps
WHERE ($1::timestamptz IS NULL OR coalesce(date_created, first_seen_at) >= $1)
  AND ($2::timestamptz IS NULL OR coalesce(date_created, first_seen_at) < $2)
ORDER BY coalesce(date_created, first_seen_at), step_sid;

