-- Looking up a caller's executions (the execution browser's contact filter, and the
-- obvious analyst query) without scanning every execution.
CREATE INDEX IF NOT EXISTS executions_contact_created
    ON sink.executions (contact_channel_address, date_created DESC);
