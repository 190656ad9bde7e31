-- name: enqueue_flows
-- Queues a 'flows' request: flow $2's definitions, or every flow's when $2 is NULL.
SELECT sink.enqueue_flows($1, $2);

-- name: missing_flow_revisions
-- Revisions of flow $1 that stored executions ran and that are not stored yet.
SELECT DISTINCT e.flow_revision
FROM sink.executions e
WHERE e.flow_sid = $1 AND e.flow_revision IS NOT NULL
  AND NOT EXISTS (SELECT FROM sink.flow_revisions r
                  WHERE r.flow_sid = e.flow_sid AND r.revision = e.flow_revision)
ORDER BY 1;
