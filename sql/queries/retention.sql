-- name: advisory_xact_lock
-- Waits for advisory lock $1 until the transaction ends (maintenance runs take turns).
SELECT pg_advisory_xact_lock($1);


-- name: ensure_partitions
-- Creates the missing daily event partitions, yesterday to $1 days ahead; returns how many.
SELECT sink.ensure_event_partitions($1);

-- name: count_missing_partitions
-- How many daily event partitions, yesterday to $1 days ahead, are missing (the dry run).
SELECT count(*) FROM generate_series((now() AT TIME ZONE 'UTC')::date - 1,
                                     (now() AT TIME ZONE 'UTC')::date + $1::integer,
                                     interval '1 day') AS d
WHERE to_regclass(format('sink.events_%s', to_char(d, 'YYYYMMDD'))) IS NULL;

-- name: event_cutoff
-- The start of the UTC day $1 days before today, where raw events expire.
-- Partitions end on day boundaries, so events, their dedup keys and partitions expire together.
SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => $1))
       AT TIME ZONE 'UTC';

-- name: typed_cutoff
-- The typed tables' retention cutoff: exactly $1 days before now.
SELECT now() - make_interval(days => $1);

-- name: expired_partitions
-- Event partitions whose range ends at or before cutoff $1, with their bounds, oldest first.
SELECT name, lo, hi FROM (
    SELECT c.relname AS name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                         $re$FROM \('([^']+)'\) TO \('([^']+)'\)$re$))[1]::timestamptz AS lo,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                         $re$FROM \('([^']+)'\) TO \('([^']+)'\)$re$))[2]::timestamptz AS hi
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'sink.events'::regclass
) p
WHERE hi <= $1
ORDER BY lo;

-- name: drop_partition
-- Drops one expired partition of sink.events; {name} is filled in, quoted, by the caller.
DROP TABLE sink.{name};

-- name: delete_keys_between
-- Deletes up to $3 dedup keys of a dropped partition's range [$1, $2).
DELETE FROM sink.event_keys WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM sink.event_keys WHERE received_at >= $1 AND received_at < $2 LIMIT $3));

-- name: delete_old_default_partition_events
-- Deletes up to $2 rows the default partition caught before the cutoff $1.
DELETE FROM sink.events_default WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM sink.events_default WHERE received_at < $1 LIMIT $2));

-- name: count_old_default_partition_events
-- How many rows the default partition caught before cutoff $1 (the dry run).
SELECT count(*) FROM sink.events_default WHERE received_at < $1;

-- name: delete_old_event_keys
-- Deletes up to $2 rows of sink.event_keys received before the cutoff $1.
DELETE FROM sink.event_keys WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM sink.event_keys WHERE received_at < $1 LIMIT $2));

-- name: delete_old_rejected_events
-- Deletes up to $2 rows of sink.rejected_events received before the cutoff $1.
DELETE FROM sink.rejected_events WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM sink.rejected_events WHERE received_at < $1 LIMIT $2));

-- name: delete_old_deliveries
-- Deletes up to $2 rows of sink.deliveries received before the cutoff $1.
DELETE FROM sink.deliveries WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM sink.deliveries WHERE received_at < $1 LIMIT $2));

-- name: count_old_event_keys
-- How many dedup keys were received before cutoff $1 (the dry run).
SELECT count(*) FROM sink.event_keys WHERE received_at < $1;

-- name: count_old_rejected_events
-- How many rejected events were received before cutoff $1 (the dry run).
SELECT count(*) FROM sink.rejected_events WHERE received_at < $1;

-- name: count_old_deliveries
-- How many delivery records were received before cutoff $1 (the dry run).
SELECT count(*) FROM sink.deliveries WHERE received_at < $1;

-- name: delete_expired_typed
-- An execution expires with its steps when its last known activity is before the cutoff $1
-- (sink.delete_expired_typed, 0008, also takes their share out of the analytics rollup).
SELECT executions, steps FROM sink.delete_expired_typed($1);

-- name: count_expired_typed
-- How many executions, and steps of them, delete_expired_typed would delete at cutoff $1.
WITH gone AS (
    SELECT execution_sid FROM sink.executions
    WHERE coalesce(date_updated, date_created, first_seen_at) < $1
)
SELECT (SELECT count(*) FROM gone) AS executions,
       (SELECT count(*) FROM sink.steps s JOIN gone USING (execution_sid)) AS steps;

-- name: set_drop_lock_timeout
-- A partition drop waits at most this long for its lock: ingestion queues behind a waiting DROP.
SET LOCAL lock_timeout = '500ms';

