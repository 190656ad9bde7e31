-- studio-sink schema, version 3: convenience views for SQL consumers, and their role.
--
-- Every view in schema "studio" is part of the consumer contract: docs/sql.md documents its
-- columns and tests/integration/test_sql_contract.py pins their names and types.

-- Steps of each execution in order, with the time since the previous step and since the
-- execution started. The first step's since_previous_step counts from the execution start.
CREATE VIEW studio.execution_timeline AS
SELECT s.execution_sid,
       s.flow_sid,
       row_number() OVER w AS step_number,
       s.step_sid,
       s.name,
       s.widget_type,
       s.transitioned_from,
       s.transitioned_to,
       s.date_created,
       s.date_created - coalesce(lag(s.date_created) OVER w, e.date_created)
           AS since_previous_step,
       s.date_created - e.date_created AS since_execution_start,
       s.context_fetched_at IS NOT NULL AS has_context
FROM sink.steps s
LEFT JOIN sink.executions e ON e.execution_sid = s.execution_sid
WINDOW w AS (PARTITION BY s.execution_sid ORDER BY s.date_created NULLS LAST, s.step_sid);

-- One row per execution: the execution with its step count, duration and last step.
CREATE VIEW studio.execution_summary AS
SELECT e.execution_sid,
       e.flow_sid,
       e.status,
       e.ended_reason,
       e.contact_channel_address,
       e.flow_revision,
       e.date_created,
       e.date_updated,
       CASE WHEN e.status = 'ended' THEN e.date_updated - e.date_created END AS duration,
       coalesce(st.steps, 0) AS steps,
       st.last_step_name,
       st.last_step_at
FROM sink.executions e
LEFT JOIN LATERAL (
    SELECT count(*) AS steps,
           (array_agg(s.name ORDER BY s.date_created DESC NULLS LAST, s.step_sid DESC))[1]
               AS last_step_name,
           max(s.date_created) AS last_step_at
    FROM sink.steps s
    WHERE s.execution_sid = e.execution_sid
) st ON true;

-- Per flow and UTC day an execution started (date_created, or first_seen_at while only
-- its steps are known): how many started, how many of those have ended and how, and how
-- many are still active.
CREATE VIEW studio.executions_daily AS
SELECT g.day,
       g.flow_sid,
       sum(g.n)::bigint AS started,
       coalesce(sum(g.n) FILTER (WHERE g.status = 'ended'), 0)::bigint AS ended,
       coalesce(sum(g.n) FILTER (WHERE g.status = 'active'), 0)::bigint AS active,
       coalesce(jsonb_object_agg(coalesce(g.ended_reason, 'unknown'), g.n)
                    FILTER (WHERE g.status = 'ended'), '{}'::jsonb) AS ended_reasons
FROM (
    SELECT (coalesce(date_created, first_seen_at) AT TIME ZONE 'UTC')::date AS day,
           flow_sid, status, ended_reason, count(*) AS n
    FROM sink.executions
    GROUP BY 1, 2, 3, 4
) g
GROUP BY g.day, g.flow_sid;

-- Steps whose context was never fetched, leaving out those the API no longer has (gone):
-- what `SELECT studio.request_backfill(execution_sid)` can still fill.
CREATE VIEW studio.steps_missing_context AS
SELECT s.step_sid, s.execution_sid, s.flow_sid, s.name, s.date_created, s.first_seen_at
FROM sink.steps s
WHERE s.context_fetched_at IS NULL AND s.gone_at IS NULL;

-- Re-applies the consumer role's privileges in this database: SELECT on every studio view
-- and table, EXECUTE on every studio function (studio.request_backfill), nothing in sink.
-- Run `SELECT sink.grant_studio_reader();` after creating the role by hand when the
-- migrating role could not create it. Returns false when the role does not exist.
CREATE FUNCTION sink.grant_studio_reader() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    fn regprocedure;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'studio_reader') THEN
        RETURN false;
    END IF;
    REVOKE ALL ON SCHEMA sink FROM PUBLIC;
    REVOKE ALL ON SCHEMA sink FROM studio_reader;
    REVOKE ALL ON ALL TABLES IN SCHEMA sink FROM studio_reader;
    GRANT USAGE ON SCHEMA studio TO studio_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA studio TO studio_reader;
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'studio'::regnamespace LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO studio_reader', fn);
    END LOOP;
    -- views and functions later migrations add to studio (created by this same role)
    ALTER DEFAULT PRIVILEGES IN SCHEMA studio GRANT SELECT ON TABLES TO studio_reader;
    ALTER DEFAULT PRIVILEGES IN SCHEMA studio GRANT EXECUTE ON FUNCTIONS TO studio_reader;
    RETURN true;
END $$;

-- The read-only role for consumers. Roles belong to the whole server, so it may already
-- exist (another database of the same server); the grants above are per database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'studio_reader') THEN
        IF EXISTS (SELECT FROM pg_roles
                   WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            BEGIN
                CREATE ROLE studio_reader NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        ELSE
            RAISE NOTICE 'role studio_reader was not created: % may not create roles. Have an'
                ' administrator run CREATE ROLE studio_reader NOLOGIN, then run'
                ' SELECT sink.grant_studio_reader(); in this database', current_user;
        END IF;
    END IF;
    PERFORM sink.grant_studio_reader();
END $$;
