"""``python -m bench backfill``: the foreground backfill against a fake Studio API.

The fake (tests/fakes, in its own process) serves one flow of E executions with S steps
each and answers every call after 100 ms. ``studio-sink backfill --flow FW --since ...``
runs as a real process against it and a fresh database: it lists the executions, then
for each fetches its context, its steps and every step's context. The figure is the
steady rate of API calls against the configured rate limit (what bounds a backfill
against the real API), plus items/s, and the process's memory over the run (bounded:
it must not grow with the number of steps).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import figures, plot, report
from bench.fake_studio import API_KEY_SECRET, API_KEY_SID, FakeSpec, FakeStudioProcess
from bench.load import SINK_ENV
from tests.support.pg import FreshDatabases
from tests.support.process import Monitor, free_port, sink_env


@dataclass(frozen=True)
class BackfillMode:
    name: str
    executions: int
    steps: int
    rate_limit: float = 300.0  # API calls per second (SINK_BACKFILL_RATE_LIMIT)
    latency: float = 0.1
    workers: int = 8
    concurrency: int = 64


MODES = {
    "tiny": BackfillMode("tiny", 10, 5, rate_limit=100.0),
    "quick": BackfillMode("quick", 150, 20),
    "full": BackfillMode("full", 2000, 50),  # 100 000 steps
}

ITEM_STATES = "SELECT state, count(*) FROM sink.backfill_items GROUP BY state"
STEPS_WITH_CONTEXT = "SELECT count(*) FROM sink.steps WHERE context_fetched_at IS NOT NULL"
RSS_INTERVAL_S = 0.25  # how often the backfill's memory is sampled


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run(mode: BackfillMode, database_url: str | None, workdir: Path) -> dict[str, Any]:
    """A fresh database and the fake API; the backfill run; the counts; the summary."""
    started = time.perf_counter()
    results = _settings(mode)
    db = await FreshDatabases.start(database_url, prefix="sink_bench")
    fake = FakeStudioProcess(FakeSpec(free_port(), mode.executions, mode.steps, mode.latency))
    try:
        dsn = await db.fresh_database()
        flow = await fake.start()
        _say(f"fake Studio API: {mode.executions} executions x {mode.steps} steps")
        log_path = workdir / "sink.log"
        env = _backfill_env(mode, dsn, fake.base_url)
        code, wall, monitor = await _run_backfill(flow, env, log_path, db.postgres_pid)
        api = await fake.stop()
        if code != 0:
            raise RuntimeError(
                f"studio-sink backfill exited with {code}:\n{log_path.read_text()[-3000:]}"
            )
        states, steps_done = await _counts(dsn)
    finally:
        fake.kill()
        await db.close()
    _summarise(results, _Outcome(wall, api, states, steps_done, monitor), mode, started)
    return results


def _settings(mode: BackfillMode) -> dict[str, Any]:
    return {
        "mode": mode.name,
        "started": time.strftime("%FT%TZ", time.gmtime()),
        "settings": {
            "executions": mode.executions,
            "steps_per_execution": mode.steps,
            "rate_limit": mode.rate_limit,
            "latency_s": mode.latency,
            "workers": mode.workers,
            "concurrency": mode.concurrency,
        },
    }


def _backfill_env(mode: BackfillMode, dsn: str, studio_base_url: str) -> dict[str, str]:
    """``studio-sink backfill`` against the fake API, with the mode's limits."""
    return sink_env(
        0,
        dsn,
        {
            **SINK_ENV,
            "SINK_STUDIO_BASE_URL": studio_base_url,
            "SINK_TWILIO_API_KEY_SID": API_KEY_SID,
            "SINK_TWILIO_API_KEY_SECRET": API_KEY_SECRET,
            "SINK_BACKFILL_RATE_LIMIT": str(mode.rate_limit),
            "SINK_BACKFILL_WORKERS": str(mode.workers),
            "SINK_BACKFILL_CONCURRENCY": str(mode.concurrency),
        },
    )


async def _run_backfill(
    flow: str, env: dict[str, str], log_path: Path, postgres_pid: int | None
) -> tuple[int, float, Monitor]:
    """Run ``studio-sink backfill --flow FW --since ...`` to its end, watched by a Monitor;
    its exit code, its wall time and the Monitor."""
    command = [
        sys.executable,
        "-m",
        "sink",
        "backfill",
        "--flow",
        flow,
        "--since",
        "2019-01-01T00:00:00Z",
        "--quiet",
    ]
    with log_path.open("ab") as log:
        t0 = time.perf_counter()
        proc = await asyncio.to_thread(subprocess.Popen, command, env=env, stdout=log, stderr=log)
    monitor = Monitor(proc.pid, postgres_pid, interval=RSS_INTERVAL_S)
    monitor.start()
    code = await asyncio.to_thread(proc.wait)
    wall = time.perf_counter() - t0
    await monitor.stop()
    return code, wall, monitor


