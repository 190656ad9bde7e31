-- name: executions_of_contact
-- The executions whose stored contact is one of the forms $1 (plain, hashed, masked), or whose raw events name one.
SELECT execution_sid FROM sink.executions WHERE contact_channel_address = ANY($1::text[])
UNION
SELECT data ->> 'execution_sid' FROM sink.events
WHERE data ->> 'contact_channel_address' = ANY($1::text[]) AND data ->> 'execution_sid' IS NOT NULL;

-- name: contact_of_execution
-- The stored contact address of execution $1 (NULL when unknown), for the erasure record.
SELECT contact_channel_address FROM sink.executions WHERE execution_sid = $1;

-- name: insert_erasure
-- Records an erasure ($1 by whom, $2 subject kind, $3 contact HMAC, $4 execution SID); returns its id.
INSERT INTO sink.erasures (requested_by, subject, contact_hmac, execution_sid)
VALUES ($1, $2, $3, $4) RETURNING erasure_id;

-- name: insert_tombstones
-- Marks executions $1 erased by erasure $2, so nothing stores them again.
INSERT INTO sink.erased_executions (execution_sid, erasure_id)
SELECT DISTINCT unnest($1::text[]), $2::bigint
ON CONFLICT (execution_sid) DO NOTHING;

-- name: erase_steps
-- Deletes the steps (and their contexts) of executions $1; returns how many.
WITH gone AS (DELETE FROM sink.steps WHERE execution_sid = ANY($1::text[]) RETURNING 1)
SELECT count(*) FROM gone;

-- name: erase_executions
-- Deletes executions $1 (and their contexts); returns how many.
WITH gone AS (DELETE FROM sink.executions WHERE execution_sid = ANY($1::text[]) RETURNING 1)
SELECT count(*) FROM gone;

-- name: erase_events
-- Deletes raw events of executions $1 or naming a contact form $2 anywhere in their data; dedup keys stay.
WITH gone AS (
    DELETE FROM sink.events
    WHERE data ->> 'execution_sid' = ANY($1::text[])
       OR data ->> 'contact_channel_address' = ANY($2::text[])
       OR (cardinality($3::text[]) > 0 AND data::text LIKE ANY($3::text[]))
    RETURNING 1)
SELECT count(*) FROM gone;

-- name: erase_backfill_items
-- Deletes the backfill items of executions $1 (their requests stay); returns how many.
WITH gone AS (DELETE FROM sink.backfill_items WHERE execution_sid = ANY($1::text[]) RETURNING 1)
SELECT count(*) FROM gone;

-- name: erase_rejected
-- Deletes rejected events whose raw bytes contain any of the byte strings $1; returns how many.
WITH gone AS (
    DELETE FROM sink.rejected_events r
    WHERE EXISTS (SELECT 1 FROM unnest($1::bytea[]) AS f(form) WHERE position(f.form IN r.raw) > 0)
    RETURNING 1)
SELECT count(*) FROM gone;

-- name: clear_execution_contexts_naming
-- Expires the contexts of other executions whose text contains a LIKE pattern $1; returns how many.
WITH hit AS (
    UPDATE sink.executions SET context = NULL, context_expired_at = now(), updated_at = now()
    WHERE context IS NOT NULL AND context::text LIKE ANY($1::text[])
    RETURNING 1)
SELECT count(*) FROM hit;

-- name: clear_step_contexts_naming
-- Expires the contexts of other steps whose text contains a LIKE pattern $1; returns how many.
WITH hit AS (
    UPDATE sink.steps SET context = NULL, context_expired_at = now(), updated_at = now()
    WHERE context IS NOT NULL AND context::text LIKE ANY($1::text[])
    RETURNING 1)
SELECT count(*) FROM hit;

-- name: set_erasure_counts
-- Stores what erasure $1 removed, per table ($2 JSON object).
UPDATE sink.erasures SET removed = $2::jsonb WHERE erasure_id = $1;

-- name: plain_contacts_batch
-- Executions after SID $1 whose contact is neither hashed nor masked, $2 at most, by SID.
SELECT execution_sid, contact_channel_address FROM sink.executions
WHERE execution_sid > $1 AND contact_channel_address IS NOT NULL
  AND contact_channel_address !~ '^h:[0-9a-f]{64}$'
  AND position('*' IN contact_channel_address) = 0
ORDER BY execution_sid LIMIT $2;

-- name: set_contacts
-- Rewrites the contacts of executions $1 to $2 (locking rows in SID order, like ingest).
UPDATE sink.executions e SET contact_channel_address = u.contact, updated_at = now()
FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(sid, contact) ORDER BY 1) u
WHERE e.execution_sid = u.sid;

-- name: execution_contexts_batch
-- Stored execution contexts after SID $1, $2 at most, by SID.
SELECT execution_sid AS sid, context FROM sink.executions
WHERE execution_sid > $1 AND context IS NOT NULL ORDER BY execution_sid LIMIT $2;

