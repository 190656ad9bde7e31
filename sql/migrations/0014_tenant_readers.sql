-- studio-sink schema, version 14: per-tenant readers (docs/sql.md, "Per-tenant readers").
--
-- A tenant reader is a role that reads, through the studio views, only the rows of the
-- Twilio accounts granted to it (`studio-sink grant-reader ROLE --account AC...`, or
-- sink.grant_tenant_reader). It works by row-level security on the sink tables behind the
-- views, keyed on the role (never on a session setting, which would leak between tenants
-- under a transaction pooler), and by security_invoker views (PostgreSQL 15 and later), so
-- that a view reads its tables with the rights, and the policies, of whoever queries it.
--
-- * sink.reader_grants: role -> account. A role sees an account's rows when it has the
--   privileges of a role granted that account (pg_has_role ... 'USAGE').
-- * studio_reader and its members keep seeing every row (a clause of every policy).
-- * The tables' owner, the sink's own role, bypasses row-level security (no FORCE): ingest
--   and the sink's UI pay nothing for it. Superusers and BYPASSRLS roles bypass it too.
-- * Every policy is FOR SELECT: readers only read.
-- * The views now check the tables' privileges as the reader, so sink.grant_studio_reader
--   also grants SELECT on the tables behind them; a tenant reader (a member of
--   studio_tenant_reader) gets only the tables with row-level security, so a view over a
--   table without a policy fails closed for it (permission denied) instead of leaking.
-- * studio.quarantine stays a view with its owner's rights: it must hide the bodies and
--   headers of unverified deliveries, which column privileges cannot express
--   (body_bytes reads body). It shows its rows only to roles that see every account.

-- Which role reads which account. role_oid, not the name: a role dropped and created again
-- under the same name does not inherit the grants.
CREATE TABLE sink.reader_grants (
    role_oid    oid         NOT NULL,
    account_sid text        NOT NULL CHECK (sink.is_sid(account_sid, 'AC')),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_oid, account_sid)
);

-- The account of each flow, for the rollup (keyed by flow, not account): the account of the
-- first execution stored for it. Kept by a trigger on the rollup's new rows, which are few
-- (a new flow, hour or transition), so ingest pays one lookup per new flow.
CREATE TABLE sink.flow_accounts (
    flow_sid    text PRIMARY KEY,
    account_sid text NOT NULL
);

INSERT INTO sink.flow_accounts (flow_sid, account_sid)
SELECT DISTINCT ON (flow_sid) flow_sid, account_sid
FROM sink.executions
WHERE account_sid IS NOT NULL
ORDER BY flow_sid, first_seen_at, execution_sid;

CREATE FUNCTION sink.note_flow_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sink.flow_accounts (flow_sid, account_sid)
    SELECT f.flow_sid, a.account_sid
    FROM (SELECT DISTINCT flow_sid FROM added) f
    CROSS JOIN LATERAL (SELECT x.account_sid FROM sink.executions x
                        WHERE x.flow_sid = f.flow_sid AND x.account_sid IS NOT NULL
                        LIMIT 1) a
    WHERE NOT EXISTS (SELECT 1 FROM sink.flow_accounts k WHERE k.flow_sid = f.flow_sid)
    ORDER BY f.flow_sid
    ON CONFLICT (flow_sid) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER flow_rollup_accounts AFTER INSERT ON sink.flow_rollup
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION sink.note_flow_accounts();

-- Whether the current role reads every account: a member of studio_reader, or of the role
-- owning schema sink (the sink itself). Superusers are members of every role.
CREATE FUNCTION sink.reader_sees_all() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = 'studio_reader'
                   AND pg_has_role(current_user, r.oid, 'USAGE'))
        OR pg_has_role(current_user,
                       (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'sink'), 'USAGE')
$$;

-- The accounts the current role may read (its own grants and those of the roles it has).
CREATE FUNCTION sink.readable_accounts() RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT coalesce(array_agg(DISTINCT g.account_sid), '{}')
    FROM sink.reader_grants g
    JOIN pg_roles r ON r.oid = g.role_oid
    WHERE pg_has_role(current_user, r.oid, 'USAGE')
$$;