async def _counts(dsn: str) -> tuple[dict[str, int], int]:
    """Backfill items by state, and the steps whose context was fetched."""
    conn = await asyncpg.connect(dsn)
    try:
        states = {row[0]: row[1] for row in await conn.fetch(ITEM_STATES)}
        steps_done: int = await conn.fetchval(STEPS_WITH_CONTEXT)
    finally:
        await conn.close()
    return states, steps_done


@dataclass(frozen=True)
class _Outcome:
    wall: float
    api: dict[str, Any]
    states: dict[str, int]
    steps_done: int
    monitor: Monitor


def _summarise(results: dict[str, Any], out: _Outcome, mode: BackfillMode, started: float) -> None:
    """Rates, memory over the run (its 2nd quarter against its last) and CPU shares."""
    monitor, states, wall = out.monitor, out.states, out.wall
    rss = monitor.rss
    quarter = max(1, len(rss) // 4)  # the first quarter holds start-up: compare the 2nd
    results.update(
        wall_s=round(wall, 2),
        api=out.api,
        items=states,
        steps_with_context=out.steps_done,
        items_per_s=round(sum(states.values()) / wall, 2),
        steps_per_s=round(out.steps_done / wall, 1),
        rss_max_mb=monitor.max_rss_mb,
        rss_mb_series=[round(x / 2**20, 1) for x in rss],
        rss_interval_s=RSS_INTERVAL_S,
        rss_second_quarter_max_mb=round(max(rss[quarter : 2 * quarter] or rss) / 2**20, 1),
        rss_last_quarter_max_mb=round(max(rss[-quarter:]) / 2**20, 1),
        backfill_cpu_share=monitor.cpu_share,
        postgres_cpu_share=monitor.postgres_cpu_share,
        machine_cpu_share=monitor.machine_cpu_share,
        seconds=round(time.perf_counter() - started, 1),
    )
    _say(
        f"backfill: {wall:.1f} s, items {states}, {out.steps_done} step contexts,"
        f" API {out.api.get('steady_calls_per_s')} calls/s (limit {mode.rate_limit}),"
        f" RSS max {monitor.max_rss_mb} MB; CPU cores: backfill {monitor.cpu_share},"
        f" postgres {monitor.postgres_cpu_share}, machine {monitor.machine_cpu_share}"
    )


def backfill_figures(results: dict[str, Any]) -> list[figures.Figure]:
    limit = results["settings"]["rate_limit"]
    rate = results["api"].get("steady_calls_per_s", 0.0)
    items = results["items"]
    total = sum(items.values())
    first, last = results["rss_second_quarter_max_mb"], results["rss_last_quarter_max_mb"]
    bounded = last <= first * 1.25 + 10
    return [
        figures.Figure(
            "backfill API calls/s vs rate limit",
            f"{rate / limit:.2f}x",
            ">= 0.9x",
            rate / limit >= 0.9,
            f"{rate:.0f} vs {limit:.0f} calls/s; 100 ms per call;"
            f" {results['api'].get('calls')} calls",
        ),
        figures.Figure(
            "backfill items finished",
            f"{items.get('done', 0)}/{total}",
            "all done",
            items.get("done", 0) == total,
            f"{results['items_per_s']} items/s, {results['steps_per_s']} step contexts/s",
        ),
        figures.Figure(
            "backfill RSS bounded",
            f"{results['rss_max_mb']:.0f} MB",
            "flat while steps grow",
            bounded,
            f"max in 2nd quarter of the run {first} MB, last quarter {last} MB;"
            f" {results['steps_with_context']} steps",
        ),
    ]


async def main(args: argparse.Namespace, workdir: Path) -> list[figures.Figure]:
    results = await run(MODES[args.mode], args.database_url, workdir)
    found = backfill_figures(results)
    results["figures"] = [f.as_dict() for f in found]
    path = report.write_json("backfill", results, args.results_dir)
    print(f"\nresults: {path}")
    docs = args.docs if args.docs is not None else args.mode == "full"
    if plot.available() and args.mode != "tiny":
        image = (
            report.ROOT / "docs" / "benchmarks-backfill.png" if docs else path.with_suffix(".png")
        )
        plot.backfill_plot(results, image)
        print(f"plot: {image}")
    if docs:
        content = "\n\n".join(
            [
                f"Measured {results['started']} with `python -m bench backfill --{results['mode']}`"
                f" ({results['seconds']} s): {results['settings']}.",
                figures.markdown_table(found),
            ]
        )
        report.replace_section("backfill", content)
        print(f"docs: {report.DOCS}")
    return found
