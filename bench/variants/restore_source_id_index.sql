-- Undoes 0015's part 2 (to measure its other parts alone).
CREATE INDEX events_source_id ON sink.events (source, event_id);
DROP INDEX sink.events_received_key;
CREATE INDEX events_received_at ON sink.events (received_at);
