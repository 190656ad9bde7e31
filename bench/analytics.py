"""``python -m bench analytics``: the flow analytics functions at millions of steps.

One flow (the IVR of tests/support/ivr.py, two revisions, a subflow) with ``--steps``
steps over 30 days, written straight into the sink's tables (SQL, from 2,000 generated
executions used as templates), then ``sink.rebuild_flow_rollup``. Measured: the 30-day
``studio.widget_stats`` and ``studio.transition_stats`` (warm, median of 7), against the
same answer aggregated from the raw steps in the same run; the answers are compared.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.figures import Figure
from tests.support.ivr import build_ivr, store_definitions
from tests.support.pg import FreshDatabases


@dataclass(frozen=True)
class AnalyticsMode:
    name: str
    steps: int
    days: int = 30
    runs: int = 7


MODES = {
    "tiny": AnalyticsMode("tiny", 20_000, runs=3),
    "quick": AnalyticsMode("quick", 1_000_000),
    "full": AnalyticsMode("full", 10_000_000),
}
TEMPLATES = 2000
TEMPLATE_TABLE = """
CREATE TEMP TABLE bench_tpl (tpl int, n int, name text, t_from text, t_to text,
                             offset_ms bigint, parent_n int, revision int, status text,
                             ended_reason text, end_ms bigint)
"""
EXECUTIONS = """
INSERT INTO sink.executions (execution_sid, flow_sid, account_sid, status, started_by,
                             flow_revision, ended_reason, date_created, date_updated)
SELECT 'FN' || md5('e' || g), $1, 'AC' || md5('account'), t.status, 'Trigger', t.revision,
       t.ended_reason, x.start, x.start + t.end_ms * interval '1 ms'
FROM generate_series($2::bigint, $3::bigint - 1) AS g
CROSS JOIN LATERAL (SELECT $4::timestamptz + (g * $6::float8 / $5) * interval '1 second'
                           AS start,
                           (g % 1000 + CASE WHEN g < $5 / 2 THEN 0 ELSE 1000 END)::int AS tpl) x
JOIN (SELECT DISTINCT tpl, revision, status, ended_reason, end_ms FROM bench_tpl) t
  ON t.tpl = x.tpl
"""
STEPS = """
INSERT INTO sink.steps (step_sid, execution_sid, flow_sid, account_sid, name,
                        transitioned_from, transitioned_to, parent_step_sid, date_created)
SELECT 'FT' || md5(g || '-' || t.n), 'FN' || md5('e' || g), $1, 'AC' || md5('account'),
       t.name, t.t_from, t.t_to,
       CASE WHEN t.parent_n IS NOT NULL THEN 'FT' || md5(g || '-' || t.parent_n) END,
       x.start + t.offset_ms * interval '1 ms'
FROM generate_series($2::bigint, $3::bigint - 1) AS g
CROSS JOIN LATERAL (SELECT $4::timestamptz + (g * $6::float8 / $5) * interval '1 second'
                           AS start,
                           (g % 1000 + CASE WHEN g < $5 / 2 THEN 0 ELSE 1000 END)::int AS tpl) x
JOIN bench_tpl t ON t.tpl = x.tpl
"""
# transition_stats computed from the raw steps, exact percentiles (what the rollup replaces)
RAW_TRANSITIONS = """
WITH s AS (
    SELECT st.transitioned_from AS f, st.transitioned_to AS t, st.name, st.date_created AS d,
           st.parent_step_sid AS p, e.flow_revision AS rev,
           st.date_created - lag(st.date_created) OVER w AS dwell,
           row_number() OVER (PARTITION BY st.execution_sid, st.parent_step_sid,
                              st.transitioned_from, st.transitioned_to
                              ORDER BY st.date_created, st.step_sid) AS nth
    FROM sink.steps st LEFT JOIN sink.executions e USING (execution_sid)
    WHERE st.flow_sid = $1
    WINDOW w AS (PARTITION BY st.execution_sid, st.parent_step_sid
                 ORDER BY st.date_created, st.step_sid)
)
SELECT rev AS flow_revision, f AS transitioned_from, t AS transitioned_to,
       array_agg(DISTINCT name ORDER BY name) AS events, count(*) AS transitions,
       count(*) FILTER (WHERE nth = 1) AS executions,
       extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY dwell)) AS median_seconds,
       extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY dwell)) AS p90_seconds
FROM s
WHERE p IS NULL AND d >= date_trunc('hour', $2::timestamptz, 'UTC')
  AND d < date_trunc('hour', $3::timestamptz, 'UTC') + interval '1 hour'
