-- Upper bound of lever 1 (informative, not a fix): the per-row tombstone triggers of 0010 gone.
DROP TRIGGER executions_skip_erased ON sink.executions;
DROP TRIGGER steps_skip_erased ON sink.steps;
DROP TRIGGER events_skip_erased ON sink.events;
