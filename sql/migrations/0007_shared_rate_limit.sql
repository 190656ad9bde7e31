-- One Studio API rate limit shared by every replica of the sink (sink.backfill.ratelimit's
-- SharedRateLimiter): a row per Twilio account holding when the next call may start, and
-- the pause and slowdown a 429 set. Calls start at slots 1/rate seconds apart, leased a few
-- at a time by each process; the rows change only by single statements
-- (sql/queries/ratelimit.sql), so this works through a transaction pooler: no session lock,
-- no LISTEN.
CREATE TABLE sink.rate_limits (
    key          text        PRIMARY KEY,  -- the account (or API key) calls are made as
    next_slot    timestamptz NOT NULL,     -- the earliest start of the next slot to lease
    paused_until timestamptz NOT NULL DEFAULT now(),  -- no slot before this: a 429's wait
    slowdown     float8      NOT NULL DEFAULT 1 CHECK (slowdown > 0 AND slowdown <= 1),
    slow_until   timestamptz NOT NULL DEFAULT now(),  -- the rate is times slowdown until then
    updated_at   timestamptz NOT NULL DEFAULT now()
);
