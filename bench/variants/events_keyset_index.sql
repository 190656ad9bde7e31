-- Lever 2' (on the migrations up to 0014; 0015 part 2 with no_source_id_index.sql):
-- sink.events' received_at index widened to the keyset (received_at, source, event_id)
-- that replay and privacy_apply page and join by.
DROP INDEX sink.events_received_at;
CREATE INDEX events_received_key ON sink.events (received_at, source, event_id);