GROUP BY 1, 2, 3
"""
BULK_LOAD_OBJECTS = """
SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname)
           AS drop,
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
              pg_get_constraintdef(c.oid)) AS restore
FROM pg_constraint c
WHERE c.conrelid IN ('sink.steps'::regclass, 'sink.executions'::regclass) AND c.contype = 'p'
UNION ALL
SELECT format('DROP INDEX sink.%I', i.indexname), i.indexdef
FROM pg_indexes i
WHERE i.schemaname = 'sink' AND i.tablename IN ('steps', 'executions')
  AND i.indexname NOT LIKE '%\\_pkey'
UNION ALL
SELECT format('ALTER TABLE %s DISABLE TRIGGER USER', t),
       format('ALTER TABLE %s ENABLE TRIGGER USER', t)
FROM unnest(ARRAY['sink.steps', 'sink.executions']) AS t
"""
ROLLUP_TRANSITIONS = "SELECT * FROM studio.transition_stats($1, $2, $3)"
ROLLUP_WIDGETS = "SELECT * FROM studio.widget_stats($1, $2, $3)"


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def _load(
    conn: asyncpg.Connection[Any], mode: AnalyticsMode, now: datetime
) -> dict[str, Any]:
    """Templates from the IVR generator, then the executions and steps in SQL, in chunks."""
    ivr = build_ivr(TEMPLATES, start=datetime(2000, 1, 1, tzinfo=UTC), span=timedelta(0), seed=1)
    await store_definitions(conn, ivr)
    await conn.execute(TEMPLATE_TABLE)
    rows = []
    for tpl, e in enumerate(ivr.executions):
        index = {s.sid: n for n, s in enumerate(e.steps)}
        end = e.ended_at or e.steps[-1].at
        for n, s in enumerate(e.steps):
            rows.append(
                (
                    tpl,
                    n,
                    s.name,
                    s.transitioned_from,
                    s.transitioned_to,
                    (s.at - e.started) // timedelta(milliseconds=1),
                    index.get(s.parent_step_sid or ""),
                    e.revision,
                    e.status,
                    e.ended_reason,
                    (end - e.started) // timedelta(milliseconds=1),
                )
            )
    await conn.copy_records_to_table("bench_tpl", records=rows)
    executions = round(mode.steps * TEMPLATES / len(rows))
    start = now - timedelta(days=mode.days)
    span = mode.days * 86400.0
    chunk = 250_000
    indexes = await _without_indexes(conn)
    for lo in range(0, executions, chunk):
        hi = min(executions, lo + chunk)
        args = (ivr.flow_sid, lo, hi, start, executions, span)
        await conn.execute(EXECUTIONS, *args)
        await conn.execute(STEPS, *args)
        _say(f"  loaded executions {hi:,} of {executions:,}")
    _say("  building the indexes")
    for statement in indexes:
        await conn.execute(statement)
    await conn.execute("ANALYZE sink.steps; ANALYZE sink.executions")
    steps = await conn.fetchval("SELECT count(*) FROM sink.steps")
    return {
        "flow_sid": ivr.flow_sid,
        "executions": executions,
        "steps": steps,
        "start": start.isoformat(),
    }


async def _without_indexes(conn: asyncpg.Connection[Any]) -> list[str]:
    """Drops the typed tables' keys and indexes and disables their triggers for the bulk
    load; returns the statements that put them back."""
    restore = []
    for r in await conn.fetch(BULK_LOAD_OBJECTS):
        await conn.execute(r["drop"])
        restore.append(r["restore"])
    return restore


async def _timed(conn: asyncpg.Connection[Any], sql: str, runs: int, *args: Any) -> dict[str, Any]:
    times, rows = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = await conn.fetch(sql, *args)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "median_ms": round(statistics.median(times), 2),
        "runs_ms": [round(t, 2) for t in times],
        "rows": [dict(r) for r in rows],
    }


def _same_answer(rollup: list[dict[str, Any]], raw: list[dict[str, Any]]) -> tuple[bool, float]:
    """Whether every count is equal, and the largest relative gap between a bucketed and the
    exact percentile (at most 2^(1/8) - 1, 9.05%, by construction)."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["flow_revision"], r["transitioned_from"], r["transitioned_to"])

    a, b = {key(r): r for r in rollup}, {key(r): r for r in raw}
    if set(a) != set(b):
        return False, float("inf")
    worst = 0.0
    for k, r in a.items():
        s = b[k]
        if (r["events"], r["transitions"], r["executions"]) != (
            list(s["events"]),
            s["transitions"],
            s["executions"],
        ):
            return False, float("inf")
        for col in ("median_seconds", "p90_seconds"):
            if (r[col] is None) != (s[col] is None):
                return False, float("inf")
            if r[col] is not None and float(s[col]) > 0:
                worst = max(worst, abs(r[col] - float(s[col])) / float(s[col]))
    return True, worst


