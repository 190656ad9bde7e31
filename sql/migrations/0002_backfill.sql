-- studio-sink schema, version 2: backfill from the Studio v2 REST API.
--
-- A backfill request (sink.backfill_requests) owns items (sink.backfill_items): one per
-- execution to fetch, or one per flow and time range to list. Workers claim items with
-- FOR UPDATE SKIP LOCKED and hold them under a lease (locked_until, renewed while they
-- work); an item whose worker died is claimed again when the lease ends. not_before is
-- the earliest time an item may be claimed: the retry backoff for a queued item, the
-- lease end for a running one, so one partial index finds every claimable item.

-- Facts only the REST API has, and "the API answered 404" (gone) marks.
ALTER TABLE sink.executions
    ADD COLUMN initiated_by text,
    ADD COLUMN gone_at      timestamptz;
ALTER TABLE sink.steps
    ADD COLUMN widget_type  text,
    ADD COLUMN date_updated timestamptz,
    ADD COLUMN gone_at      timestamptz;
CREATE INDEX executions_without_context ON sink.executions (first_seen_at)
    WHERE context_fetched_at IS NULL AND gone_at IS NULL;

-- Flows as the REST API describes them: the latest fetched state, and each revision.
CREATE TABLE sink.flows (
    flow_sid       text PRIMARY KEY,
    account_sid    text,
    friendly_name  text,
    status         text,
    revision       integer,
    definition     jsonb,
    commit_message text,
    valid          boolean,
    date_created   timestamptz,
    date_updated   timestamptz,
    fetched_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sink.flow_revisions (
    flow_sid       text    NOT NULL,
    revision       integer NOT NULL,
    account_sid    text,
    friendly_name  text,
    status         text,
    definition     jsonb,
    commit_message text,
    valid          boolean,
    date_created   timestamptz,
    date_updated   timestamptz,
    fetched_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_sid, revision)
);

CREATE TABLE sink.backfill_requests (
    request_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('executions', 'flow', 'missing')),
    flow_sid     text,
    since        timestamptz,
    until        timestamptz,
    requested_by text        NOT NULL
                             CHECK (requested_by IN ('http', 'sql', 'cli', 'auto', 'ui')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    error        text        -- why the whole request failed (e.g. refused credentials)
);
CREATE INDEX backfill_requests_created ON sink.backfill_requests (created_at DESC);

CREATE TABLE sink.backfill_items (
    item_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id    bigint      NOT NULL
                              REFERENCES sink.backfill_requests ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('execution', 'flow_range')),
    flow_sid      text,
    execution_sid text,
    since         timestamptz,
    until         timestamptz,
    listed        boolean     NOT NULL DEFAULT false, -- the execution came from a listing
    state         text        NOT NULL DEFAULT 'queued'
                              CHECK (state IN ('queued', 'running', 'done', 'gone', 'failed')),
    attempts      integer     NOT NULL DEFAULT 0,
    not_before    timestamptz NOT NULL DEFAULT now(),
    locked_by     text,
    locked_until  timestamptz,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (request_id, execution_sid)
);
CREATE INDEX backfill_items_claimable ON sink.backfill_items (not_before, item_id)
    WHERE state IN ('queued', 'running');
CREATE INDEX backfill_items_request ON sink.backfill_items (request_id, state);

