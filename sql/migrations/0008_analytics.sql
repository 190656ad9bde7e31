-- studio-sink schema, version 8: flow analytics (docs/analytics.md).
--
-- sink.flow_rollup holds, per flow, UTC hour and UTC day, revision, subflow, transition
-- (transitioned_from, transitioned_to, event) and dwell bucket, the counts the studio
-- analytics functions read. It is never written by hand: every writer of sink.steps and
-- sink.executions recomputes the contribution of the executions it touches, before and
-- after its change, and adds the difference, in the same transaction. A contribution is a
-- pure function of one execution's stored rows (sink.rollup_contrib), so the rollup equals
-- a recomputation from the tables whatever the order, duplicates or replays.
--
-- Dwell buckets: bucket b (0..127) holds times t (milliseconds) with 4*log2(t) in [b, b+1)
-- (t < 1 ms in bucket 0); a percentile is the geometric middle of its bucket, within 9.05%.

CREATE TABLE sink.flow_rollup (
    flow_sid      text        NOT NULL,
    grain         "char"      NOT NULL CHECK (grain IN ('h', 'd')),  -- UTC hour or UTC day
    bucket_start  timestamptz NOT NULL,
    flow_revision integer,
    subflow       text        NOT NULL,  -- '' the flow's own graph; else the parent widget
    kind          "char"      NOT NULL CHECK (kind IN ('t', 'w')),  -- transition, widget
    t_from        text,       -- kind 'w': the widget
    t_to          text,
    event         text,
    dwell_bucket  smallint    NOT NULL,  -- -1: no previous step to measure from
    transitions   bigint      NOT NULL,  -- 't': steps
    executions    bigint      NOT NULL,  -- 't': first such transition of an execution;
                                         -- 'w': first time an execution was in the widget
    ended         bigint      NOT NULL   -- 'w': executions that finished in the widget
);
CREATE UNIQUE INDEX flow_rollup_key ON sink.flow_rollup
    (flow_sid, grain, bucket_start, flow_revision, subflow, kind, t_from, t_to, event,
     dwell_bucket) NULLS NOT DISTINCT;

CREATE TYPE sink.rollup_row AS (
    flow_sid text, hour timestamptz, flow_revision integer, subflow text, kind "char",
    t_from text, t_to text, event text, dwell_bucket smallint, transitions bigint,
    executions bigint, ended bigint
);

CREATE FUNCTION sink.dwell_bucket(dwell interval) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN dwell IS NULL THEN -1
                ELSE least(127, greatest(0, floor(
                    4 * ln(greatest(extract(epoch FROM dwell)::float8 * 1000, 1)) / ln(2))))
           END::smallint
$$;

CREATE FUNCTION sink.bucket_seconds(bucket smallint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT power(2::float8, (bucket + 0.5) / 4.0) / 1000
$$;

-- The nearest-rank q-quantile (q numeric, exact) of a histogram given as bucket and count
-- arrays, as the middle of its bucket. NULL for an empty histogram.
CREATE FUNCTION sink.bucket_quantile(buckets smallint[], counts bigint[], q numeric)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sink.bucket_seconds(b) FROM (
        SELECT b, sum(c) OVER (ORDER BY b) AS cum, sum(c) OVER () AS total
        FROM unnest(buckets, counts) AS u(b, c)
    ) x
    WHERE total > 0 AND cum >= greatest(1, ceil(q * total))
    ORDER BY b LIMIT 1
$$;

-- What executions p_sids contribute to the rollup, from sink.steps and sink.executions as
-- they are now. Steps without date_created are left out (they have no hour).
CREATE FUNCTION sink.rollup_contrib(p_sids text[]) RETURNS SETOF sink.rollup_row
LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT st.execution_sid, st.flow_sid, st.step_sid, st.name,
               st.transitioned_from AS f, st.transitioned_to AS t, st.date_created AS d,
               st.parent_step_sid AS p, e.flow_revision AS rev, e.status,
               CASE WHEN st.parent_step_sid IS NULL THEN ''
                    ELSE coalesce(ps.transitioned_to, '?') END AS sub
        -- LATERAL ... LIMIT 1: one index probe per step, whatever the tables' size (a
        -- generic plan would otherwise hash-join the whole executions table)
        FROM sink.steps st
        LEFT JOIN LATERAL (SELECT x.flow_revision, x.status FROM sink.executions x
                           WHERE x.execution_sid = st.execution_sid LIMIT 1) e ON true
        LEFT JOIN LATERAL (SELECT p.transitioned_to FROM sink.steps p
                           WHERE st.parent_step_sid IS NOT NULL
                             AND p.step_sid = st.parent_step_sid LIMIT 1) ps ON true
        WHERE st.execution_sid = ANY (p_sids) AND st.date_created IS NOT NULL
    ), c AS (
        SELECT s.*,
               lag(d) OVER (PARTITION BY execution_sid, p ORDER BY d, step_sid) AS prev_d,
               row_number() OVER (PARTITION BY execution_sid, p, f, t ORDER BY d, step_sid)
                   AS nth_ft,
               row_number() OVER (PARTITION BY execution_sid, p ORDER BY d DESC, step_sid DESC)
                   AS from_last
        FROM s
    ), touch AS (
        SELECT DISTINCT ON (c.execution_sid, c.p, w.widget)
               c.flow_sid, c.d, c.rev, c.sub, w.widget
        FROM c CROSS JOIN LATERAL (VALUES (c.f), (c.t)) AS w(widget)
        WHERE w.widget IS NOT NULL AND w.widget <> 'Ended'
        ORDER BY c.execution_sid, c.p, w.widget, c.d, c.step_sid
    )
    SELECT flow_sid, date_trunc('hour', d, 'UTC'), rev, sub, 't'::"char", f, t, name,
           sink.dwell_bucket(d - prev_d), count(*), count(*) FILTER (WHERE nth_ft = 1), 0::bigint
    FROM c GROUP BY 1, 2, 3, 4, 6, 7, 8, 9
    UNION ALL
    SELECT flow_sid, date_trunc('hour', d, 'UTC'), rev, sub, 'w', widget, NULL, NULL, -1::smallint,
           0, count(*), 0
    FROM touch GROUP BY 1, 2, 3, 4, 6
    UNION ALL
    SELECT flow_sid, date_trunc('hour', d, 'UTC'), rev, sub, 'w', w, NULL, NULL, -1::smallint,
           0, 0, count(*)
    FROM (SELECT c.*, CASE WHEN t = 'Ended' THEN f
                           WHEN p IS NULL AND status = 'ended' THEN t END AS w
          FROM c WHERE from_last = 1) l
    WHERE w IS NOT NULL AND w <> 'Ended'
    GROUP BY 1, 2, 3, 4, 6