-- The flows of those accounts (the rollup's visibility).
CREATE FUNCTION sink.readable_flows() RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT coalesce(array_agg(f.flow_sid), '{}')
    FROM sink.flow_accounts f
    WHERE f.account_sid = ANY (sink.readable_accounts())
$$;

-- The policies. `(SELECT f())` is computed once per query, not once per row.
ALTER TABLE sink.reader_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON sink.reader_grants FOR SELECT
    USING ((SELECT sink.reader_sees_all())
           OR role_oid IN (SELECT r.oid FROM pg_roles r
                           WHERE pg_has_role(current_user, r.oid, 'USAGE')));

ALTER TABLE sink.flow_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON sink.flow_accounts FOR SELECT
    USING ((SELECT sink.reader_sees_all())
           OR account_sid = ANY ((SELECT sink.readable_accounts())::text[]));

-- Tables with an account_sid column.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['executions', 'steps', 'flows', 'flow_revisions', 'accounts'] LOOP
        EXECUTE format('ALTER TABLE sink.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_rows ON sink.%I FOR SELECT'
            ' USING ((SELECT sink.reader_sees_all())'
            ' OR account_sid = ANY ((SELECT sink.readable_accounts())::text[]))', t);
    END LOOP;
END $$;

-- Raw events: the account is in the data (Studio events and the Event Streams test event
-- carry data.account_sid). An event without one is shown to no tenant.
ALTER TABLE sink.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON sink.events FOR SELECT
    USING ((SELECT sink.reader_sees_all())
           OR (data ->> 'account_sid') = ANY ((SELECT sink.readable_accounts())::text[]));

-- The rollup is per flow: a tenant sees the rows of its accounts' flows.
ALTER TABLE sink.flow_rollup ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON sink.flow_rollup FOR SELECT
    USING ((SELECT sink.reader_sees_all()) OR flow_sid = ANY ((SELECT sink.readable_flows())::text[]));

-- Backfill items: by the account whose credentials fetch them, else by their execution (a
-- tenant sees the item of an execution it sees), else by their flow.
ALTER TABLE sink.backfill_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON sink.backfill_items FOR SELECT
    USING ((SELECT sink.reader_sees_all())
           OR account_sid = ANY ((SELECT sink.readable_accounts())::text[])
           OR EXISTS (SELECT 1 FROM sink.executions x
                      WHERE x.execution_sid = backfill_items.execution_sid)
           OR flow_sid = ANY ((SELECT sink.readable_flows())::text[]));

-- A request: by its account, or when the tenant sees one of its items (its counts are then
-- those of the items it sees).
ALTER TABLE sink.backfill_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON sink.backfill_requests FOR SELECT
    USING ((SELECT sink.reader_sees_all())
           OR account_sid = ANY ((SELECT sink.readable_accounts())::text[])
           OR EXISTS (SELECT 1 FROM sink.backfill_items i
                      WHERE i.request_id = backfill_requests.request_id));

-- No account in the row: dedup keys, deliveries (HTTP requests, possibly of several
-- accounts), rejected events (could not be read, so not attributed), the erasure audit
-- trail and tombstones, the quarantine. Only roles that see every account see them; for a
-- tenant, studio.events' duplicates column is therefore 0.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['event_keys', 'deliveries', 'rejected_events', 'erasures',
                             'erased_executions', 'quarantine'] LOOP
        EXECUTE format('ALTER TABLE sink.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY all_accounts_only ON sink.%I FOR SELECT'
                       ' USING ((SELECT sink.reader_sees_all()))', t);
    END LOOP;
END $$;

CREATE OR REPLACE VIEW studio.quarantine AS
SELECT quarantine_id,
       received_at,
       reason,
       scheme || '://' || host || raw_path AS url_seen,
       url_checked,
       octet_length(body) AS body_bytes,
       request_id
FROM sink.quarantine
WHERE (SELECT sink.reader_sees_all());

-- The analytics functions read with the caller's rights (and policies), like the views.
ALTER FUNCTION studio.transition_stats(text, timestamptz, timestamptz, integer) SECURITY INVOKER;
ALTER FUNCTION studio.widget_stats(text, timestamptz, timestamptz, integer) SECURITY INVOKER;
ALTER FUNCTION studio.subflow_stats(text, timestamptz, timestamptz) SECURITY INVOKER;
ALTER FUNCTION studio.flow_funnel(text, text[], timestamptz, timestamptz) SECURITY INVOKER;

-- Every studio view but studio.quarantine reads with its caller's rights. Views do not keep
-- this option through CREATE OR REPLACE VIEW, so sink.grant_studio_reader(), which every
-- migration that adds or replaces a view runs, applies it again. False before PostgreSQL 15
-- (no security_invoker there: the views keep their owner's rights, and grant_tenant_reader
-- refuses).
CREATE FUNCTION sink.secure_studio_views() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v regclass;
BEGIN
    IF current_setting('server_version_num')::integer < 150000 THEN
        RETURN false;
    END IF;
    FOR v IN SELECT c.oid::regclass FROM pg_class c
             WHERE c.relnamespace = 'studio'::regnamespace AND c.relkind = 'v'
               AND c.oid <> 'studio.quarantine'::regclass ORDER BY c.relname LOOP
        EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', v);
    END LOOP;
    RETURN true;
END $$;

