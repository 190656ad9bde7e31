-- name: sync_accounts
-- The configured accounts ($1 SIDs, $2 labels, $3 whether each has REST credentials) in force; the others kept as no longer configured.
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[]) AS g(account_sid, label, has_rest)
), upserted AS (
    INSERT INTO sink.accounts AS a (account_sid, label, configured, credentials_status)
    SELECT account_sid, label, true,
           CASE WHEN has_rest THEN 'unknown' ELSE 'missing' END
      FROM given
    ON CONFLICT (account_sid) DO UPDATE
       SET label = EXCLUDED.label,
           configured = true,
           credentials_status = CASE
               WHEN EXCLUDED.credentials_status = 'missing' THEN 'missing'
               -- a reload may bring the fixed credentials: the next call tells
               WHEN a.credentials_status IN ('missing', 'invalid') OR NOT a.configured
                   THEN 'unknown'
               ELSE a.credentials_status END,
           updated_at = now()
     WHERE (a.label, a.configured, a.credentials_status IN ('missing', 'invalid'))
           IS DISTINCT FROM (EXCLUDED.label, true, EXCLUDED.credentials_status = 'missing')
    RETURNING account_sid
)
UPDATE sink.accounts
   SET configured = false, updated_at = now()
 WHERE configured AND account_sid <> ALL ($1::text[])

-- name: list_accounts
-- Every account known to the sink, configured ones first, by label.
SELECT account_sid, label, configured, credentials_status, credentials_checked_at
  FROM sink.accounts
 ORDER BY configured DESC, label, account_sid