$$;

-- Contribution rows summed per rollup key, at both grains.
CREATE FUNCTION sink.rollup_grains(p_rows sink.rollup_row[]) RETURNS SETOF sink.flow_rollup
LANGUAGE sql IMMUTABLE AS $$
    SELECT r.flow_sid, g.grain,
           CASE WHEN g.grain = 'h' THEN r.hour ELSE date_trunc('day', r.hour, 'UTC') END,
           r.flow_revision, r.subflow, r.kind, r.t_from, r.t_to, r.event, r.dwell_bucket,
           sum(r.transitions)::bigint, sum(r.executions)::bigint, sum(r.ended)::bigint
    FROM unnest(p_rows) AS r
    CROSS JOIN (VALUES ('h'::"char"), ('d'::"char")) AS g(grain)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
    HAVING sum(r.transitions) <> 0 OR sum(r.executions) <> 0 OR sum(r.ended) <> 0
$$;

-- Serializes writers of the same executions (64 lock slots, taken in order), so each one's
-- "before" is what the previous one committed.
CREATE FUNCTION sink.rollup_lock(p_sids text[]) RETURNS void
LANGUAGE sql AS $$
    SELECT count(pg_advisory_xact_lock(1397903180, slot)) FROM (
        SELECT DISTINCT abs(hashtext(s) % 64) AS slot FROM unnest(p_sids) AS s ORDER BY 1
    ) x
$$;

-- Locks p_sids and returns their contribution now, to hand to rollup_apply after the change.
CREATE FUNCTION sink.rollup_before(p_sids text[]) RETURNS sink.rollup_row[]
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sink.rollup_lock(p_sids);
    RETURN ARRAY(SELECT r FROM sink.rollup_contrib(p_sids) AS r);
END $$;

