"""Names and keys shared between processes and with the SQL: one place for each."""

from __future__ import annotations

from typing import Final

# LISTEN/NOTIFY: the backfill queue's SQL functions notify this channel when items are
# queued (sql/migrations/0002 and 0005 spell it too).
BACKFILL_CHANNEL: Final = "studio_sink_backfill"

# Advisory lock keys: one holder at a time across processes (migrations hold a session lock
# on a direct connection; maintenance steps take transaction locks, which poolers keep).
MIGRATE_LOCK: Final = 0x53_54_55_44_49_4F  # "STUDIO": serializes concurrent migrators
MAINTAIN_LOCK: Final = 0x53_54_55_44_4D_54  # "STUDMT": one maintenance run at a time
