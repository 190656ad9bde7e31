-- name: wait_for_credentials
-- Parks item $1 held by token $2 until account $3's credentials work (reason $4); its attempt is not counted.
UPDATE sink.backfill_items
SET state = 'waiting_for_credentials', account_sid = coalesce($3, account_sid), reason = $4,
    attempts = greatest(attempts - 1, 0), not_before = now(), locked_by = NULL,
    locked_until = NULL
WHERE item_id = $1 AND locked_by = $2;

-- name: credentials_refused
-- Twilio refused every credential of account $1: marks it invalid and parks its queued items (reason $2); how many.
WITH account AS (
    UPDATE sink.accounts
    SET credentials_status = 'invalid', credentials_checked_at = now(), updated_at = now()
    WHERE account_sid = $1
), parked AS (
    UPDATE sink.backfill_items i
    SET state = 'waiting_for_credentials', account_sid = $1, reason = $2
    WHERE i.state = 'queued'
      AND (i.account_sid = $1
           OR (i.account_sid IS NULL AND i.kind = 'execution'
               AND EXISTS (SELECT FROM sink.executions e
                           WHERE e.execution_sid = i.execution_sid AND e.account_sid = $1)))
    RETURNING 1
)
SELECT count(*)::integer FROM parked;

-- name: credentials_worked
-- A Studio REST call with account $1's credentials was answered: its credentials_status is 'ok'.
UPDATE sink.accounts
SET credentials_status = 'ok', credentials_checked_at = now(),
    updated_at = CASE WHEN credentials_status = 'ok' THEN updated_at ELSE now() END
WHERE account_sid = $1;

-- name: resume_waiting
-- Queues again the waiting items of accounts $1 (credentials now; of no account if $1 is one), all if $2; of request $3 or all.
WITH resumed AS (
    UPDATE sink.backfill_items
    SET state = 'queued', not_before = now()
    WHERE state = 'waiting_for_credentials'
      AND ($2 OR account_sid = ANY($1::text[])
           OR (account_sid IS NULL AND cardinality($1::text[]) = 1))
      AND ($3::bigint IS NULL OR request_id = $3)
    RETURNING 1
)
SELECT count(*)::integer FROM resumed;

-- name: item_accounts
-- What says whose item it is: execution $1's stored account, flow $2's, and request $3's (--account).
SELECT (SELECT account_sid FROM sink.executions WHERE execution_sid = $1) AS execution_account,
       coalesce(
           (SELECT account_sid FROM sink.flows WHERE flow_sid = $2 AND account_sid IS NOT NULL),
           (SELECT min(account_sid) FROM sink.executions
             WHERE flow_sid = $2 AND account_sid IS NOT NULL
            HAVING count(DISTINCT account_sid) = 1)
       ) AS flow_account,
       (SELECT account_sid FROM sink.backfill_requests WHERE request_id = $3) AS request_account;

-- name: set_request_account
-- Names account $2 on request $1 and its items: their credentials unless the stored rows say otherwise.
WITH request AS (
    UPDATE sink.backfill_requests SET account_sid = $2 WHERE request_id = $1
)
UPDATE sink.backfill_items SET account_sid = $2 WHERE request_id = $1;

-- name: enqueue_missing_of_account
-- Queues every stored execution of account $2 whose context, or a step's context, was never fetched.
SELECT sink.enqueue_missing($1, $2);

-- name: fan_out_flows
-- Adds to request $1 one 'flows' item per account $2 (every flow of each); returns how many.
WITH added AS (
    INSERT INTO sink.backfill_items (request_id, kind, account_sid)
    SELECT $1, 'flows', a FROM unnest($2::text[]) AS a ORDER BY a
    RETURNING 1
)
SELECT count(*)::integer FROM added;
