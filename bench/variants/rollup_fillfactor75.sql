-- Lever 3a: room on every sink.flow_rollup page, so a count's update stays on its page (HOT)
-- and adds no entry to the 10-column flow_rollup_key.
ALTER TABLE sink.flow_rollup SET (fillfactor = 75);