-- The tables a reader needs SELECT on: those behind the security_invoker views, and those
-- the analytics functions read.
CREATE FUNCTION sink.reader_tables() RETURNS SETOF regclass
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT DISTINCT t.oid::regclass
    FROM pg_class v
    JOIN pg_rewrite rw ON rw.ev_class = v.oid
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                    AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'p')
                   AND t.relnamespace = 'sink'::regnamespace
    WHERE v.relnamespace = 'studio'::regnamespace AND v.relkind = 'v'
      AND EXISTS (SELECT FROM pg_options_to_table(v.reloptions) o
                  WHERE o.option_name = 'security_invoker'
                    AND lower(o.option_value) IN ('true', 'on', 'yes', '1'))
    UNION
    SELECT x::regclass FROM unnest(ARRAY['sink.flow_rollup', 'sink.flow_accounts',
                                         'sink.reader_grants', 'sink.executions', 'sink.steps',
                                         'sink.flows', 'sink.flow_revisions']) AS x
$$;

-- A reader role's privileges in this database: USAGE on schemas studio and sink, SELECT on
-- every studio view and on sink.reader_tables() (for a tenant reader, only those with
-- row-level security), EXECUTE on the studio functions (for a tenant reader, not the
-- request_* ones, which queue work for any account).
CREATE FUNCTION sink.grant_reader_privileges(p_role regrole, p_tenant boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regclass;
    fn regprocedure;
BEGIN
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA sink FROM %s', p_role);
    EXECUTE format('REVOKE ALL ON SCHEMA sink FROM %s', p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA studio TO %s', p_role);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA studio TO %s', p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA sink TO %s', p_role);
    FOR t IN SELECT r FROM sink.reader_tables() AS r LOOP
        IF NOT p_tenant OR (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = t) THEN
            EXECUTE format('GRANT SELECT ON %s TO %s', t, p_role);
        END IF;
    END LOOP;
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'studio'::regnamespace
                AND NOT (p_tenant AND p.proname LIKE 'request\_%') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', fn, p_role);
    END LOOP;
END $$;

-- Re-applies the readers' privileges in this database (0003's function, extended): the
-- views' security_invoker, studio_reader's grants, and studio_tenant_reader's. Run it after
-- creating studio_reader by hand. Returns false when studio_reader does not exist.
CREATE OR REPLACE FUNCTION sink.grant_studio_reader() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sink.secure_studio_views();
    REVOKE ALL ON SCHEMA sink FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'studio_tenant_reader') THEN
        PERFORM sink.grant_reader_privileges('studio_tenant_reader', true);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'studio_reader') THEN
        RETURN false;
    END IF;
    PERFORM sink.grant_reader_privileges('studio_reader', false);
    -- views and functions later migrations add to studio (created by this same role)
    ALTER DEFAULT PRIVILEGES IN SCHEMA studio GRANT SELECT ON TABLES TO studio_reader;
    ALTER DEFAULT PRIVILEGES IN SCHEMA studio GRANT EXECUTE ON FUNCTIONS TO studio_reader;
    RETURN true;
END $$;

