-- name: count_replay_events
-- TODO
SELECT count(*) FROM sink.events
WHERE type = ANY($1::text[]) AND received_at >= coalesce($2::timestamptz, '-infinity');

-- name: replay_batch
-- Keyset pagination in (received_at, source, event_id) order: each batch is its own transaction, so a long replay neither holds a snapshot nor loses its work when stopped.
SELECT received_at, source, event_id, type, specversion, time, dataschema, datacontenttype,
       subject, data::text AS data, extensions::text AS extensions
FROM sink.events
WHERE type = ANY($1::text[]) AND received_at >= coalesce($2::timestamptz, '-infinity')
  AND ($3::timestamptz IS NULL OR (received_at, source, event_id) > ($3, $4, $5))
ORDER BY received_at, source, event_id
LIMIT $6;

-- name: merge_event_executions
-- TODO
SELECT sink.merge_executions($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::int[], $8::text[], $9::timestamptz[],
                             $10::timestamptz[]);

-- name: merge_event_steps
-- TODO
SELECT sink.merge_steps($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::text[], $7::text[], $8::text[], $9::timestamptz[]);

