"""The executions list stays on its indexes: EXPLAIN over 10k rows, custom and generic plans."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from sink.ui.queries import Cursor, ExecutionFilters, executions_query

FLOW = "FW" + "7".rjust(32, "0")  # one flow of 100
T = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)

CASES = {
    "no filter": (ExecutionFilters(), None, "executions_created"),
    "status": (ExecutionFilters(status="active"), None, "executions_created"),
    "time range": (
        ExecutionFilters(created_from=T, created_until=datetime(2026, 11, 21, tzinfo=UTC)),
        None,
        "executions_created",
    ),
    "flow": (ExecutionFilters(flow_sid=FLOW), None, "executions_flow_created"),
    "flow and range, next page": (
        ExecutionFilters(flow_sid=FLOW, created_from=T),
        Cursor(datetime(2026, 11, 22, tzinfo=UTC), "FN" + "5" * 32),
        "executions_flow_created",
    ),
    "next page": (ExecutionFilters(), Cursor(T, "FN" + "5" * 32), "executions_created"),
    "page after undated rows": (ExecutionFilters(), Cursor(None, "FN" + "5" * 32), None),
}


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


@pytest.fixture
async def many(conn: asyncpg.Connection[Any]) -> asyncpg.Connection[Any]:
    await conn.execute(
        """
        INSERT INTO sink.executions (execution_sid, flow_sid, status, contact_channel_address,
                                     date_created, ended_reason)
        SELECT 'FN' || lpad(to_hex(n), 32, '0'),
               'FW' || lpad(to_hex(n % 100), 32, '0'),
               CASE WHEN n % 7 = 0 THEN 'active' ELSE 'ended' END,
               '+1555' || lpad((n % 500)::text, 7, '0'),
               CASE WHEN n % 1000 = 0 THEN NULL
                    ELSE timestamptz '2026-11-01Z' + n * interval '5 minutes' END,
               CASE WHEN n % 7 = 0 THEN NULL ELSE 'FLOW_END' END
        FROM generate_series(1, 10000) AS n
        """
    )
    await conn.execute("ANALYZE sink.executions")
    return conn


async def test_list_query_uses_an_index(many: asyncpg.Connection[Any]) -> None:
    for mode in ("auto", "force_generic_plan"):  # generic: a prepared statement's 6th run on
        await many.execute(f"SET plan_cache_mode = {mode}")
        for case, (filters, after, index) in CASES.items():
            sql, args = executions_query(filters, after, 51)
            raw = await many.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
            nodes = _nodes(json.loads(raw)[0]["Plan"])
            kinds = {n["Node Type"] for n in nodes}
            assert "Seq Scan" not in kinds, f"{case} ({mode}): {kinds}"
            used = {n.get("Index Name") for n in nodes if "Index" in n["Node Type"]}
            assert used, f"{case} ({mode}): no index in {kinds}"
            if index:
                assert index in used, f"{case} ({mode}): {used}"
            assert nodes[0]["Node Type"] == "Limit"
