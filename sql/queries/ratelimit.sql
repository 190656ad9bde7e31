-- name: take_rate_slots
-- Leases $3 consecutive call slots of limit $1 at $2/s (slower after a 429); none if paused over $4 s.
INSERT INTO sink.rate_limits AS r (key, next_slot)
VALUES ($1, now() + $3::integer / $2::float8 * interval '1 second')
ON CONFLICT (key) DO UPDATE SET
    next_slot = CASE
        WHEN r.paused_until > now() + $4::float8 * interval '1 second' THEN r.next_slot
        ELSE greatest(r.next_slot, r.paused_until, now())
             + $3::integer / ($2::float8 * CASE WHEN r.slow_until > now() THEN r.slowdown ELSE 1 END)
               * interval '1 second'
    END,
    updated_at = now()
RETURNING
    r.paused_until > now() + $4::float8 * interval '1 second' AS paused_long,
    extract(epoch FROM r.next_slot - now())::float8 AS next_slot_in,
    greatest(extract(epoch FROM r.paused_until - now())::float8, 0) AS paused_for,
    1 / ($2::float8 * CASE WHEN r.slow_until > now() THEN r.slowdown ELSE 1 END) AS slot_seconds;

-- name: record_rate_429
-- A 429 on limit $1: no slot for $2 s; the rate times $3 (compounding, not below $4) for $5 s.
INSERT INTO sink.rate_limits AS r (key, next_slot, paused_until, slowdown, slow_until)
VALUES ($1, now(), now() + $2::float8 * interval '1 second', greatest($3::float8, $4::float8),
        now() + $5::float8 * interval '1 second')
ON CONFLICT (key) DO UPDATE SET
    paused_until = greatest(r.paused_until, EXCLUDED.paused_until),
    slowdown = greatest(
        $4::float8, CASE WHEN r.slow_until > now() THEN r.slowdown ELSE 1 END * $3::float8
    ),
    slow_until = EXCLUDED.slow_until,
    updated_at = now();
