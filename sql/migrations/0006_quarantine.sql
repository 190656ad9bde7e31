-- studio-sink schema, version 6: the quarantine of deliveries refused for their signature.
--
-- A wrong SINK_PUBLIC_URL or Auth Token makes every delivery fail its signature check, and
-- Twilio drops an event for good when it is answered 401. So the receiver keeps what it
-- refuses here, raw and unparsed, within two caps (bytes kept per hour, bytes held in all),
-- and `studio-sink quarantine retry` checks each again once the configuration is fixed.
-- Nothing here is trusted: a body is parsed only after it passes a signature check.

CREATE TABLE sink.quarantine (
    quarantine_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    reason        text        NOT NULL,  -- why the signature check failed (a bounded code)
    -- the request as the sink saw it, before SINK_PUBLIC_URL or X-Forwarded-* applied
    scheme        text        NOT NULL,
    host          text        NOT NULL,
    raw_path      text        NOT NULL,  -- path and query, as received
    url_checked   text        NOT NULL,  -- the URL the signature was checked against
    headers       jsonb       NOT NULL,  -- [[name, value], ...]: what a re-check and the parser read
    body          bytea       NOT NULL,
    request_id    text,
    bytes         bigint      NOT NULL   -- what the row counts against the caps
);
CREATE INDEX quarantine_received_at ON sink.quarantine (received_at);

-- One row: what the quarantine holds (kept by the triggers below, whoever deletes), and the
-- bytes kept during the current hour. Every keep locks this row first, so keeps from any
-- number of replicas take turns and the caps hold exactly.
CREATE TABLE sink.quarantine_usage (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    bytes      bigint NOT NULL DEFAULT 0,
    deliveries bigint NOT NULL DEFAULT 0,
    hour       timestamptz,
    hour_bytes bigint NOT NULL DEFAULT 0
);
INSERT INTO sink.quarantine_usage DEFAULT VALUES;

-- Keeps sink.quarantine_usage's totals right whoever inserts, deletes or truncates.
CREATE FUNCTION sink.quarantine_count() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sign integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
    changed_bytes bigint := 0;
    changed integer := 0;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE sink.quarantine_usage SET bytes = 0, deliveries = 0;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT coalesce(sum(bytes), 0), count(*) INTO changed_bytes, changed FROM added;
    ELSE
        SELECT coalesce(sum(bytes), 0), count(*) INTO changed_bytes, changed FROM removed;
    END IF;
    IF changed > 0 THEN
        UPDATE sink.quarantine_usage
        SET bytes = bytes + sign * changed_bytes, deliveries = deliveries + sign * changed;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER quarantine_added AFTER INSERT ON sink.quarantine
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION sink.quarantine_count();
CREATE TRIGGER quarantine_removed AFTER DELETE ON sink.quarantine
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION sink.quarantine_count();
CREATE TRIGGER quarantine_truncated AFTER TRUNCATE ON sink.quarantine
    FOR EACH STATEMENT EXECUTE FUNCTION sink.quarantine_count();

-- Keeps one refused delivery, within the caps, in one transaction:
--   'kept'      kept; the oldest deliveries were dropped (evicted) to stay within max_bytes
--   'too_large' the delivery alone is over a cap: never kept
--   'hour_full' this hour's max_bytes_per_hour is spent: not kept (the next hour's may be)
--   'full'      the oldest deliveries are being retried right now and cannot make room
-- Eviction skips rows a retry holds (SKIP LOCKED), so a keep never waits for a retry.
CREATE FUNCTION sink.quarantine_keep(
    p_reason text, p_scheme text, p_host text, p_raw_path text, p_url_checked text,
    p_headers jsonb, p_body bytea, p_request_id text,
    max_bytes bigint, max_bytes_per_hour bigint,
    OUT outcome text, OUT evicted integer
)
LANGUAGE plpgsql AS $$
DECLARE
    this_hour timestamptz := date_trunc('hour', now());
    size bigint := octet_length(p_body) + octet_length(p_headers::text) + octet_length(p_scheme)
                   + octet_length(p_host) + octet_length(p_raw_path)
                   + octet_length(p_url_checked) + coalesce(octet_length(p_request_id), 0);
    held sink.quarantine_usage;
    spent bigint;
    need bigint;
    freed bigint := 0;
    victims bigint[] := '{}';
    victim record;
BEGIN
    evicted := 0;
    IF size > max_bytes OR size > max_bytes_per_hour THEN
        outcome := 'too_large';
        RETURN;
    END IF;
    SELECT * INTO held FROM sink.quarantine_usage FOR UPDATE;
    spent := CASE WHEN held.hour = this_hour THEN held.hour_bytes ELSE 0 END;
    IF spent + size > max_bytes_per_hour THEN
        outcome := 'hour_full';
        RETURN;
    END IF;
    need := held.bytes + size - max_bytes;
    IF need > 0 THEN
        FOR victim IN SELECT quarantine_id, bytes FROM sink.quarantine
                      ORDER BY quarantine_id FOR UPDATE SKIP LOCKED LOOP
            victims := victims || victim.quarantine_id;
            freed := freed + victim.bytes;
            EXIT WHEN freed >= need;
        END LOOP;
        IF freed < need THEN
            outcome := 'full';
            RETURN;
        END IF;
        DELETE FROM sink.quarantine WHERE quarantine_id = ANY (victims);
        evicted := cardinality(victims);
    END IF;
    INSERT INTO sink.quarantine
        (reason, scheme, host, raw_path, url_checked, headers, body, request_id, bytes)
    VALUES (p_reason, p_scheme, p_host, p_raw_path, p_url_checked, p_headers, p_body,
            p_request_id, size);
    UPDATE sink.quarantine_usage SET hour = this_hour, hour_bytes = spent + size;
    outcome := 'kept';
END $$;

-- What the quarantine holds, for people: no body and no header (unverified, attacker-made).
CREATE VIEW studio.quarantine AS
SELECT quarantine_id,
       received_at,
       reason,
       scheme || '://' || host || raw_path AS url_seen,
       url_checked,
       octet_length(body) AS body_bytes,
       request_id
FROM sink.quarantine;

-- the studio_reader role reads every studio view (default privileges of 0003 cover views
-- created by the migrating role; re-apply in case this role did not run 0003)
SELECT sink.grant_studio_reader();
