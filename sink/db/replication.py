"""What an acknowledged event survives: is the primary's replication synchronous?

The sink answers 2xx after the commit on the primary. With asynchronous replication a
standby may not have that commit yet when it is promoted: the event is lost, and Twilio,
which got its 2xx, never sends it again. ``replication_warning`` tells from the primary's
own view (``pg_stat_replication``) whether that can happen; ``serve`` logs it once at start
and ``studio-sink doctor`` reports it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import asyncpg

from sink.db.pool import DB_ERRORS, Conn
from sink.db.queries import query

log = logging.getLogger(__name__)

CHECK_SECONDS: Final = 2.0  # the start-up check never holds up `serve` longer than this
# synchronous_commit values with which a commit does not wait for any standby
_LOCAL_COMMITS: Final = frozenset({"off", "local"})

FIX: Final = (
    "Make replication synchronous: with Patroni set `synchronous_mode: true` (patronictl"
    " edit-config); otherwise list the standbys in synchronous_standby_names (e.g."
    " 'ANY 1 (*)') and keep synchronous_commit at on (or remote_apply). Managed Postgres: an"
    " RDS Multi-AZ instance, Aurora and Cloud SQL HA replicate below Postgres (their standby"
    " is not listed here), while read replicas are asynchronous: promoting one loses what it"
    " had not received. Ignore this only if none of these standbys is ever promoted. See the"
    ' README, "How it scales".'
)


async def replication_warning(conn: Conn) -> str | None:
    """A warning naming the risk and the fix when this primary streams to standbys none of
    which is synchronous (or commits do not wait for them); None when replication is
    synchronous, there is no standby, this is a standby, or the role may not see."""
    try:
        row = await conn.fetchrow(query("replication_state"))
    except asyncpg.PostgresError:
        return None  # a managed service that hides the replication views: cannot see
    if row is None or row["in_recovery"] or not row["standbys"] or row["hidden"]:
        return None
    standbys = row["standbys"]
    names = row["standby_names"].strip()
    if not names:
        reason = "synchronous_standby_names is empty"
    elif not row["synchronous"]:
        reason = f"synchronous_standby_names = '{names}' matches none of them"
    elif row["synchronous_commit"] in _LOCAL_COMMITS:
        reason = f"synchronous_commit = {row['synchronous_commit']}: commits do not wait for them"
    else:
        return None
    plural = "standby" if standbys == 1 else "standbys"
    return (
        f"Postgres replicates to {standbys} {plural} asynchronously ({reason}): an event the"
        " sink acknowledged is committed on the primary only, and is lost if a standby is"
        f" promoted before it received that commit. {FIX}"
    )


async def log_replication_warning(pool: asyncpg.Pool[Any]) -> None:
    """``serve``'s check at start: the warning, if any, once as a WARNING; never fails."""
    try:
        async with asyncio.timeout(CHECK_SECONDS), pool.acquire() as conn:
            warning = await replication_warning(conn)
    except DB_ERRORS as exc:
        log.info("replication not checked (%s)", type(exc).__name__)
        return
    if warning is not None:
        log.warning("%s", warning)