-- The group role of every tenant reader: it holds the object privileges, and the policies
-- decide the rows. Created when missing (NOLOGIN), if the current role may create roles.
CREATE FUNCTION sink.ensure_tenant_group() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'studio_tenant_reader') THEN
        IF NOT EXISTS (SELECT FROM pg_roles
                       WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            RETURN false;
        END IF;
        BEGIN
            CREATE ROLE studio_tenant_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by a migration of another database
        END;
    END IF;
    PERFORM sink.grant_reader_privileges('studio_tenant_reader', true);
    RETURN true;
END $$;

CREATE FUNCTION sink.check_account_sids(p_accounts text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad text;
BEGIN
    IF coalesce(cardinality(p_accounts), 0) = 0 THEN
        RAISE EXCEPTION 'no Account SID given'
            USING ERRCODE = '22023', HINT = 'name at least one account: --account AC...';
    END IF;
    SELECT a INTO bad FROM unnest(p_accounts) AS a WHERE NOT sink.is_sid(a, 'AC') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'not an Account SID: %', coalesce(quote_literal(bad), 'NULL')
            USING ERRCODE = '22023', HINT = 'an Account SID is AC followed by 32 hex digits';
    END IF;
END $$;

-- Lets role p_role read the rows of accounts p_accounts: creates the role when missing
-- (NOLOGIN, or LOGIN without a password when p_login), makes it a member of
-- studio_tenant_reader and records the grants. Returns 'created' or 'existing'. Refuses a
-- role that would read every account anyway.
CREATE FUNCTION sink.grant_tenant_reader(
    p_role text, p_accounts text[], p_login boolean DEFAULT false
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target pg_roles;
    outcome text := 'existing';
BEGIN
    IF current_setting('server_version_num')::integer < 150000 THEN
        RAISE EXCEPTION 'per-tenant readers need PostgreSQL 15 or later; this server runs %',
            current_setting('server_version')
            USING ERRCODE = '0A000',
                  HINT = 'upgrade Postgres: views apply row-level security to their readers'
                         ' (security_invoker) from version 15 on';
    END IF;
    IF coalesce(p_role, '') = '' THEN
        RAISE EXCEPTION 'no role name given' USING ERRCODE = '22023',
            HINT = 'name the role to create or use, e.g. acme_reader';
    END IF;
    PERFORM sink.check_account_sids(p_accounts);
    IF p_role IN ('studio_reader', 'studio_tenant_reader', 'public') THEN
        RAISE EXCEPTION 'role % is one of the sink''s own roles', quote_ident(p_role)
            USING ERRCODE = '22023', HINT = 'name a role of the tenant''s own, e.g. acme_reader';
    END IF;
    SELECT * INTO target FROM pg_roles WHERE rolname = p_role;
    IF NOT FOUND THEN
        EXECUTE format('CREATE ROLE %I %s', p_role, CASE WHEN p_login THEN 'LOGIN' ELSE 'NOLOGIN' END);
        SELECT * INTO target FROM pg_roles WHERE rolname = p_role;
        outcome := 'created';
    ELSIF target.rolsuper OR target.rolbypassrls THEN
        RAISE EXCEPTION 'role % bypasses row-level security (SUPERUSER or BYPASSRLS): it would'
            ' read every account', quote_ident(p_role)
            USING ERRCODE = '22023', HINT = 'use a role without SUPERUSER and BYPASSRLS';
    ELSIF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = 'studio_reader'
                  AND pg_has_role(target.oid, r.oid, 'USAGE')) THEN
        RAISE EXCEPTION 'role % is a member of studio_reader, which reads every account',
            quote_ident(p_role)
            USING ERRCODE = '22023',
                  HINT = format('REVOKE studio_reader FROM %I, or name another role', p_role);
    ELSIF pg_has_role(target.oid,
                      (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'sink'),
                      'USAGE') THEN
        RAISE EXCEPTION 'role % owns the sink''s tables (or has their owner''s rights), which'
            ' bypasses row-level security', quote_ident(p_role)
            USING ERRCODE = '22023', HINT = 'name a role of the tenant''s own, e.g. acme_reader';
    END IF;
    IF NOT sink.ensure_tenant_group() THEN
        RAISE EXCEPTION 'role studio_tenant_reader does not exist and % may not create roles',
            quote_ident(current_user)
            USING ERRCODE = '42501',
                  HINT = 'have an administrator run CREATE ROLE studio_tenant_reader NOLOGIN;'
                         ' then run this again';
    END IF;
    EXECUTE format('GRANT studio_tenant_reader TO %I', p_role);
    INSERT INTO sink.reader_grants (role_oid, account_sid)
    SELECT target.oid, a FROM unnest(p_accounts) AS a ORDER BY a
    ON CONFLICT (role_oid, account_sid) DO NOTHING;
    RETURN outcome;
END $$;

-- Takes accounts p_accounts (every account when NULL) from role p_role; returns how many it
-- keeps. A role without grants sees no row. The role itself and its membership of
-- studio_tenant_reader stay (roles belong to the whole server, and may read another
-- database's sink): DROP ROLE removes it.
CREATE FUNCTION sink.revoke_tenant_reader(p_role text, p_accounts text[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target oid;
    kept integer;
BEGIN
    SELECT oid INTO target FROM pg_roles WHERE rolname = p_role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no role named %', coalesce(quote_ident(p_role), 'NULL')
            USING ERRCODE = '42704', HINT = 'studio-sink grant-reader --list shows the readers';
    END IF;
    IF p_accounts IS NOT NULL THEN
        PERFORM sink.check_account_sids(p_accounts);
    END IF;
    DELETE FROM sink.reader_grants
    WHERE role_oid = target AND (p_accounts IS NULL OR account_sid = ANY (p_accounts));
    SELECT count(*) INTO kept FROM sink.reader_grants WHERE role_oid = target;
    RETURN kept;
END $$;

REVOKE ALL ON FUNCTION sink.grant_tenant_reader(text, text[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.revoke_tenant_reader(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.ensure_tenant_group() FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.grant_reader_privileges(regrole, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sink.secure_studio_views() FROM PUBLIC;

-- The group role, when this role may create it; then every reader's grants.
DO $$
BEGIN
    IF NOT sink.ensure_tenant_group() THEN
        RAISE NOTICE 'role studio_tenant_reader was not created: % may not create roles.'
            ' Per-tenant readers need it: have an administrator run CREATE ROLE'
            ' studio_tenant_reader NOLOGIN, then run SELECT sink.grant_studio_reader(); in'
            ' this database', current_user;
    END IF;
END $$;
SELECT sink.grant_studio_reader();
