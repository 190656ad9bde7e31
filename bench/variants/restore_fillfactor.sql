-- Undoes 0015's part 3 on a fresh database (to measure its other parts alone).
ALTER TABLE sink.flow_rollup SET (fillfactor = 100);