-- Queues a request and its first items, and wakes the workers (NOTIFY is sent at commit).
-- kind 'executions': p_execution_sids; 'flow': p_flow_sid, p_since, p_until; 'missing':
-- every stored execution whose context, or one of whose steps' contexts, was never fetched.
CREATE FUNCTION sink.enqueue_backfill(
    p_kind text, p_requested_by text, p_execution_sids text[], p_flow_sid text,
    p_since timestamptz, p_until timestamptz
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rid bigint;
    bad text;
BEGIN
    IF p_kind = 'executions' THEN
        IF coalesce(cardinality(p_execution_sids), 0) = 0 THEN
            RAISE EXCEPTION 'no execution SID given'
                USING ERRCODE = '22023', HINT = 'name at least one Execution SID (FN...)';
        END IF;
        SELECT s INTO bad FROM unnest(p_execution_sids) AS s
        WHERE s IS NULL OR s !~ '^FN[0-9a-fA-F]{32}$' LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'not an Execution SID: %', coalesce(quote_literal(bad), 'NULL')
                USING ERRCODE = '22023',
                      HINT = 'an Execution SID is FN followed by 32 hex digits';
        END IF;
    ELSIF p_kind = 'flow' THEN
        IF p_flow_sid IS NULL OR p_flow_sid !~ '^FW[0-9a-fA-F]{32}$' THEN
            RAISE EXCEPTION 'not a Flow SID: %', coalesce(quote_literal(p_flow_sid), 'NULL')
                USING ERRCODE = '22023', HINT = 'a Flow SID is FW followed by 32 hex digits';
        END IF;
        IF p_since IS NULL OR p_until IS NULL OR p_since >= p_until THEN
            RAISE EXCEPTION 'the time range [%, %) is empty', p_since, p_until
                USING ERRCODE = '22023', HINT = 'give since < until (until defaults to now)';
        END IF;
    ELSIF p_kind IS DISTINCT FROM 'missing' THEN
        RAISE EXCEPTION 'unknown backfill kind %', quote_literal(p_kind)
            USING ERRCODE = '22023', HINT = 'use executions, flow or missing';
    END IF;

    INSERT INTO sink.backfill_requests (kind, flow_sid, since, until, requested_by)
    VALUES (p_kind, CASE WHEN p_kind = 'flow' THEN p_flow_sid END,
            CASE WHEN p_kind = 'flow' THEN p_since END,
            CASE WHEN p_kind = 'flow' THEN p_until END, p_requested_by)
    RETURNING request_id INTO rid;

    IF p_kind = 'executions' THEN
        INSERT INTO sink.backfill_items (request_id, kind, execution_sid, flow_sid)
        SELECT rid, 'execution', x.sid, e.flow_sid
        FROM (SELECT DISTINCT s AS sid FROM unnest(p_execution_sids) AS s) x
        LEFT JOIN sink.executions e ON e.execution_sid = x.sid
        ORDER BY x.sid;
    ELSIF p_kind = 'flow' THEN
        INSERT INTO sink.backfill_items (request_id, kind, flow_sid, since, until)
        VALUES (rid, 'flow_range', p_flow_sid, p_since, p_until);
    ELSE
        INSERT INTO sink.backfill_items (request_id, kind, execution_sid, flow_sid)
        SELECT rid, 'execution', e.execution_sid, e.flow_sid
        FROM sink.executions e
        WHERE e.gone_at IS NULL
          AND (e.context_fetched_at IS NULL
               OR EXISTS (SELECT 1 FROM sink.steps s
                          WHERE s.execution_sid = e.execution_sid
                            AND s.context_fetched_at IS NULL AND s.gone_at IS NULL))
        ORDER BY e.first_seen_at, e.execution_sid;
    END IF;
    PERFORM pg_notify('studio_sink_backfill', rid::text);
    RETURN rid;
END $$;

-- Execution items found by listing a flow's executions (their rows are already merged).
CREATE FUNCTION sink.enqueue_listed_executions(
    p_request_id bigint, p_flow_sid text, p_execution_sids text[]
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    added integer;
BEGIN
    INSERT INTO sink.backfill_items (request_id, kind, flow_sid, execution_sid, listed)
    SELECT p_request_id, 'execution', p_flow_sid, s, true
    FROM unnest(p_execution_sids) AS s
    ORDER BY s
    ON CONFLICT (request_id, execution_sid) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        PERFORM pg_notify('studio_sink_backfill', p_request_id::text);
    END IF;
    RETURN added;
END $$;

-- Facts from REST execution resources. The API is authoritative for what it returns
-- (a non-null value replaces the stored one); nothing is ever cleared; status only moves
-- forward and date_updated takes the greatest value, as with events. Contexts untouched.
CREATE FUNCTION sink.merge_api_executions(
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

-- Step facts from REST step resources, by the same rules. Contexts untouched.
CREATE FUNCTION sink.merge_api_steps(
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

-- Consumers may queue backfills (SECURITY DEFINER: they need no rights on schema sink).
-- EXECUTE is granted to consumer roles explicitly.
CREATE FUNCTION studio.request_backfill(execution_sid text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT sink.enqueue_backfill('executions', 'sql', ARRAY[execution_sid], NULL, NULL, NULL)
$$;

CREATE FUNCTION studio.request_backfill(
    flow_sid text, since timestamptz, until timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT sink.enqueue_backfill('flow', 'sql', NULL, flow_sid, since, until)
$$;

REVOKE ALL ON FUNCTION studio.request_backfill(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION studio.request_backfill(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.enqueue_backfill(text, text, text[], text, timestamptz, timestamptz)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.enqueue_listed_executions(bigint, text, text[]) FROM PUBLIC;

-- Consumer views. studio.executions and studio.steps keep 0001's columns, new ones appended.
CREATE OR REPLACE VIEW studio.executions AS
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, context, context_fetched_at,
       first_seen_at, updated_at, initiated_by, gone_at
FROM sink.executions;

CREATE OR REPLACE VIEW studio.steps AS
SELECT step_sid, execution_sid, flow_sid, account_sid, name, transitioned_from,
       transitioned_to, parent_step_sid, date_created, context, context_fetched_at,
       first_seen_at, updated_at, widget_type, date_updated, gone_at
FROM sink.steps;

CREATE VIEW studio.flows AS
SELECT flow_sid, account_sid, friendly_name, status, revision, definition, commit_message,
       valid, date_created, date_updated, fetched_at
FROM sink.flows;

CREATE VIEW studio.flow_revisions AS
SELECT flow_sid, revision, account_sid, friendly_name, status, definition, commit_message,
       valid, date_created, date_updated, fetched_at
FROM sink.flow_revisions;

-- Progress of each request. Items count executions to fetch plus flow listings.
CREATE VIEW studio.backfill_requests AS
SELECT r.request_id, r.kind, r.flow_sid, r.since, r.until,
       CASE WHEN c.open = 0 THEN 'finished'
            WHEN c.started > 0 THEN 'running'
            ELSE 'queued' END AS status,
       c.total AS items_total, c.done AS items_done, c.failed AS items_failed,
       c.gone AS items_gone, r.created_at,
       CASE WHEN c.open = 0 THEN greatest(r.created_at, c.last_finished) END AS finished_at,
       r.requested_by, r.error
FROM sink.backfill_requests r
CROSS JOIN LATERAL (
    SELECT count(*)::integer AS total,
           count(*) FILTER (WHERE i.state = 'done')::integer AS done,
           count(*) FILTER (WHERE i.state = 'failed')::integer AS failed,
           count(*) FILTER (WHERE i.state = 'gone')::integer AS gone,
           count(*) FILTER (WHERE i.state IN ('queued', 'running'))::integer AS open,
           count(*) FILTER (WHERE i.state <> 'queued' OR i.attempts > 0)::integer AS started,
           max(i.finished_at) AS last_finished
    FROM sink.backfill_items i
    WHERE i.request_id = r.request_id
) c;

CREATE VIEW studio.backfill_items AS
SELECT item_id, request_id, kind, flow_sid, execution_sid, since, until, state, attempts,
       not_before, reason, created_at, finished_at
FROM sink.backfill_items;
