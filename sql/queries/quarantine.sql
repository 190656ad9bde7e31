-- name: quarantine_keep
-- Keeps one refused delivery within the caps ($9 bytes held, $10 per hour): outcome, evicted.
SELECT outcome, evicted
FROM sink.quarantine_keep($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10);

-- name: quarantine_usage
-- What the quarantine holds now, and the bytes it kept during the current hour.
SELECT bytes, deliveries,
       CASE WHEN hour = date_trunc('hour', now()) THEN hour_bytes ELSE 0 END AS hour_bytes
FROM sink.quarantine_usage;

-- name: quarantine_summary
-- Kept deliveries by reason and URLs (queries left out): how many, bytes, first and last seen.
SELECT reason,
       split_part(url_seen, '?', 1) AS url_seen,
       split_part(url_checked, '?', 1) AS url_checked,
       count(*) AS deliveries,
       sum(body_bytes) AS body_bytes,
       min(received_at) AS first_seen,
       max(received_at) AS last_seen
FROM studio.quarantine
GROUP BY 1, 2, 3
ORDER BY last_seen DESC, reason;

-- name: quarantine_recent_by_reason
-- Deliveries quarantined in the last $1 seconds, by reason, the most frequent first.
SELECT reason, count(*) AS deliveries, max(received_at) AS last_seen
FROM studio.quarantine
WHERE received_at >= now() - make_interval(secs => $1)
GROUP BY reason
ORDER BY deliveries DESC, reason;

-- name: quarantine_last_id
-- The newest kept delivery's id (0 when none): a retry goes no further than this.
SELECT coalesce(max(quarantine_id), 0) FROM sink.quarantine;

-- name: quarantine_batch
-- Kept deliveries after id $1 up to id $2, oldest first: at most $3, and about $4 bytes.
WITH next AS (
    SELECT quarantine_id, sum(bytes) OVER (ORDER BY quarantine_id) - bytes AS before
    FROM sink.quarantine
    WHERE quarantine_id > $1 AND quarantine_id <= $2
    ORDER BY quarantine_id
    LIMIT $3
)
SELECT q.quarantine_id, q.received_at, q.reason, q.scheme, q.host, q.raw_path, q.headers,
       q.body, q.request_id
FROM next JOIN sink.quarantine q USING (quarantine_id)
WHERE next.before < $4
ORDER BY q.quarantine_id;

-- name: quarantine_lock
-- Locks a kept delivery for its retry's transaction; NULL when it is gone (retried meanwhile).
SELECT quarantine_id FROM sink.quarantine WHERE quarantine_id = $1 FOR UPDATE;

-- name: quarantine_remove
-- Removes a kept delivery, in the transaction that stored what it held.
DELETE FROM sink.quarantine WHERE quarantine_id = $1;

-- name: delete_old_quarantine
-- Deletes up to $2 kept deliveries that arrived more than $1 days ago.
DELETE FROM sink.quarantine WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM sink.quarantine
    WHERE received_at < now() - make_interval(days => $1) LIMIT $2));

-- name: count_old_quarantine
-- How many kept deliveries arrived more than $1 days ago (the dry run).
SELECT count(*) FROM sink.quarantine WHERE received_at < now() - make_interval(days => $1);
