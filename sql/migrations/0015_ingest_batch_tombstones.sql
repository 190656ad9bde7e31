-- studio-sink schema, version 15: cheaper ingest (issue 17; docs/benchmarks.md has the
-- measurements of each change, and of the ones not taken).
--
-- 1. The tombstones of 0010 are checked once per batch inside sink.ingest instead of by a
--    trigger per inserted row: sink.ingest leaves out what an erased execution's events
--    would store (raw event, execution row, step rows), exactly as the triggers did, and
--    marks its transaction (sink.tombstones_checked) so the triggers skip its rows. The
--    triggers stay, unchanged in effect, for every other writer (backfill merges, replay).
-- 2. sink.events loses its index on (source, event_id): sink.event_keys' primary key is the
--    dedup key. Its index on received_at becomes one on (received_at, source, event_id),
--    the key replay and privacy_apply page and join raw events by, so one index serves
--    what two did. (Building it blocks writes to sink.events while the migration runs.)
-- 3. sink.flow_rollup pages keep half their room free, so the update of a count (every
--    batch updates a row per flow, day and transition) stays on its page (a HOT update) and
--    adds no entry to the ten-column flow_rollup_key.

-- 2.
DROP INDEX sink.events_source_id;
DROP INDEX sink.events_received_at;
CREATE INDEX events_received_key ON sink.events (received_at, source, event_id);

-- 3. (pages written from now on; VACUUM FULL sink.flow_rollup applies it to existing ones)
ALTER TABLE sink.flow_rollup SET (fillfactor = 50);

-- 1.
DROP TRIGGER executions_skip_erased ON sink.executions;
DROP TRIGGER steps_skip_erased ON sink.steps;
DROP TRIGGER events_skip_erased ON sink.events;
CREATE TRIGGER executions_skip_erased BEFORE INSERT ON sink.executions
    FOR EACH ROW WHEN (current_setting('sink.tombstones_checked', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION sink.skip_erased_row();
CREATE TRIGGER steps_skip_erased BEFORE INSERT ON sink.steps
    FOR EACH ROW WHEN (current_setting('sink.tombstones_checked', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION sink.skip_erased_row();
CREATE TRIGGER events_skip_erased BEFORE INSERT ON sink.events
    FOR EACH ROW WHEN (current_setting('sink.tombstones_checked', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION sink.skip_erased_event();

CREATE OR REPLACE FUNCTION sink.ingest(
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
    erased text[];
    touched text[];
    before sink.rollup_row[];
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

    -- The tombstones (0010), looked up once for the batch (0015) rather than by a trigger
    -- per row: what an erased execution's events would store is left out below, as the
    -- triggers would leave it out. The triggers stay for every other writer.
    PERFORM set_config('sink.tombstones_checked', 'on', true);
    erased := ARRAY(SELECT x.execution_sid FROM sink.erased_executions x
                    WHERE x.execution_sid = ANY (x_execution_sid || s_execution_sid));

    INSERT INTO sink.events (source, event_id, type, specversion, time, dataschema,
                             datacontenttype, subject, data, extensions)
    SELECT u.source, u.event_id, u.type, u.specversion, u.time, u.dataschema,
           u.datacontenttype, u.subject, u.data, u.extensions
    FROM (SELECT u.source, u.event_id, u.type, u.specversion, u.time, u.dataschema,
                 u.datacontenttype, u.subject, u.data::jsonb AS data,
                 u.extensions::jsonb AS extensions
          FROM unnest(e_source, e_id, e_type, e_specversion, e_time, e_dataschema,
                      e_datacontenttype, e_subject, e_data, e_extensions) WITH ORDINALITY
               AS u(source, event_id, type, specversion, time, dataschema, datacontenttype,
                    subject, data, extensions, idx)
          JOIN unnest(new_idx) AS n(idx) ON n.idx = u.idx
          OFFSET 0) u
    -- as sink.skip_erased_event: by the execution SID in the data, whatever the event type
    WHERE u.data ->> 'execution_sid' IS NULL
       OR NOT EXISTS (SELECT 1 FROM sink.erased_executions x
                      WHERE x.execution_sid = u.data ->> 'execution_sid');

    -- the executions whose new facts change their rollup contribution (0008)
    touched := ARRAY(SELECT DISTINCT sid FROM (
        SELECT x.execution_sid AS sid
        FROM unnest(x_idx, x_execution_sid) AS x(idx, execution_sid)
        JOIN unnest(new_idx) AS n(idx) ON n.idx = x.idx
        UNION ALL
        SELECT unnest(sink.touched_by_steps(array_agg(s.step_sid), array_agg(s.execution_sid)))
        FROM unnest(s_idx, s_step_sid, s_execution_sid) AS s(idx, step_sid, execution_sid)
        JOIN unnest(new_idx) AS n(idx) ON n.idx = s.idx
        WHERE (s.execution_sid = ANY (erased)) IS NOT TRUE
    ) u WHERE sid IS NOT NULL AND sid <> ALL (erased) ORDER BY 1);
    before := sink.rollup_before(touched);

    PERFORM sink.upsert_executions(
        array_agg(x.execution_sid), array_agg(x.flow_sid), array_agg(x.account_sid),
        array_agg(x.status), array_agg(x.contact), array_agg(x.started_by),
        array_agg(x.flow_revision), array_agg(x.ended_reason), array_agg(x.date_created),
        array_agg(x.date_updated))
    FROM unnest(x_idx, x_execution_sid, x_flow_sid, x_account_sid, x_status, x_contact,
                x_started_by, x_flow_revision, x_ended_reason, x_date_created, x_date_updated)
         AS x(idx, execution_sid, flow_sid, account_sid, status, contact, started_by,
              flow_revision, ended_reason, date_created, date_updated)
    JOIN unnest(new_idx) AS n(idx) ON n.idx = x.idx
    WHERE (x.execution_sid = ANY (erased)) IS NOT TRUE
    HAVING count(*) > 0;

    PERFORM sink.upsert_steps(
        array_agg(s.step_sid), array_agg(s.execution_sid), array_agg(s.flow_sid),
        array_agg(s.account_sid), array_agg(s.name), array_agg(s.t_from), array_agg(s.t_to),
        array_agg(s.parent), array_agg(s.date_created))
    FROM unnest(s_idx, s_step_sid, s_execution_sid, s_flow_sid, s_account_sid, s_name,
                s_from, s_to, s_parent, s_date_created)
         AS s(idx, step_sid, execution_sid, flow_sid, account_sid, name, t_from, t_to,
              parent, date_created)
    JOIN unnest(new_idx) AS n(idx) ON n.idx = s.idx
    WHERE (s.execution_sid = ANY (erased)) IS NOT TRUE
    HAVING count(*) > 0;

    PERFORM set_config('sink.tombstones_checked', 'off', true);
    PERFORM sink.rollup_apply(touched, before);

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
