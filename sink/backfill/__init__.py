"""Stage 3, backfill: fetch what events never carry from the Studio v2 REST API, through a
queue in Postgres, within the account's rate limits."""
