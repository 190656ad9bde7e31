-- studio-sink schema, version 1.
--
-- Schema "sink" holds the tables the sink writes; migrations may change them freely.
-- Schema "studio" holds the views SQL consumers read; their columns are a contract
-- (docs/sql.md, pinned by tests/integration/test_sql_contract.py).

CREATE SCHEMA IF NOT EXISTS sink;
CREATE SCHEMA IF NOT EXISTS studio;

-- Raw events: one row per distinct CloudEvent, partitioned by the day (UTC) it arrived.
CREATE TABLE sink.events (
    received_at     timestamptz NOT NULL DEFAULT now(),
    source          text        NOT NULL,
    event_id        text        NOT NULL,
    type            text        NOT NULL,
    specversion     text        NOT NULL,
    time            timestamptz,
    dataschema      text,
    datacontenttype text,
    subject         text,
    data            jsonb,
    extensions      jsonb
) PARTITION BY RANGE (received_at);

-- Safety net for a day nobody created a partition for; sink.create_event_partition moves
-- its rows out when the day's partition is created.
CREATE TABLE sink.events_default PARTITION OF sink.events DEFAULT;
CREATE INDEX events_received_at ON sink.events (received_at);
CREATE INDEX events_type_received_at ON sink.events (type, received_at);
CREATE INDEX events_source_id ON sink.events (source, event_id);

