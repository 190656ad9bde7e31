-- Lever 2: the (source, event_id) index of sink.events, which sink.event_keys' key duplicates.
DROP INDEX sink.events_source_id;
