-- name: grant_reader
-- Lets role $1 read the rows of accounts $2 (creating it, LOGIN when $3): 'created' or 'existing'.
SELECT sink.grant_tenant_reader($1, $2::text[], $3)

-- name: revoke_reader
-- Takes accounts $2 (every one when NULL) from reader role $1; returns how many it keeps.
SELECT sink.revoke_tenant_reader($1, $2::text[])

-- name: list_readers
-- Every per-tenant reader grant: role (NULL once dropped), account, its label, when granted.
SELECT r.rolname AS role_name, g.role_oid, g.account_sid, a.label, g.granted_at
FROM sink.reader_grants g
LEFT JOIN pg_roles r ON r.oid = g.role_oid
LEFT JOIN sink.accounts a ON a.account_sid = g.account_sid
ORDER BY r.rolname NULLS LAST, g.role_oid, g.account_sid

-- name: unknown_accounts
-- Which of the Account SIDs $1 the sink does not know (not in sink.accounts): a typo, or not yet configured.
SELECT a FROM unnest($1::text[]) AS a
WHERE NOT EXISTS (SELECT FROM sink.accounts s WHERE s.account_sid = a)
ORDER BY a