-- Dedup keys. A unique index on a partitioned table must contain the partition key, so
-- (source, event_id) cannot be unique across days there: this table holds that key for
-- as long as the event itself is kept (maintenance removes both together).
CREATE TABLE sink.event_keys (
    source            text        NOT NULL,
    event_id          text        NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    duplicates        integer     NOT NULL DEFAULT 0,
    last_duplicate_at timestamptz,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX event_keys_received_at ON sink.event_keys (received_at);

CREATE TABLE sink.rejected_events (
    rejected_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL,
    detail       text        NOT NULL,
    event_type   text,
    event_id     text,
    source       text,
    raw          bytea       NOT NULL,
    raw_text     text,       -- raw as text when it is valid UTF-8 without NUL
    request_id   text
);
CREATE INDEX rejected_events_received_at ON sink.rejected_events (received_at);

CREATE TABLE sink.deliveries (
    delivery_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    request_id   text,
    events       integer     NOT NULL,
    stored       integer     NOT NULL,
    duplicates   integer     NOT NULL,
    rejected     integer     NOT NULL
);
CREATE INDEX deliveries_received_at ON sink.deliveries (received_at);

CREATE TABLE sink.executions (
    execution_sid           text PRIMARY KEY,
    flow_sid                text        NOT NULL,
    account_sid             text,
    status                  text        NOT NULL DEFAULT 'active'
                                        CHECK (status IN ('active', 'ended')),
    contact_channel_address text,
    started_by              text,
    flow_revision           integer,
    ended_reason            text,
    date_created            timestamptz,
    date_updated            timestamptz,
    context                 jsonb,
    context_fetched_at      timestamptz,
    first_seen_at           timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX executions_flow_created ON sink.executions (flow_sid, date_created DESC);
CREATE INDEX executions_created ON sink.executions (date_created DESC);
CREATE INDEX executions_first_seen ON sink.executions (first_seen_at DESC);

CREATE TABLE sink.steps (
    step_sid           text PRIMARY KEY,
    execution_sid      text        NOT NULL,
    flow_sid           text        NOT NULL,
    account_sid        text,
    name               text,
    transitioned_from  text,
    transitioned_to    text,
    parent_step_sid    text,
    date_created       timestamptz,
    context            jsonb,
    context_fetched_at timestamptz,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX steps_execution ON sink.steps (execution_sid, date_created);
CREATE INDEX steps_without_context ON sink.steps (first_seen_at) WHERE context_fetched_at IS NULL;

-- Creates the partition of sink.events for one UTC day, moving any rows the default
-- partition caught for that day. Returns false when it already existed.
CREATE FUNCTION sink.create_event_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'events_' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(format('sink.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE sink.%I (LIKE sink.events INCLUDING DEFAULTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM sink.events_default'
        ' WHERE received_at >= $1 AND received_at < $2 RETURNING *)'
        ' INSERT INTO sink.%I SELECT * FROM moved', part) USING lo, hi;
    EXECUTE format('ALTER TABLE sink.events ATTACH PARTITION sink.%I FOR VALUES FROM (%L) TO (%L)',
                   part, lo, hi);
    RETURN true;
END $$;

-- Partitions from yesterday to `days_ahead` days from now.
CREATE FUNCTION sink.ensure_event_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    today date := (now() AT TIME ZONE 'UTC')::date;
    d date;
BEGIN
    FOR d IN SELECT generate_series(today - 1, today + days_ahead, interval '1 day')::date LOOP
        IF sink.create_event_partition(d) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

SELECT sink.ensure_event_partitions(7);

-- Merges facts about executions, order-independently: status only moves forward
-- ('ended' > 'active'), date_created takes the least value, date_updated the greatest,
-- descriptive fields keep a non-null value (the greatest if two differ), and nothing an
-- event carries ever clears a value (contexts are not touched by events at all).
CREATE FUNCTION sink.merge_executions(
    x_execution_sid text[], x_flow_sid text[], x_account_sid text[], x_status text[],
    x_contact text[], x_started_by text[], x_flow_revision integer[], x_ended_reason text[],
    x_date_created timestamptz[], x_date_updated timestamptz[]
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sink.executions AS t (
        execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
        flow_revision, ended_reason, date_created, date_updated)
    SELECT execution_sid, max(flow_sid), max(account_sid), max(status), max(contact),
           max(started_by), max(flow_revision), max(ended_reason), min(date_created),
           max(date_updated)
    FROM unnest(x_execution_sid, x_flow_sid, x_account_sid, x_status, x_contact, x_started_by,
                x_flow_revision, x_ended_reason, x_date_created, x_date_updated)
         AS x(execution_sid, flow_sid, account_sid, status, contact, started_by,
              flow_revision, ended_reason, date_created, date_updated)
    GROUP BY execution_sid
    ORDER BY execution_sid
    ON CONFLICT (execution_sid) DO UPDATE SET
        flow_sid = greatest(t.flow_sid, EXCLUDED.flow_sid),
        account_sid = greatest(t.account_sid, EXCLUDED.account_sid),
        status = greatest(t.status, EXCLUDED.status),
        contact_channel_address = greatest(t.contact_channel_address,
                                           EXCLUDED.contact_channel_address),
        started_by = greatest(t.started_by, EXCLUDED.started_by),
        flow_revision = greatest(t.flow_revision, EXCLUDED.flow_revision),
        ended_reason = greatest(t.ended_reason, EXCLUDED.ended_reason),
        date_created = least(t.date_created, EXCLUDED.date_created),
        date_updated = greatest(t.date_updated, EXCLUDED.date_updated),
        updated_at = now()
$$;

CREATE FUNCTION sink.merge_steps(
    s_step_sid text[], s_execution_sid text[], s_flow_sid text[], s_account_sid text[],
    s_name text[], s_from text[], s_to text[], s_parent text[], s_date_created timestamptz[]
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sink.steps AS t (
        step_sid, execution_sid, flow_sid, account_sid, name, transitioned_from,
        transitioned_to, parent_step_sid, date_created)
    SELECT step_sid, max(execution_sid), max(flow_sid), max(account_sid), max(name),
           max(t_from), max(t_to), max(parent), min(date_created)
    FROM unnest(s_step_sid, s_execution_sid, s_flow_sid, s_account_sid, s_name, s_from, s_to,
                s_parent, s_date_created)
         AS s(step_sid, execution_sid, flow_sid, account_sid, name, t_from, t_to, parent,
              date_created)
    GROUP BY step_sid
    ORDER BY step_sid
    ON CONFLICT (step_sid) DO UPDATE SET
        execution_sid = greatest(t.execution_sid, EXCLUDED.execution_sid),
        flow_sid = greatest(t.flow_sid, EXCLUDED.flow_sid),
        account_sid = greatest(t.account_sid, EXCLUDED.account_sid),
        name = greatest(t.name, EXCLUDED.name),
        transitioned_from = greatest(t.transitioned_from, EXCLUDED.transitioned_from),
        transitioned_to = greatest(t.transitioned_to, EXCLUDED.transitioned_to),
        parent_step_sid = greatest(t.parent_step_sid, EXCLUDED.parent_step_sid),
        date_created = least(t.date_created, EXCLUDED.date_created),
        updated_at = now()
$$;

-- One group-commit batch in one round trip. Events are deduplicated on (source, id);
-- only new events reach sink.events and feed the typed tables. Returns the (1-based)
-- positions of the events that were new.
CREATE FUNCTION sink.ingest(
    e_source text[], e_id text[], e_type text[], e_specversion text[], e_time timestamptz[],
    e_dataschema text[], e_datacontenttype text[], e_subject text[], e_data text[],
    e_extensions text[],
    x_idx integer[], x_execution_sid text[], x_flow_sid text[], x_account_sid text[],
    x_status text[], x_contact text[], x_started_by text[], x_flow_revision integer[],
    x_ended_reason text[], x_date_created timestamptz[], x_date_updated timestamptz[],
    s_idx integer[], s_step_sid text[], s_execution_sid text[], s_flow_sid text[],
    s_account_sid text[], s_name text[], s_from text[], s_to text[], s_parent text[],
    s_date_created timestamptz[],
    r_reason text[], r_detail text[], r_type text[], r_id text[], r_source text[],
    r_raw bytea[], r_raw_text text[], r_request_id text[],
    d_request_id text[], d_first integer[], d_count integer[], d_batch_duplicates integer[],
    d_rejected integer[]
) RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    new_idx integer[];
BEGIN
    WITH input AS (
        SELECT u.source, u.event_id, u.idx::integer AS idx
        FROM unnest(e_source, e_id) WITH ORDINALITY AS u(source, event_id, idx)
    ), keys AS (
        INSERT INTO sink.event_keys AS k (source, event_id)
        SELECT source, event_id FROM input ORDER BY source, event_id
        ON CONFLICT (source, event_id) DO UPDATE
            SET duplicates = k.duplicates + 1, last_duplicate_at = now()
        RETURNING k.source, k.event_id, (k.xmax = 0) AS inserted
    )
    SELECT coalesce(array_agg(i.idx ORDER BY i.idx), '{}') INTO new_idx
    FROM keys JOIN input i USING (source, event_id)
    WHERE keys.inserted;

    INSERT INTO sink.events (source, event_id, type, specversion, time, dataschema,
                             datacontenttype, subject, data, extensions)
    SELECT u.source, u.event_id, u.type, u.specversion, u.time, u.dataschema,
           u.datacontenttype, u.subject, u.data::jsonb, u.extensions::jsonb
    FROM unnest(e_source, e_id, e_type, e_specversion, e_time, e_dataschema,
                e_datacontenttype, e_subject, e_data, e_extensions) WITH ORDINALITY
         AS u(source, event_id, type, specversion, time, dataschema, datacontenttype,
              subject, data, extensions, idx)
    JOIN unnest(new_idx) AS n(idx) ON n.idx = u.idx;

    PERFORM sink.merge_executions(
        array_agg(x.execution_sid), array_agg(x.flow_sid), array_agg(x.account_sid),
        array_agg(x.status), array_agg(x.contact), array_agg(x.started_by),
        array_agg(x.flow_revision), array_agg(x.ended_reason), array_agg(x.date_created),
        array_agg(x.date_updated))
    FROM unnest(x_idx, x_execution_sid, x_flow_sid, x_account_sid, x_status, x_contact,
                x_started_by, x_flow_revision, x_ended_reason, x_date_created, x_date_updated)
         AS x(idx, execution_sid, flow_sid, account_sid, status, contact, started_by,
              flow_revision, ended_reason, date_created, date_updated)
    JOIN unnest(new_idx) AS n(idx) ON n.idx = x.idx
    HAVING count(*) > 0;

    PERFORM sink.merge_steps(
        array_agg(s.step_sid), array_agg(s.execution_sid), array_agg(s.flow_sid),
        array_agg(s.account_sid), array_agg(s.name), array_agg(s.t_from), array_agg(s.t_to),
        array_agg(s.parent), array_agg(s.date_created))
    FROM unnest(s_idx, s_step_sid, s_execution_sid, s_flow_sid, s_account_sid, s_name,
                s_from, s_to, s_parent, s_date_created)
         AS s(idx, step_sid, execution_sid, flow_sid, account_sid, name, t_from, t_to,
              parent, date_created)
    JOIN unnest(new_idx) AS n(idx) ON n.idx = s.idx
    HAVING count(*) > 0;

    INSERT INTO sink.rejected_events (reason, detail, event_type, event_id, source, raw,
                                      raw_text, request_id)
    SELECT * FROM unnest(r_reason, r_detail, r_type, r_id, r_source, r_raw, r_raw_text,
                         r_request_id);

    -- d_first/d_count: the delivery's slice of the event arrays (after in-batch dedup)
    INSERT INTO sink.deliveries (request_id, events, stored, duplicates, rejected)
    SELECT d.request_id, d.cnt + d.batch_dups,
           (SELECT count(*) FROM unnest(new_idx) AS n(idx)
             WHERE n.idx >= d.first AND n.idx < d.first + d.cnt),
           d.cnt + d.batch_dups - (SELECT count(*) FROM unnest(new_idx) AS n(idx)
             WHERE n.idx >= d.first AND n.idx < d.first + d.cnt),
           d.rejected
    FROM unnest(d_request_id, d_first, d_count, d_batch_duplicates, d_rejected)
         AS d(request_id, first, cnt, batch_dups, rejected);

    RETURN new_idx;
END $$;

-- Consumer views (the contract).
CREATE VIEW studio.events AS
SELECT e.event_id, e.source, e.type, e.specversion, e.time, e.dataschema, e.datacontenttype,
       e.subject, e.data, e.extensions, e.received_at, coalesce(k.duplicates, 0) AS duplicates
FROM sink.events e
LEFT JOIN sink.event_keys k ON k.source = e.source AND k.event_id = e.event_id;

CREATE VIEW studio.executions AS
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, context, context_fetched_at,
       first_seen_at, updated_at
FROM sink.executions;

CREATE VIEW studio.steps AS
SELECT step_sid, execution_sid, flow_sid, account_sid, name, transitioned_from,
       transitioned_to, parent_step_sid, date_created, context, context_fetched_at,
       first_seen_at, updated_at
FROM sink.steps;

CREATE VIEW studio.rejected_events AS
SELECT rejected_id, received_at, reason, detail, event_type, event_id, source, raw,
       raw_text, request_id
FROM sink.rejected_events;

CREATE VIEW studio.deliveries AS
SELECT delivery_id, received_at, request_id, events, stored, duplicates, rejected
FROM sink.deliveries;
