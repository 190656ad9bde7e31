-- Backfill per Twilio account. Each item is fetched with the REST credentials of its
-- execution's account (sink.executions.account_sid), or of the account its request names;
-- an account without usable credentials leaves its items waiting, not failed:
--
-- * state 'waiting_for_credentials': the account has no REST credentials in this sink's
--   accounts, or Twilio refused every one of them (sink.accounts.credentials_status =
--   'invalid'). The item holds no lease and is not claimed; the sink queues it again when
--   the accounts are reloaded (SIGHUP, a change of SINK_ACCOUNTS_FILE), when it starts,
--   and every few minutes for accounts that have credentials again.
-- * account_sid on requests (`studio-sink backfill --account AC...`) and items: the
--   account whose credentials fetch the item, when the stored rows do not say it.

ALTER TABLE sink.backfill_requests
    ADD COLUMN account_sid text CHECK (account_sid IS NULL OR sink.is_sid(account_sid, 'AC'));
ALTER TABLE sink.backfill_items
    ADD COLUMN account_sid text CHECK (account_sid IS NULL OR sink.is_sid(account_sid, 'AC'));

ALTER TABLE sink.backfill_items DROP CONSTRAINT backfill_items_state_check;
ALTER TABLE sink.backfill_items ADD CONSTRAINT backfill_items_state_check
    CHECK (state IN ('queued', 'running', 'done', 'gone', 'failed', 'waiting_for_credentials'));

CREATE INDEX backfill_items_waiting ON sink.backfill_items (account_sid)
    WHERE state = 'waiting_for_credentials';

-- Every stored execution of account p_account_sid whose context, or one of whose steps'
-- contexts, was never fetched (sink.enqueue_missing for one account).
CREATE FUNCTION sink.enqueue_missing(p_requested_by text, p_account_sid text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rid bigint;
BEGIN
    IF NOT sink.is_sid(p_account_sid, 'AC') THEN
        RAISE EXCEPTION 'not an Account SID: %', coalesce(quote_literal(p_account_sid), 'NULL')
            USING ERRCODE = '22023', HINT = 'an Account SID is AC followed by 32 hex digits';
    END IF;
    rid := sink.new_backfill_request('missing', p_requested_by, NULL, NULL, NULL);
    UPDATE sink.backfill_requests SET account_sid = p_account_sid WHERE request_id = rid;
    INSERT INTO sink.backfill_items (request_id, kind, execution_sid, flow_sid, account_sid)
    SELECT rid, 'execution', e.execution_sid, e.flow_sid, p_account_sid
    FROM sink.executions e
    WHERE e.gone_at IS NULL AND e.account_sid = p_account_sid
      AND (e.context_fetched_at IS NULL
           OR EXISTS (SELECT 1 FROM sink.steps s
                      WHERE s.execution_sid = e.execution_sid
                        AND s.context_fetched_at IS NULL AND s.gone_at IS NULL))
    ORDER BY e.first_seen_at, e.execution_sid;
    RETURN rid;
END $$;
REVOKE ALL ON FUNCTION sink.enqueue_missing(text, text) FROM PUBLIC;

-- Progress of each request; items_waiting (appended) counts the items waiting for their
-- account's credentials, and a request whose open items all wait has that status.
CREATE OR REPLACE VIEW studio.backfill_requests AS
SELECT r.request_id, r.kind, r.flow_sid, r.since, r.until,
       CASE WHEN c.open = 0 AND c.waiting = 0 THEN 'finished'
            WHEN c.open = 0 THEN 'waiting_for_credentials'
            WHEN c.started > 0 THEN 'running'
            ELSE 'queued' END AS status,
       c.total AS items_total, c.done AS items_done, c.failed AS items_failed,
       c.gone AS items_gone, r.created_at,
       CASE WHEN c.open = 0 AND c.waiting = 0 THEN greatest(r.created_at, c.last_finished)
       END AS finished_at,
       r.requested_by, r.error, c.waiting AS items_waiting, r.account_sid
FROM sink.backfill_requests r
CROSS JOIN LATERAL (
    SELECT count(*)::integer AS total,
           count(*) FILTER (WHERE i.state = 'done')::integer AS done,
           count(*) FILTER (WHERE i.state = 'failed')::integer AS failed,
           count(*) FILTER (WHERE i.state = 'gone')::integer AS gone,
           count(*) FILTER (WHERE i.state IN ('queued', 'running'))::integer AS open,
           count(*) FILTER (WHERE i.state = 'waiting_for_credentials')::integer AS waiting,
           count(*) FILTER (WHERE i.state <> 'queued' OR i.attempts > 0)::integer AS started,
           max(i.finished_at) AS last_finished
    FROM sink.backfill_items i
    WHERE i.request_id = r.request_id
) c;

CREATE OR REPLACE VIEW studio.backfill_items AS
SELECT item_id, request_id, kind, flow_sid, execution_sid, since, until, state, attempts,
       not_before, reason, created_at, finished_at, account_sid
FROM sink.backfill_items;

SELECT sink.grant_studio_reader();
