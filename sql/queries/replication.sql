-- name: replication_state
-- What a primary tells of its physical standbys: how many stream, how many are synchronous, how many this role may not inspect.
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('synchronous_standby_names') AS standby_names,
       current_setting('synchronous_commit') AS synchronous_commit,
       count(r.pid) AS standbys,
       count(r.pid) FILTER (WHERE r.sync_state IS NULL) AS hidden,
       count(r.pid) FILTER (WHERE r.sync_state IN ('sync', 'quorum')) AS synchronous
FROM pg_stat_replication AS r
WHERE r.pid NOT IN (
    SELECT s.active_pid FROM pg_replication_slots AS s
    WHERE s.slot_type = 'logical' AND s.active_pid IS NOT NULL
);
