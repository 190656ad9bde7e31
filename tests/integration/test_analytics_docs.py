"""docs/analytics.md: every example query runs as a studio_reader member and returns rows;
the functions' signatures and the documented column tables are the contract the UI and
analysts code against."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from tests.integration.test_sql_contract import reader  # noqa: F401  (the fixture)
from tests.support.docs import TSTZ, code_blocks, column_tables
from tests.support.ivr import build_ivr, load_ivr

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
FLOAT = "double precision"

# the contract (issue 14): append result columns, never rename, retype or drop one
FUNCTIONS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "transition_stats": (
        "flow_sid text, since timestamp with time zone, until timestamp with time zone,"
        " flow_revision integer DEFAULT NULL::integer",
        [
            ("flow_revision", "integer"),
            ("transitioned_from", "text"),
            ("transitioned_to", "text"),
            ("events", "text[]"),
            ("transitions", "bigint"),
            ("executions", "bigint"),
            ("median_seconds", FLOAT),
            ("p90_seconds", FLOAT),
        ],
    ),
    "widget_stats": (
        "flow_sid text, since timestamp with time zone, until timestamp with time zone,"
        " flow_revision integer DEFAULT NULL::integer",
        [
            ("flow_revision", "integer"),
            ("widget", "text"),
            ("widget_type", "text"),
            ("entered", "bigint"),
            ("exits", "jsonb"),
            ("ended_here", "bigint"),
            ("drop_off_share", FLOAT),
            ("median_seconds", FLOAT),
            ("p90_seconds", FLOAT),
        ],
    ),
    "subflow_stats": (
        "flow_sid text, since timestamp with time zone, until timestamp with time zone",
        [
            ("subflow_widget", "text"),
            ("transitioned_from", "text"),
            ("transitioned_to", "text"),
            ("events", "text[]"),
            ("transitions", "bigint"),
            ("executions", "bigint"),
            ("median_seconds", FLOAT),
            ("p90_seconds", FLOAT),
        ],
    ),
    "flow_funnel": (
        "flow_sid text, widgets text[], since timestamp with time zone,"
        " until timestamp with time zone",
        [("step", "integer"), ("widget", "text"), ("executions", "bigint"), ("conversion", FLOAT)],
    ),
}
VIEWS: dict[str, list[tuple[str, str]]] = {
    "flow_outcomes": [
        ("flow_sid", "text"),
        ("flow_revision", "integer"),
        ("day", "date"),
        ("executions", "bigint"),
        ("ended", "bigint"),
        ("active", "bigint"),
        ("stuck", "bigint"),
        ("completion_rate", FLOAT),
        ("by_ended_reason", "jsonb"),
    ],
    "flows_overview": [
        ("flow_sid", "text"),
        ("friendly_name", "text"),
        ("executions_24h", "bigint"),
        ("executions_7d", "bigint"),
        ("completion_rate_7d", FLOAT),
        ("stuck_share_7d", FLOAT),
        ("last_execution_at", TSTZ),
    ],
}
RESULT_COLUMNS = """
SELECT p.proname, pg_get_function_arguments(p.oid) AS args,
       array_agg(a.name ORDER BY a.n) FILTER (WHERE a.mode = 't') AS names,
       array_agg(format_type(a.type, NULL) ORDER BY a.n) FILTER (WHERE a.mode = 't') AS types
FROM pg_proc p
CROSS JOIN LATERAL unnest(p.proargnames, p.proargmodes::text[], p.proallargtypes)
    WITH ORDINALITY AS a(name, mode, type, n)
WHERE p.pronamespace = 'studio'::regnamespace AND p.proname = ANY($1::text[])
GROUP BY p.oid, p.proname
"""
VIEW_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
WHERE a.attrelid = ('studio.' || $1)::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


async def test_signatures_and_columns_are_pinned(conn: asyncpg.Connection[Any]) -> None:
    rows = await conn.fetch(RESULT_COLUMNS, list(FUNCTIONS))
    actual = {
        r["proname"]: (
            r["args"].split(" RETURNS ")[0],
            list(zip(r["names"], r["types"], strict=True)),
        )
        for r in rows
    }
    expected = {name: (args, cols) for name, (args, cols) in FUNCTIONS.items()}
    for name, (args, cols) in expected.items():
        got_args, got_cols = actual[name]
        assert got_args == args, name
        assert [c for c, _ in got_cols if c in dict(cols)] == [c for c, _ in cols], name
        assert got_cols[: len(cols)] == [(c, t) for c, t in cols], name
    for view, cols in VIEWS.items():
        assert [tuple(r) for r in await conn.fetch(VIEW_COLUMNS, view)] == cols, view


def test_docs_give_every_column() -> None:
    documented = column_tables(DOCS, "##")
    for name, (_, cols) in FUNCTIONS.items():
        assert documented.get(name) == cols, f"docs/analytics.md's table for studio.{name}"
    for name, cols in VIEWS.items():
        assert documented.get(name) == cols, f"docs/analytics.md's table for studio.{name}"


async def test_reader_runs_every_example_query(
    conn: asyncpg.Connection[Any],
    reader: asyncpg.Connection[Any],  # noqa: F811
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    await load_ivr(conn, build_ivr(300, start=start, span=timedelta(days=2)))
    examples = code_blocks(DOCS, "sql")
    assert len(examples) >= 8
    for example in examples:
        rows = await reader.fetch(example)
        assert rows, f"documented query returned nothing:\n{example}"
    # the revisions side by side: both columns filled for a widget both revisions have
    side_by_side = await reader.fetch(next(q for q in examples if "entered_old" in q))
    menu = next(r for r in side_by_side if r["widget"] == "menu")
    assert menu["entered_old"] > 0 and menu["entered_new"] > 0
