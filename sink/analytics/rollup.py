"""The analytics rollup's repair entry points (``sink.flow_rollup``, migration 0008).

The rollup is kept by the merge functions themselves, in the writer's transaction; these
recompute it from the tables after writes that bypassed them (a bulk COPY, a hand edit).
"""

from __future__ import annotations

from datetime import datetime

from sink.db.pool import Conn
from sink.db.queries import query


async def rebuild_flow_rollup(conn: Conn, flow_sid: str) -> int:
    """Recompute one flow's rollup from its stored steps; returns its rollup row count."""
    written: int = await conn.fetchval(query("analytics_rebuild_flow_rollup"), flow_sid)
    return written


async def rebuild_rollup(conn: Conn, since: datetime) -> int:
    """Recompute every flow's rollup from the UTC day of ``since`` on; returns the rows."""
    written: int = await conn.fetchval(query("analytics_rebuild_rollup"), since)
    return written
