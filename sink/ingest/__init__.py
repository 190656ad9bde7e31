"""Stage 2, ingest: verify a delivery's signature, parse its CloudEvents and Studio facts,
and store batches of deliveries with group commit. No HTTP server code lives here."""