-- name: step_contexts_batch
-- Stored step contexts after SID $1, $2 at most, by SID.
SELECT step_sid AS sid, context FROM sink.steps
WHERE step_sid > $1 AND context IS NOT NULL ORDER BY step_sid LIMIT $2;

-- name: rewrite_execution_contexts
-- Replaces the contexts of executions $1 with JSON texts $2, in SID order.
UPDATE sink.executions e SET context = u.context::jsonb, updated_at = now()
FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(sid, context) ORDER BY 1) u
WHERE e.execution_sid = u.sid;

-- name: rewrite_step_contexts
-- Replaces the contexts of steps $1 with JSON texts $2, in SID order.
UPDATE sink.steps s SET context = u.context::jsonb, updated_at = now()
FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(sid, context) ORDER BY 1) u
WHERE s.step_sid = u.sid;

-- name: events_batch
-- Raw events with data after key ($1 received_at, $2 source, $3 event_id), $4 at most, in key order.
SELECT received_at, source, event_id, data, extensions FROM sink.events
WHERE data IS NOT NULL
  AND ($1::timestamptz IS NULL OR (received_at, source, event_id) > ($1, $2, $3))
ORDER BY received_at, source, event_id LIMIT $4;

-- name: rewrite_events
-- Replaces the data and extensions of raw events keyed by ($1, $2, $3) with JSON texts $4, $5.
UPDATE sink.events e SET data = u.data::jsonb, extensions = u.extensions::jsonb
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[])
     AS u(received_at, source, event_id, data, extensions)
WHERE e.received_at = u.received_at AND e.source = u.source AND e.event_id = u.event_id;

-- name: erase_quarantined
-- Deletes quarantined deliveries whose raw body contains any of the byte strings $1; how many.
WITH gone AS (
    DELETE FROM sink.quarantine q
    WHERE EXISTS (SELECT 1 FROM unnest($1::bytea[]) AS f(form) WHERE position(f.form IN q.body) > 0)
    RETURNING 1)
SELECT count(*) FROM gone;

-- name: rejected_batch
-- Rejected events with raw bytes after id $1, $2 at most, by id.
SELECT rejected_id, raw FROM sink.rejected_events
WHERE rejected_id > $1 AND raw_purged_at IS NULL ORDER BY rejected_id LIMIT $2;

-- name: rewrite_rejected
-- Replaces the raw bytes of rejected events $1 with $2 (and raw_text with $3).
UPDATE sink.rejected_events r SET raw = u.raw, raw_text = u.raw_text
FROM unnest($1::bigint[], $2::bytea[], $3::text[]) AS u(id, raw, raw_text)
WHERE r.rejected_id = u.id;

-- name: expire_execution_contexts
-- Nulls up to $2 execution contexts of executions created before $1, skipping locked rows; returns how many.
WITH due AS (
    SELECT execution_sid FROM sink.executions
    WHERE context IS NOT NULL AND coalesce(date_created, first_seen_at) < $1
    ORDER BY coalesce(date_created, first_seen_at) LIMIT $2
    FOR UPDATE SKIP LOCKED
), hit AS (
    UPDATE sink.executions e SET context = NULL, context_expired_at = now()
    FROM due WHERE e.execution_sid = due.execution_sid
    RETURNING 1)
SELECT count(*) FROM hit;

-- name: expire_step_contexts
-- Nulls up to $2 step contexts of steps created before $1, skipping locked rows; returns how many.
WITH due AS (
    SELECT step_sid FROM sink.steps
    WHERE context IS NOT NULL AND coalesce(date_created, first_seen_at) < $1
    ORDER BY coalesce(date_created, first_seen_at) LIMIT $2
    FOR UPDATE SKIP LOCKED
), hit AS (
    UPDATE sink.steps s SET context = NULL, context_expired_at = now()
    FROM due WHERE s.step_sid = due.step_sid
    RETURNING 1)
SELECT count(*) FROM hit;

-- name: purge_rejected_raw
-- Empties the raw bytes of up to $2 rejected events received before $1, skipping locked rows; returns how many.
WITH due AS (
    SELECT rejected_id FROM sink.rejected_events
    WHERE raw_purged_at IS NULL AND received_at < $1
    ORDER BY received_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), hit AS (
    UPDATE sink.rejected_events r SET raw = ''::bytea, raw_text = NULL, raw_purged_at = now()
    FROM due WHERE r.rejected_id = due.rejected_id
    RETURNING 1)
SELECT count(*) FROM hit;


-- name: quarantined_batch
-- Quarantined deliveries after id $1, $2 at most, by id, with their raw bodies.
SELECT quarantine_id, body FROM sink.quarantine
WHERE quarantine_id > $1 ORDER BY quarantine_id LIMIT $2;

-- name: remove_quarantined
-- Deletes the quarantined deliveries $1 (the usage totals follow by trigger); how many.
WITH gone AS (DELETE FROM sink.quarantine WHERE quarantine_id = ANY($1::bigint[]) RETURNING 1)
SELECT count(*) FROM gone;