async def run(mode: AnalyticsMode, database_url: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {"mode": mode.name, "started": time.strftime("%FT%TZ", time.gmtime())}
    started = time.perf_counter()
    db = await FreshDatabases.start(database_url, prefix="sink_bench_analytics")
    try:
        conn = await asyncpg.connect(await db.fresh_database())
        try:
            await _measure(conn, mode, results)
        finally:
            await conn.close()
    finally:
        await db.close()
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


async def _measure(
    conn: asyncpg.Connection[Any], mode: AnalyticsMode, results: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    _say(f"loading {mode.steps:,} steps over {mode.days} days")
    t0 = time.perf_counter()
    results["data"] = await _load(conn, mode, now)
    results["load_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    results["rollup_rows"] = await conn.fetchval(
        "SELECT sink.rebuild_flow_rollup($1)", results["data"]["flow_sid"]
    )
    results["rebuild_seconds"] = round(time.perf_counter() - t0, 1)
    await conn.execute("ANALYZE sink.flow_rollup")
    results["sizes"] = dict(
        await conn.fetchrow(
            "SELECT pg_size_pretty(pg_total_relation_size('sink.steps')) AS steps,"
            " pg_size_pretty(pg_total_relation_size('sink.flow_rollup')) AS rollup"
        )
    )
    _say(f"rollup rebuilt: {results['rollup_rows']:,} rows in {results['rebuild_seconds']} s")
    flow, since, until = results["data"]["flow_sid"], now - timedelta(days=mode.days), now
    widgets = await _timed(conn, ROLLUP_WIDGETS, mode.runs, flow, since, until)
    transitions = await _timed(conn, ROLLUP_TRANSITIONS, mode.runs, flow, since, until)
    _say(
        f"rollup: widget_stats {widgets['median_ms']} ms, transition_stats "
        f"{transitions['median_ms']} ms"
    )
    raw = await _timed(conn, RAW_TRANSITIONS, 1, flow, since, until)
    _say(f"raw steps: transition_stats {raw['median_ms']} ms")
    same, gap = _same_answer(transitions["rows"], raw["rows"])
    results["queries"] = {
        "widget_stats": {k: v for k, v in widgets.items() if k != "rows"},
        "transition_stats": {k: v for k, v in transitions.items() if k != "rows"},
        "raw_transition_stats": {k: v for k, v in raw.items() if k != "rows"},
    }
    results["same_answer"], results["max_percentile_gap"] = same, round(gap, 4)
    results["widget_rows"], results["transition_rows"] = (
        len(widgets["rows"]),
        len(transitions["rows"]),
    )


def figures(results: dict[str, Any]) -> list[Figure]:
    q = results["queries"]
    data = results["data"]
    size = f"{data['steps']:,} steps, {data['executions']:,} executions, 30 days"
    worst = max(q["widget_stats"]["median_ms"], q["transition_stats"]["median_ms"])
    return [
        Figure(
            "widget_stats, 30 days",
            f"{q['widget_stats']['median_ms']} ms",
            "< 200 ms",
            q["widget_stats"]["median_ms"] < 200,
            size,
        ),
        Figure(
            "transition_stats, 30 days",
            f"{q['transition_stats']['median_ms']} ms",
            "< 200 ms",
            q["transition_stats"]["median_ms"] < 200,
            size,
        ),
        Figure(
            "same answer from raw steps",
            f"{q['raw_transition_stats']['median_ms']:,.0f} ms",
            "(informative)",
            None,
            f"{q['raw_transition_stats']['median_ms'] / max(worst, 0.01):,.0f}x slower; "
            f"counts equal: {results['same_answer']}, percentiles within "
            f"{results['max_percentile_gap'] * 100:.1f}%",
        ),
        Figure(
            "rollup rebuild",
            f"{results['rebuild_seconds']} s",
            "(informative)",
            None,
            f"{results['rollup_rows']:,} rollup rows ({results['sizes']['rollup']});"
            f" steps table {results['sizes']['steps']}",
        ),
    ]
