-- name: advisory_lock
-- runs (replicas, CronJob) take turns
SELECT pg_advisory_lock($1);

-- name: advisory_unlock
-- TODO
SELECT pg_advisory_unlock($1);

-- name: ensure_partitions
-- TODO
SELECT sink.ensure_event_partitions($1);

-- name: count_missing_partitions
-- TODO
SELECT count(*) FROM generate_series((now() AT TIME ZONE 'UTC')::date - 1,
                                     (now() AT TIME ZONE 'UTC')::date + $1::integer,
                                     interval '1 day') AS d
WHERE to_regclass(format('sink.events_%s', to_char(d, 'YYYYMMDD'))) IS NULL;

-- name: event_cutoff
-- Start of the UTC day `days` days before today: partitions end on day boundaries, so the events, their dedup keys and the partitions expire together.
SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => $1))
       AT TIME ZONE 'UTC';

-- name: typed_cutoff
-- TODO
SELECT now() - make_interval(days => $1);

-- name: expired_partitions
-- TODO
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
-- name quoted by the caller
DROP TABLE sink.{name};

-- name: delete_keys_between
-- TODO
DELETE FROM sink.event_keys WHERE received_at >= $1 AND received_at < $2;

-- name: delete_default_partition_events
-- Rows the default partition caught before the cutoff, and any key left without its event.
DELETE FROM sink.events_default WHERE received_at < $1;

-- name: count_default_partition_events
-- TODO
SELECT count(*) FROM sink.events_default WHERE received_at < $1;

-- name: delete_old_rows_event_keys
-- TODO
DELETE FROM sink.event_keys WHERE received_at < $1;

-- name: delete_old_rows_rejected_events
-- TODO
DELETE FROM sink.rejected_events WHERE received_at < $1;

-- name: delete_old_rows_deliveries
-- TODO
DELETE FROM sink.deliveries WHERE received_at < $1;

-- name: count_old_rows_event_keys
-- TODO
SELECT count(*) FROM sink.event_keys WHERE received_at < $1;

-- name: count_old_rows_rejected_events
-- TODO
SELECT count(*) FROM sink.rejected_events WHERE received_at < $1;

-- name: count_old_rows_deliveries
-- TODO
SELECT count(*) FROM sink.deliveries WHERE received_at < $1;

-- name: delete_expired_typed
-- An execution expires with its steps when its last known activity is before the cutoff.
WITH gone AS (
    DELETE FROM sink.executions
    WHERE coalesce(date_updated, date_created, first_seen_at) < $1
    RETURNING execution_sid
), steps_gone AS (
    DELETE FROM sink.steps s USING gone WHERE s.execution_sid = gone.execution_sid
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS executions, (SELECT count(*) FROM steps_gone) AS steps;

-- name: count_expired_typed
-- TODO
WITH gone AS (
    SELECT execution_sid FROM sink.executions
    WHERE coalesce(date_updated, date_created, first_seen_at) < $1
)
SELECT (SELECT count(*) FROM gone) AS executions,
       (SELECT count(*) FROM sink.steps s JOIN gone USING (execution_sid)) AS steps;

-- name: set_drop_lock_timeout
-- A partition drop waits at most this long for its lock: ingestion never queues behind it.
SET LOCAL lock_timeout = '3s';
