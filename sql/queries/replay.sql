-- name: count_replay_events
-- How many stored raw events of types $1 arrived since $2 (NULL: ever): the replay's total.
SELECT count(*) FROM sink.events
WHERE type = ANY($1::text[]) AND received_at >= coalesce($2::timestamptz, '-infinity');

-- name: replay_batch
-- The next $6 stored events of the replayed types, after the key ($3, $4, $5), in key order.
-- Keyset paging: each batch is its own transaction, so a long replay holds no snapshot
-- and keeps its work when stopped.
SELECT received_at, source, event_id, type, specversion, time, dataschema, datacontenttype,
       subject, data::text AS data, extensions::text AS extensions
FROM sink.events
WHERE type = ANY($1::text[]) AND received_at >= coalesce($2::timestamptz, '-infinity')
  AND ($3::timestamptz IS NULL OR (received_at, source, event_id) > ($3, $4, $5))
ORDER BY received_at, source, event_id
LIMIT $6;

-- name: merge_event_executions
-- Merges execution facts from replayed events, by the same rules as live ingestion.
SELECT sink.merge_executions($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::int[], $8::text[], $9::timestamptz[],
                             $10::timestamptz[]);

-- name: merge_event_steps
-- Merges step facts from replayed events, by the same rules as live ingestion.
SELECT sink.merge_steps($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::text[], $7::text[], $8::text[], $9::timestamptz[]);

