"""Stage 4, the data's life cycle: partitions and retention, replay, export."""
