-- Privacy (docs/privacy.md): erasure with an audit trail and tombstones, context expiry,
-- rejected raw bytes purged, and the data inventory an auditor asks for.
--
-- The HMAC key of SINK_CONTACT_MODE=hash is never in the database: contact keys are
-- computed by the sink (`studio-sink privacy contact-key`, POST /privacy/contact-key) and
-- passed to SQL as values.

-- One row per erasure: when, by whom, what was removed (rows per table), and the HMAC of
-- the contact (NULL when no SINK_PII_KEY is set). The address itself is never stored.
CREATE TABLE sink.erasures (
    erasure_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    erased_at     timestamptz NOT NULL DEFAULT now(),
    requested_by  text        NOT NULL,
    subject       text        NOT NULL CHECK (subject IN ('contact', 'execution')),
    contact_hmac  text,
    execution_sid text,
    removed       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX erasures_erased_at ON sink.erasures (erased_at);

-- Tombstones: an erased execution is never stored again (a Twilio retry of an event never
-- seen before, a step event, a backfill listing). The SID holds no personal data.
CREATE TABLE sink.erased_executions (
    execution_sid text PRIMARY KEY,
    erased_at     timestamptz NOT NULL DEFAULT now(),
    erasure_id    bigint REFERENCES sink.erasures ON DELETE SET NULL
);

ALTER TABLE sink.executions ADD COLUMN context_expired_at timestamptz;
ALTER TABLE sink.steps ADD COLUMN context_expired_at timestamptz;
ALTER TABLE sink.rejected_events ADD COLUMN raw_purged_at timestamptz;

-- BEFORE INSERT: a row of an erased execution is skipped (RETURN NULL). sink.ingest and the
-- backfill merges insert with ON CONFLICT; a skipped row neither inserts nor updates.
CREATE FUNCTION sink.skip_erased_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM sink.erased_executions x
               WHERE x.execution_sid = NEW.execution_sid) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER executions_skip_erased BEFORE INSERT ON sink.executions
    FOR EACH ROW EXECUTE FUNCTION sink.skip_erased_row();
CREATE TRIGGER steps_skip_erased BEFORE INSERT ON sink.steps
    FOR EACH ROW EXECUTE FUNCTION sink.skip_erased_row();

-- Raw events of an erased execution are not stored again either (its dedup key is kept, so
-- a retry is a duplicate anyway; this covers an event of it never seen before).
CREATE FUNCTION sink.skip_erased_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.data ->> 'execution_sid' IS NOT NULL
       AND EXISTS (SELECT 1 FROM sink.erased_executions x
                   WHERE x.execution_sid = NEW.data ->> 'execution_sid') THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER events_skip_erased BEFORE INSERT ON sink.events
    FOR EACH ROW EXECUTE FUNCTION sink.skip_erased_event();

-- A backfill item for an erased execution is recorded as gone, never fetched.
CREATE FUNCTION sink.backfill_item_not_erased() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.execution_sid IS NOT NULL
       AND EXISTS (SELECT 1 FROM sink.erased_executions x
                   WHERE x.execution_sid = NEW.execution_sid) THEN
        NEW.state := 'gone';
        NEW.reason := 'erased on request (studio.erasures): never fetched';
        NEW.finished_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER backfill_items_not_erased BEFORE INSERT ON sink.backfill_items
    FOR EACH ROW EXECUTE FUNCTION sink.backfill_item_not_erased();

-- An expired context stays expired: a later fetch (an explicit backfill) does not store it.
CREATE FUNCTION sink.keep_context_expired() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.context_expired_at IS NOT NULL THEN
        NEW.context := NULL;
        NEW.context_expired_at := OLD.context_expired_at;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER executions_context_expired BEFORE UPDATE OF context ON sink.executions
    FOR EACH ROW EXECUTE FUNCTION sink.keep_context_expired();
CREATE TRIGGER steps_context_expired BEFORE UPDATE OF context ON sink.steps
    FOR EACH ROW EXECUTE FUNCTION sink.keep_context_expired();

