-- name: export_executions
-- Executions created (else first seen) in [$1, $2), NULL leaving a side open, oldest first.
SELECT * FROM studio.executions
WHERE ($1::timestamptz IS NULL OR coalesce(date_created, first_seen_at) >= $1)
  AND ($2::timestamptz IS NULL OR coalesce(date_created, first_seen_at) < $2)
ORDER BY coalesce(date_created, first_seen_at), execution_sid;

-- name: export_steps
-- Steps created (else first seen) in [$1, $2), NULL leaving a side open, oldest first.
SELECT * FROM studio.steps
WHERE ($1::timestamptz IS NULL OR coalesce(date_created, first_seen_at) >= $1)
  AND ($2::timestamptz IS NULL OR coalesce(date_created, first_seen_at) < $2)
ORDER BY coalesce(date_created, first_seen_at), step_sid;

