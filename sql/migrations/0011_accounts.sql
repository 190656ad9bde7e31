-- The Twilio accounts one sink serves. The accounts file (SINK_ACCOUNTS_FILE) and the
-- one-account settings are the source of truth; the sink copies their SIDs and labels here
-- at start and on each reload, so that SQL consumers and the UI can name accounts. No
-- secret is ever stored: tokens and API keys stay in the file and the environment.

CREATE TABLE sink.accounts (
    account_sid            text PRIMARY KEY CHECK (sink.is_sid(account_sid, 'AC')),
    label                  text NOT NULL,
    -- false once the account left the file: its label still names its rows
    configured             boolean NOT NULL DEFAULT true,
    -- what the last Studio REST call with its credentials said: 'unknown' (none yet),
    -- 'ok', 'missing' (no REST credentials), 'invalid' (a 401 from every credential)
    credentials_status     text NOT NULL DEFAULT 'unknown'
        CHECK (credentials_status IN ('unknown', 'ok', 'missing', 'invalid')),
    credentials_checked_at timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW studio.accounts AS
    SELECT account_sid, label, configured, credentials_status, credentials_checked_at
      FROM sink.accounts;

COMMENT ON VIEW studio.accounts IS
    'The Twilio accounts this sink serves (from its accounts file and settings), with their'
    ' labels and whether their REST credentials work. Never holds a secret.';

SELECT sink.grant_studio_reader();