CREATE INDEX executions_context_age ON sink.executions ((coalesce(date_created, first_seen_at)))
    WHERE context IS NOT NULL;
CREATE INDEX steps_context_age ON sink.steps ((coalesce(date_created, first_seen_at)))
    WHERE context IS NOT NULL;

-- Consumers' views.
CREATE VIEW studio.erasures AS
SELECT erasure_id, erased_at, requested_by, subject, contact_hmac, execution_sid, removed
FROM sink.erasures;

CREATE VIEW studio.erased_executions AS
SELECT execution_sid, erased_at, erasure_id FROM sink.erased_executions;

-- What personal data each table holds, in which form, and since when: "what do you keep,
-- and for how long". contact_forms counts the stored addresses by form (plain, hashed,
-- masked); the settings that bound each table's age are named in retained_by.
CREATE VIEW studio.data_inventory AS
WITH contacts AS (
    SELECT count(*) FILTER (WHERE contact_channel_address ~ '^h:[0-9a-f]{64}$') AS hashed,
           count(*) FILTER (WHERE position('*' IN contact_channel_address) > 0) AS masked,
           count(*) FILTER (WHERE contact_channel_address !~ '^h:[0-9a-f]{64}$'
                              AND position('*' IN contact_channel_address) = 0) AS plain
    FROM sink.executions
)
SELECT 'sink.executions'::text AS relation,
       'contact_channel_address (phone or chat address); context (what callers typed and'
       ' said, HTTP widget answers)'::text AS personal_data,
       format('plain %s, hashed %s, masked %s', c.plain, c.hashed, c.masked) AS contact_forms,
       (SELECT count(*) FROM sink.executions) AS row_count,
       (SELECT min(first_seen_at) FROM sink.executions) AS oldest,
       (SELECT min(coalesce(date_created, first_seen_at)) FROM sink.executions
        WHERE context IS NOT NULL) AS oldest_context,
       'SINK_TYPED_RETENTION_DAYS; contexts SINK_CONTEXT_RETENTION_DAYS'::text AS retained_by
FROM contacts c
UNION ALL
SELECT 'sink.steps', 'context (widget inputs and outputs)', NULL,
       (SELECT count(*) FROM sink.steps), (SELECT min(first_seen_at) FROM sink.steps),
       (SELECT min(coalesce(date_created, first_seen_at)) FROM sink.steps
        WHERE context IS NOT NULL),
       'SINK_TYPED_RETENTION_DAYS; contexts SINK_CONTEXT_RETENTION_DAYS'
UNION ALL
SELECT 'sink.events', 'data.contact_channel_address, in the form of SINK_CONTACT_MODE',
       'as sink.executions', NULL, (SELECT min(received_at) FROM sink.events), NULL,
       'SINK_RETENTION_DAYS'
UNION ALL
SELECT 'sink.rejected_events', 'raw bytes as received (redacted by SINK_CONTACT_MODE)', NULL,
       (SELECT count(*) FROM sink.rejected_events WHERE raw_purged_at IS NULL),
       (SELECT min(received_at) FROM sink.rejected_events WHERE raw_purged_at IS NULL), NULL,
       'SINK_REJECTED_RETENTION_DAYS (raw bytes)'
UNION ALL
SELECT 'sink.backfill_items', 'none (execution SIDs)', NULL,
       (SELECT count(*) FROM sink.backfill_items),
       (SELECT min(created_at) FROM sink.backfill_items), NULL, 'kept'
UNION ALL
SELECT 'sink.event_keys', 'none (dedup keys: source and event id)', NULL, NULL,
       (SELECT min(received_at) FROM sink.event_keys), NULL, 'SINK_RETENTION_DAYS'
UNION ALL
SELECT 'sink.erasures', 'the HMAC of each erased contact (no address)', NULL,
       (SELECT count(*) FROM sink.erasures), (SELECT min(erased_at) FROM sink.erasures),
       NULL, 'kept (the audit trail)';