-- Adds (contribution now) - (p_before) to the rollup; the contribution only of flow
-- p_flow_sid and from hour p_from on when they are given (the rebuilds).
CREATE FUNCTION sink.rollup_apply(
    p_sids text[], p_before sink.rollup_row[], p_flow_sid text DEFAULT NULL,
    p_from timestamptz DEFAULT NULL
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sink.flow_rollup AS r
    SELECT * FROM sink.rollup_grains(
        ARRAY(SELECT a FROM sink.rollup_contrib(p_sids) AS a
              WHERE (p_flow_sid IS NULL OR a.flow_sid = p_flow_sid)
                AND (p_from IS NULL OR a.hour >= p_from))
        || ARRAY(SELECT ROW(b.flow_sid, b.hour, b.flow_revision, b.subflow, b.kind, b.t_from,
                            b.t_to, b.event, b.dwell_bucket, -b.transitions, -b.executions,
                            -b.ended)::sink.rollup_row
                 FROM unnest(p_before) AS b)) AS g
    ORDER BY g.flow_sid, g.grain, g.bucket_start, g.flow_revision, g.subflow, g.kind, g.t_from,
             g.t_to, g.event, g.dwell_bucket
    ON CONFLICT (flow_sid, grain, bucket_start, flow_revision, subflow, kind, t_from, t_to,
                 event, dwell_bucket)
    DO UPDATE SET transitions = r.transitions + EXCLUDED.transitions,
                  executions = r.executions + EXCLUDED.executions,
                  ended = r.ended + EXCLUDED.ended
$$;

-- Every rollup lock slot, for the rebuilds.
CREATE FUNCTION sink.rollup_lock_all() RETURNS void
LANGUAGE sql AS $$
    SELECT count(pg_advisory_xact_lock(1397903180, slot))
    FROM generate_series(0, 63) AS slot
$$;

-- The rollup of flow p_flow_sid recomputed from the tables; returns its row count. For bulk
-- loads that bypass the merge functions, and for repair. Executions go in chunks of 2000,
-- oldest first, so each chunk touches few rollup rows.
CREATE FUNCTION sink.rebuild_flow_rollup(p_flow_sid text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    chunk text[];
BEGIN
    PERFORM sink.rollup_lock_all();
    DELETE FROM sink.flow_rollup WHERE flow_sid = p_flow_sid;
    FOR chunk IN
        SELECT array_agg(execution_sid ORDER BY execution_sid) FROM (
            SELECT execution_sid, (row_number() OVER (ORDER BY first, execution_sid) - 1) / 2000 AS c
            FROM (SELECT execution_sid, min(date_created) AS first FROM sink.steps
                  WHERE flow_sid = p_flow_sid GROUP BY 1) x
        ) y GROUP BY c ORDER BY c
    LOOP
        PERFORM sink.rollup_apply(chunk, '{}', p_flow_sid);
    END LOOP;
    RETURN (SELECT count(*) FROM sink.flow_rollup WHERE flow_sid = p_flow_sid);
END $$;

-- Every flow's rollup from the UTC day of p_since on, recomputed; returns the rows from then.
CREATE FUNCTION sink.rebuild_rollup(p_since timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := date_trunc('day', p_since, 'UTC');
    chunk text[];
BEGIN
    PERFORM sink.rollup_lock_all();
    DELETE FROM sink.flow_rollup WHERE bucket_start >= lo;
    FOR chunk IN
        SELECT array_agg(execution_sid ORDER BY execution_sid) FROM (
            SELECT execution_sid, (row_number() OVER (ORDER BY first, execution_sid) - 1) / 2000 AS c
            FROM (SELECT execution_sid, min(date_created) AS first FROM sink.steps
                  WHERE date_created >= lo GROUP BY 1) x
        ) y GROUP BY c ORDER BY c
    LOOP
        PERFORM sink.rollup_apply(chunk, '{}', NULL, lo);
    END LOOP;
    RETURN (SELECT count(*) FROM sink.flow_rollup WHERE bucket_start >= lo);
END $$;

-- The writers. The bodies of 0001's and 0002's merge functions move, unchanged, to
-- sink.upsert_*; sink.merge_* keep their signatures and wrap them with the rollup upkeep.
CREATE FUNCTION sink.upsert_executions(
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

CREATE FUNCTION sink.upsert_steps(
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

CREATE FUNCTION sink.upsert_api_executions(
    x_execution_sid text[], x_flow_sid text[], x_account_sid text[], x_status text[],
    x_contact text[], x_flow_revision integer[], x_initiated_by text[],
    x_date_created timestamptz[], x_date_updated timestamptz[]
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sink.executions AS t (
        execution_sid, flow_sid, account_sid, status, contact_channel_address, flow_revision,
        initiated_by, date_created, date_updated)
    SELECT x.execution_sid, x.flow_sid, x.account_sid, x.status, x.contact, x.flow_revision,
           x.initiated_by, x.date_created, x.date_updated
    FROM unnest(x_execution_sid, x_flow_sid, x_account_sid, x_status, x_contact,
                x_flow_revision, x_initiated_by, x_date_created, x_date_updated)
         AS x(execution_sid, flow_sid, account_sid, status, contact, flow_revision,
              initiated_by, date_created, date_updated)
    ORDER BY x.execution_sid
    ON CONFLICT (execution_sid) DO UPDATE SET
        account_sid = coalesce(EXCLUDED.account_sid, t.account_sid),
        status = greatest(t.status, EXCLUDED.status),
        contact_channel_address = coalesce(EXCLUDED.contact_channel_address,
                                           t.contact_channel_address),
        flow_revision = coalesce(EXCLUDED.flow_revision, t.flow_revision),
        initiated_by = coalesce(EXCLUDED.initiated_by, t.initiated_by),
        date_created = coalesce(EXCLUDED.date_created, t.date_created),
        date_updated = greatest(t.date_updated, EXCLUDED.date_updated),
        gone_at = NULL,
        updated_at = now()
$$;

CREATE FUNCTION sink.upsert_api_steps(
    s_step_sid text[], s_execution_sid text[], s_flow_sid text[], s_account_sid text[],
    s_name text[], s_from text[], s_to text[], s_parent text[], s_widget_type text[],
    s_date_created timestamptz[], s_date_updated timestamptz[]
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sink.steps AS t (
        step_sid, execution_sid, flow_sid, account_sid, name, transitioned_from,
        transitioned_to, parent_step_sid, widget_type, date_created, date_updated)
    SELECT s.step_sid, s.execution_sid, s.flow_sid, s.account_sid, s.name, s.t_from, s.t_to,
           s.parent, s.widget_type, s.date_created, s.date_updated
    FROM unnest(s_step_sid, s_execution_sid, s_flow_sid, s_account_sid, s_name, s_from,
                s_to, s_parent, s_widget_type, s_date_created, s_date_updated)
         AS s(step_sid, execution_sid, flow_sid, account_sid, name, t_from, t_to, parent,
              widget_type, date_created, date_updated)
    ORDER BY s.step_sid
    ON CONFLICT (step_sid) DO UPDATE SET
        account_sid = coalesce(EXCLUDED.account_sid, t.account_sid),
        name = coalesce(EXCLUDED.name, t.name),
        transitioned_from = coalesce(EXCLUDED.transitioned_from, t.transitioned_from),
        transitioned_to = coalesce(EXCLUDED.transitioned_to, t.transitioned_to),
        parent_step_sid = coalesce(EXCLUDED.parent_step_sid, t.parent_step_sid),
        widget_type = coalesce(EXCLUDED.widget_type, t.widget_type),
        date_created = coalesce(EXCLUDED.date_created, t.date_created),
        date_updated = greatest(t.date_updated, EXCLUDED.date_updated),
        gone_at = NULL,
        updated_at = now()
$$;

-- The executions a step merge touches: the steps' own, and (should a step move) the ones the
-- stored steps belonged to.
CREATE FUNCTION sink.touched_by_steps(s_step_sid text[], s_execution_sid text[]) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT ARRAY(SELECT DISTINCT x FROM (
        SELECT unnest(s_execution_sid) AS x
        UNION ALL
        SELECT st.execution_sid FROM sink.steps st WHERE st.step_sid = ANY (s_step_sid)
    ) u WHERE x IS NOT NULL ORDER BY 1)
$$;

CREATE OR REPLACE FUNCTION sink.merge_executions(
    x_execution_sid text[], x_flow_sid text[], x_account_sid text[], x_status text[],
    x_contact text[], x_started_by text[], x_flow_revision integer[], x_ended_reason text[],
    x_date_created timestamptz[], x_date_updated timestamptz[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    touched text[] := ARRAY(SELECT DISTINCT x FROM unnest(x_execution_sid) AS x
                            WHERE x IS NOT NULL ORDER BY 1);
    before sink.rollup_row[] := sink.rollup_before(touched);
BEGIN
    PERFORM sink.upsert_executions(x_execution_sid, x_flow_sid, x_account_sid, x_status,
                                   x_contact, x_started_by, x_flow_revision, x_ended_reason,
                                   x_date_created, x_date_updated);
    PERFORM sink.rollup_apply(touched, before);
END $$;

CREATE OR REPLACE FUNCTION sink.merge_steps(
    s_step_sid text[], s_execution_sid text[], s_flow_sid text[], s_account_sid text[],
    s_name text[], s_from text[], s_to text[], s_parent text[], s_date_created timestamptz[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    touched text[] := sink.touched_by_steps(s_step_sid, s_execution_sid);
    before sink.rollup_row[] := sink.rollup_before(touched);
BEGIN
    PERFORM sink.upsert_steps(s_step_sid, s_execution_sid, s_flow_sid, s_account_sid, s_name,
                              s_from, s_to, s_parent, s_date_created);
    PERFORM sink.rollup_apply(touched, before);
END $$;

CREATE OR REPLACE FUNCTION sink.merge_api_executions(
    x_execution_sid text[], x_flow_sid text[], x_account_sid text[], x_status text[],
    x_contact text[], x_flow_revision integer[], x_initiated_by text[],
    x_date_created timestamptz[], x_date_updated timestamptz[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    touched text[] := ARRAY(SELECT DISTINCT x FROM unnest(x_execution_sid) AS x
                            WHERE x IS NOT NULL ORDER BY 1);
    before sink.rollup_row[] := sink.rollup_before(touched);
BEGIN
    PERFORM sink.upsert_api_executions(x_execution_sid, x_flow_sid, x_account_sid, x_status,
                                       x_contact, x_flow_revision, x_initiated_by,
                                       x_date_created, x_date_updated);
    PERFORM sink.rollup_apply(touched, before);
END $$;

CREATE OR REPLACE FUNCTION sink.merge_api_steps(
    s_step_sid text[], s_execution_sid text[], s_flow_sid text[], s_account_sid text[],
    s_name text[], s_from text[], s_to text[], s_parent text[], s_widget_type text[],
    s_date_created timestamptz[], s_date_updated timestamptz[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    touched text[] := sink.touched_by_steps(s_step_sid, s_execution_sid);
    before sink.rollup_row[] := sink.rollup_before(touched);
BEGIN
    PERFORM sink.upsert_api_steps(s_step_sid, s_execution_sid, s_flow_sid, s_account_sid,
                                  s_name, s_from, s_to, s_parent, s_widget_type,
                                  s_date_created, s_date_updated);
    PERFORM sink.rollup_apply(touched, before);
END $$;

-- Typed retention (sql/queries/retention.sql): an execution expires with its steps when its
-- last known activity is before the cutoff; their rollup contribution goes with them.
CREATE FUNCTION sink.delete_expired_typed(p_cutoff timestamptz)
RETURNS TABLE(executions bigint, steps bigint)
LANGUAGE plpgsql AS $$
DECLARE
    sids text[] := ARRAY(SELECT execution_sid FROM sink.executions
                         WHERE coalesce(date_updated, date_created, first_seen_at) < p_cutoff
                         ORDER BY 1);
    before sink.rollup_row[] := sink.rollup_before(sids);
BEGIN
    DELETE FROM sink.executions WHERE execution_sid = ANY (sids);
    GET DIAGNOSTICS executions = ROW_COUNT;
    DELETE FROM sink.steps WHERE execution_sid = ANY (sids);
    GET DIAGNOSTICS steps = ROW_COUNT;
    PERFORM sink.rollup_apply(sids, before);
    RETURN NEXT;
END $$;

-- The writer's one statement per batch (0001), with the rollup upkeep around its merges.
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

    INSERT INTO sink.events (source, event_id, type, specversion, time, dataschema,
                             datacontenttype, subject, data, extensions)
    SELECT u.source, u.event_id, u.type, u.specversion, u.time, u.dataschema,
           u.datacontenttype, u.subject, u.data::jsonb, u.extensions::jsonb
    FROM unnest(e_source, e_id, e_type, e_specversion, e_time, e_dataschema,
                e_datacontenttype, e_subject, e_data, e_extensions) WITH ORDINALITY
         AS u(source, event_id, type, specversion, time, dataschema, datacontenttype,
              subject, data, extensions, idx)
    JOIN unnest(new_idx) AS n(idx) ON n.idx = u.idx;

    -- the executions whose new facts change their rollup contribution (0008)
    touched := ARRAY(SELECT DISTINCT sid FROM (
        SELECT x.execution_sid AS sid
        FROM unnest(x_idx, x_execution_sid) AS x(idx, execution_sid)
        JOIN unnest(new_idx) AS n(idx) ON n.idx = x.idx
        UNION ALL
        SELECT unnest(sink.touched_by_steps(array_agg(s.step_sid), array_agg(s.execution_sid)))
        FROM unnest(s_idx, s_step_sid, s_execution_sid) AS s(idx, step_sid, execution_sid)
        JOIN unnest(new_idx) AS n(idx) ON n.idx = s.idx
    ) u WHERE sid IS NOT NULL ORDER BY 1);
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
    HAVING count(*) > 0;

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
-- The rollup rows of flow p_flow_sid for [since, until) rounded out to whole UTC hours: day
-- rows for the whole days inside, hour rows for the hours left at either edge.
CREATE FUNCTION sink.rollup_range(
    p_flow_sid text, p_since timestamptz, p_until timestamptz, p_revision integer
) RETURNS SETOF sink.flow_rollup
LANGUAGE sql STABLE AS $$
    WITH h AS (
        SELECT date_trunc('hour', p_since, 'UTC') AS lo,
               CASE WHEN date_trunc('hour', p_until, 'UTC') = p_until THEN p_until
                    ELSE date_trunc('hour', p_until, 'UTC') + interval '1 hour' END AS hi
    ), d AS (
        SELECT lo, hi,
               CASE WHEN date_trunc('day', lo, 'UTC') = lo THEN lo
                    ELSE date_trunc('day', lo, 'UTC') + interval '1 day' END AS dlo,
               date_trunc('day', hi, 'UTC') AS dhi
        FROM h
    ), b AS (  -- day rows [dlo, dhi) when that holds a whole day; hour rows for the rest
        SELECT lo, hi, dlo, dhi, CASE WHEN dlo < dhi THEN dlo ELSE hi END AS h1,
               CASE WHEN dlo < dhi THEN dhi ELSE hi END AS h2
        FROM d
    )
    SELECT r.* FROM sink.flow_rollup r, b
    WHERE r.flow_sid = p_flow_sid AND r.grain = 'd' AND b.dlo < b.dhi
      AND r.bucket_start >= b.dlo AND r.bucket_start < b.dhi
      AND (p_revision IS NULL OR r.flow_revision = p_revision)
    UNION ALL
    SELECT r.* FROM sink.flow_rollup r, b
    WHERE r.flow_sid = p_flow_sid AND r.grain = 'h'
      AND ((r.bucket_start >= b.lo AND r.bucket_start < b.h1)
           OR (r.bucket_start >= b.h2 AND r.bucket_start < b.hi))
      AND (p_revision IS NULL OR r.flow_revision = p_revision)
$$;

-- Widget types by revision, from the fetched definitions (states[].name -> states[].type).
CREATE FUNCTION sink.widget_types(p_flow_sid text)
RETURNS TABLE(revision integer, widget text, widget_type text)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT ON (d.revision, st->>'name') d.revision, st->>'name', st->>'type'
    FROM (SELECT revision, definition, 1 AS pref FROM sink.flow_revisions
          WHERE flow_sid = p_flow_sid
          UNION ALL
          SELECT revision, definition, 2 FROM sink.flows WHERE flow_sid = p_flow_sid) d
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(d.definition->'states') = 'array'
             THEN d.definition->'states' ELSE '[]'::jsonb END) AS st
    WHERE st->>'name' IS NOT NULL
    ORDER BY d.revision, st->>'name', d.pref
$$;

-- The edges of the flow's own graph by revision (p_subflows false), or of its subflows by
-- subflow widget, every revision together (p_subflows true): counts, events, percentiles.
CREATE FUNCTION sink.edge_stats(
    p_flow_sid text, p_since timestamptz, p_until timestamptz, p_revision integer,
    p_subflows boolean
) RETURNS TABLE(rev integer, subflow text, t_from text, t_to text, events text[],
                transitions bigint, executions bigint, p50 double precision,
                p90 double precision)
LANGUAGE sql STABLE AS $$
    WITH r AS (
        SELECT CASE WHEN p_subflows THEN NULL ELSE r.flow_revision END AS rev, r.subflow,
               r.t_from, r.t_to, r.event, r.dwell_bucket,
               sum(r.transitions)::bigint AS n, sum(r.executions)::bigint AS x
        FROM sink.rollup_range(p_flow_sid, p_since, p_until, p_revision) r
        WHERE r.kind = 't' AND (r.subflow <> '') = p_subflows
        GROUP BY 1, 2, 3, 4, 5, 6
    ), b AS (
        SELECT rev, subflow, t_from, t_to, dwell_bucket, sum(n)::bigint AS n
        FROM r WHERE dwell_bucket >= 0 GROUP BY 1, 2, 3, 4, 5
    ), q AS (
        SELECT rev, subflow, t_from, t_to,
               sink.bucket_quantile(array_agg(dwell_bucket), array_agg(n), 0.5) AS p50,
               sink.bucket_quantile(array_agg(dwell_bucket), array_agg(n), 0.9) AS p90
        FROM b GROUP BY 1, 2, 3, 4
    )
    SELECT e.rev, e.subflow, e.t_from, e.t_to, e.events, e.n, e.x, q.p50, q.p90
    FROM (SELECT rev, subflow, t_from, t_to,
                 array_agg(DISTINCT event ORDER BY event)
                     FILTER (WHERE event IS NOT NULL AND n > 0) AS events,
                 sum(n)::bigint AS n, sum(x)::bigint AS x
          FROM r GROUP BY 1, 2, 3, 4) e
    LEFT JOIN q ON q.rev IS NOT DISTINCT FROM e.rev AND q.subflow = e.subflow
               AND q.t_from IS NOT DISTINCT FROM e.t_from AND q.t_to IS NOT DISTINCT FROM e.t_to
    WHERE e.n <> 0 OR e.x <> 0
$$;

CREATE FUNCTION studio.transition_stats(
    flow_sid text, since timestamptz, until timestamptz, flow_revision integer DEFAULT NULL
) RETURNS TABLE(flow_revision integer, transitioned_from text, transitioned_to text,
                events text[], transitions bigint, executions bigint,
                median_seconds double precision, p90_seconds double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT rev, t_from, t_to, events, transitions, executions, p50, p90
    FROM sink.edge_stats($1, $2, $3, $4, false)
$$;

CREATE FUNCTION studio.widget_stats(
    flow_sid text, since timestamptz, until timestamptz, flow_revision integer DEFAULT NULL
) RETURNS TABLE(flow_revision integer, widget text, widget_type text, entered bigint,
                exits jsonb, ended_here bigint, drop_off_share double precision,
                median_seconds double precision, p90_seconds double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH r AS (
        SELECT r.flow_revision AS rev, r.kind, r.t_from AS widget, r.t_to, r.dwell_bucket,
               sum(r.transitions)::bigint AS n, sum(r.executions)::bigint AS x,
               sum(r.ended)::bigint AS ended
        FROM sink.rollup_range($1, $2, $3, $4) r
        WHERE r.subflow = '' AND r.t_from IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5
    ), w AS (
        SELECT rev, widget, sum(x)::bigint AS entered, sum(ended)::bigint AS ended
        FROM r WHERE kind = 'w' GROUP BY 1, 2
    ), ex AS (
        SELECT rev, widget, jsonb_object_agg(coalesce(t_to, 'null'), n) AS exits
        FROM (SELECT rev, widget, t_to, sum(n)::bigint AS n FROM r WHERE kind = 't'
              GROUP BY 1, 2, 3 HAVING sum(n) <> 0) e
        GROUP BY 1, 2
    ), b AS (
        SELECT rev, widget, dwell_bucket, sum(n)::bigint AS n
        FROM r WHERE kind = 't' AND dwell_bucket >= 0 GROUP BY 1, 2, 3
    ), q AS (
        SELECT rev, widget,
               sink.bucket_quantile(array_agg(dwell_bucket), array_agg(n), 0.5) AS p50,
               sink.bucket_quantile(array_agg(dwell_bucket), array_agg(n), 0.9) AS p90
        FROM b GROUP BY 1, 2
    ), k AS (
        SELECT rev, widget FROM w UNION SELECT rev, widget FROM ex
    )
    SELECT k.rev, k.widget, wt.widget_type, coalesce(w.entered, 0),
           coalesce(ex.exits, '{}'::jsonb), coalesce(w.ended, 0),
           w.ended::float8 / nullif(w.entered, 0), q.p50, q.p90
    FROM k
    LEFT JOIN w ON w.rev IS NOT DISTINCT FROM k.rev AND w.widget = k.widget
    LEFT JOIN ex ON ex.rev IS NOT DISTINCT FROM k.rev AND ex.widget = k.widget
    LEFT JOIN q ON q.rev IS NOT DISTINCT FROM k.rev AND q.widget = k.widget
    LEFT JOIN sink.widget_types($1) wt ON wt.revision = k.rev AND wt.widget = k.widget
    WHERE coalesce(w.entered, 0) <> 0 OR coalesce(w.ended, 0) <> 0 OR ex.exits IS NOT NULL
$$;

-- Subflows: the edges of subflow steps (parent_step_sid set), under the parent flow's widget
-- that ran them (the parent step's transitioned_to; '?' while the parent step is not stored).
CREATE FUNCTION studio.subflow_stats(flow_sid text, since timestamptz, until timestamptz)
RETURNS TABLE(subflow_widget text, transitioned_from text, transitioned_to text,
              events text[], transitions bigint, executions bigint,
              median_seconds double precision, p90_seconds double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT subflow, t_from, t_to, events, transitions, executions, p50, p90
    FROM sink.edge_stats($1, $2, $3, NULL, true)
$$;

-- How far (how many of p_widgets, in order) a list of widgets in visit order gets.
CREATE FUNCTION sink.funnel_depth(p_widgets text[], p_visits text[]) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    j integer := 1;
    n integer := coalesce(cardinality(p_widgets), 0);
    v text;
BEGIN
    IF n = 0 THEN
        RETURN 0;
    END IF;
    FOREACH v IN ARRAY coalesce(p_visits, '{}') LOOP
        IF v = p_widgets[j] THEN
            j := j + 1;
            EXIT WHEN j > n;
        END IF;
    END LOOP;
    RETURN j - 1;
END $$;

-- Executions of the flow started (date_created) in [since, until) that reached each widget
-- of the list after all the ones before it. Read from the steps, not the rollup: an order
-- across widgets is not mergeable.
CREATE FUNCTION studio.flow_funnel(
    flow_sid text, widgets text[], since timestamptz, until timestamptz
) RETURNS TABLE(step integer, widget text, executions bigint, conversion double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH ex AS (
        SELECT e.execution_sid FROM sink.executions e
        WHERE e.flow_sid = $1 AND e.date_created >= $3 AND e.date_created < $4
    ), depth AS (
        SELECT sink.funnel_depth($2, (
                   SELECT array_agg(v.w ORDER BY s.date_created, s.step_sid, v.o)
                   FROM sink.steps s
                   CROSS JOIN LATERAL (VALUES (1, s.transitioned_from), (2, s.transitioned_to))
                       AS v(o, w)
                   WHERE s.execution_sid = ex.execution_sid AND s.parent_step_sid IS NULL
               )) AS d
        FROM ex
    ), counts AS (
        SELECT i.step::integer AS step, i.widget,
               (SELECT count(*) FROM depth WHERE depth.d >= i.step)::bigint AS n
        FROM unnest($2) WITH ORDINALITY AS i(widget, step)
    )
    SELECT step, widget, n,
           n::float8 / nullif(coalesce(lag(n) OVER (ORDER BY step),
                                       (SELECT count(*) FROM ex)), 0)
    FROM counts ORDER BY step
$$;

-- How long an active execution may go without news before it counts as stuck: the setting
-- studio.stuck_after (e.g. SET studio.stuck_after = '30 minutes'), default 1 hour.
CREATE FUNCTION studio.stuck_after() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('studio.stuck_after', true), ''), '1 hour')::interval
$$;

-- Per flow, revision and UTC day an execution started (date_created, or first_seen_at while
-- only its steps are known).
CREATE VIEW studio.flow_outcomes AS
SELECT g.flow_sid, g.flow_revision, g.day,
       sum(g.n)::bigint AS executions,
       coalesce(sum(g.n) FILTER (WHERE g.status = 'ended'), 0)::bigint AS ended,
       coalesce(sum(g.n) FILTER (WHERE g.status = 'active'), 0)::bigint AS active,
       coalesce(sum(g.n) FILTER (WHERE g.stuck), 0)::bigint AS stuck,
       (coalesce(sum(g.n) FILTER (WHERE g.status = 'ended'), 0) / sum(g.n))::float8
           AS completion_rate,
       coalesce(jsonb_object_agg(g.reason, g.n) FILTER (WHERE g.status = 'ended'), '{}')
           AS by_ended_reason
FROM (
    SELECT flow_sid, flow_revision, day, status, reason, stuck, sum(n) AS n
    FROM (
        SELECT e.flow_sid, e.flow_revision,
               (coalesce(e.date_created, e.first_seen_at) AT TIME ZONE 'UTC')::date AS day,
               e.status, coalesce(e.ended_reason, 'unknown') AS reason,
               e.status = 'active' AND greatest(
                   coalesce(e.date_updated, e.date_created, e.first_seen_at),
                   (SELECT max(s.date_created) FROM sink.steps s
                    WHERE s.execution_sid = e.execution_sid)
               ) < now() - studio.stuck_after() AS stuck,
               1 AS n
        FROM sink.executions e
    ) x
    GROUP BY 1, 2, 3, 4, 5, 6
) g
GROUP BY g.flow_sid, g.flow_revision, g.day;

-- Every flow seen in executions: its name, executions started in the last 24 hours and 7
-- days, and of the last 7 days' the share ended and the share stuck.
CREATE VIEW studio.flows_overview AS
WITH RECURSIVE f AS (
    (SELECT flow_sid FROM sink.executions ORDER BY flow_sid LIMIT 1)
    UNION ALL
    SELECT (SELECT e.flow_sid FROM sink.executions e WHERE e.flow_sid > f.flow_sid
            ORDER BY e.flow_sid LIMIT 1)
    FROM f WHERE f.flow_sid IS NOT NULL
)
SELECT f.flow_sid, fl.friendly_name,
       coalesce(w.day_n, 0)::bigint AS executions_24h,
       coalesce(w.week_n, 0)::bigint AS executions_7d,
       (w.week_ended::float8 / nullif(w.week_n, 0)) AS completion_rate_7d,
       (w.week_stuck::float8 / nullif(w.week_n, 0)) AS stuck_share_7d,
       (SELECT max(e.date_created) FROM sink.executions e WHERE e.flow_sid = f.flow_sid)
           AS last_execution_at
FROM f
LEFT JOIN sink.flows fl ON fl.flow_sid = f.flow_sid
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE e.date_created >= now() - interval '24 hours') AS day_n,
           count(*) AS week_n,
           count(*) FILTER (WHERE e.status = 'ended') AS week_ended,
           count(*) FILTER (WHERE e.status = 'active' AND greatest(
               coalesce(e.date_updated, e.date_created),
               (SELECT max(s.date_created) FROM sink.steps s
                WHERE s.execution_sid = e.execution_sid)) < now() - studio.stuck_after())
               AS week_stuck
    FROM sink.executions e
    WHERE e.flow_sid = f.flow_sid AND e.date_created >= now() - interval '7 days'
) w ON true
WHERE f.flow_sid IS NOT NULL;

REVOKE ALL ON FUNCTION studio.transition_stats(text, timestamptz, timestamptz, integer)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION studio.widget_stats(text, timestamptz, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION studio.subflow_stats(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION studio.flow_funnel(text, text[], timestamptz, timestamptz) FROM PUBLIC;

-- The rollup of the rows already stored, then the consumer role's grants for the new objects.
SELECT sink.rebuild_rollup('-infinity');
SELECT sink.grant_studio_reader();
