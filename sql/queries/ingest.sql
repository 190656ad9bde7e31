-- name: ingest_batch
-- Stores a group-commit batch (arrays per column) in one round trip; returns new events' indexes.
SELECT sink.ingest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[],
    $11::int[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
    $18::int[], $19::text[], $20::timestamptz[], $21::timestamptz[],
    $22::int[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[], $28::text[],
    $29::text[], $30::text[], $31::timestamptz[],
    $32::text[], $33::text[], $34::text[], $35::text[], $36::text[], $37::bytea[], $38::text[],
    $39::text[],
    $40::text[], $41::int[], $42::int[], $43::int[], $44::int[]);

-- name: count_batch_repeats
-- Counts an event's repeats within one batch on its key, in the batch's transaction.
-- (A key may appear once per statement, so repeats never reach sink.ingest itself.)
UPDATE sink.event_keys AS k
SET duplicates = k.duplicates + r.n, last_duplicate_at = now()
FROM unnest($1::text[], $2::text[], $3::int[]) AS r(source, event_id, n)
WHERE k.source = r.source AND k.event_id = r.event_id;

