"""``python -m bench ingest``: the sink's throughput, latency and memory, with baselines.

Order: DB ceiling and naive sink (asyncpg, no HTTP), then the sink process: a warm-up,
the maximum throughput (closed loop), an open-loop sweep of offered load as fractions of
that maximum (latency at half of it, overload at twice it), and the start-up time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import baselines, load, profiler
from bench.generator import Generator, Phase, PhaseResult
from bench.pg import BenchPostgres
from bench.sinkproc import Monitor, SinkProcess, scrape_batches
from bench.startup import time_to_ready


@dataclass(frozen=True)
class IngestMode:
    name: str
    ceiling_deliveries: int  # x50 events, per round
    naive_seconds: float
    warmup_seconds: float
    max_seconds: float  # per round
    rounds: int  # DB ceiling and sink maximum measured alternately, this many times each
    sweep: tuple[float, ...]  # fractions of the maximum throughput
    point_seconds: float
    startup_runs: int
    closed_concurrency: int = 64
    open_concurrency: int = 1000


MODES = {
    "tiny": IngestMode("tiny", 40, 0.5, 0, 1.0, 1, (0.5, 2.0), 0.7, 1),
    "quick": IngestMode("quick", 400, 3, 2, 4, 3, (0.25, 0.5, 1.0, 1.5, 2.0), 5, 1),
    "full": IngestMode(
        "full", 800, 8, 3, 10, 3, (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0), 15, 3
    ),
}


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def _phase(
    sink: SinkProcess, phase: Phase, postgres_pid: int | None, profile: Path | None = None
) -> dict[str, Any]:
    generator = Generator(phase)
    spy = None
    try:
        await generator.prepare()
        if profile is not None:
            spy = profiler.start(sink.pid, profile, phase.duration)
        monitor = Monitor(sink.pid, postgres_pid)
        before = await scrape_batches(sink.base_url)
        monitor.start()
        result: PhaseResult = await generator.run()
        await monitor.stop()
        after = await scrape_batches(sink.base_url)
    finally:
        generator.kill()
    if spy is not None and profile is not None:
        _say(f"  profile: {profiler.finish(spy, profile)}")
    out = result.as_dict()
    out["sink_max_rss_mb"] = monitor.max_rss_mb
    out["sink_cpu_share"] = monitor.cpu_share
    out["postgres_cpu_share"] = monitor.postgres_cpu_share
    out["machine_cpu_share"] = monitor.machine_cpu_share
    batches = after.get("batches", 0) - before.get("batches", 0)
    if batches:
        out["batch_events_mean"] = round((after["events"] - before["events"]) / batches, 1)
        out["commit_ms_mean"] = round(
            (after["commit_seconds"] - before["commit_seconds"]) / batches * 1000, 2
        )
    lat = result.latency_ms.get("p99", 0.0)
    _say(
        f"  {phase.name}: {result.events_per_s:,.0f} events/s acked, p99 {lat} ms,"
        f" statuses {result.statuses}, errors {result.errors or 'none'},"
        f" sink RSS {monitor.max_rss_mb} MB; CPU cores: sink {monitor.cpu_share:.2f},"
        f" postgres {monitor.postgres_cpu_share}, generator {result.generator_cpu_share:.2f},"
        f" machine {monitor.machine_cpu_share:.2f}; batches of"
        f" {out.get('batch_events_mean')} events, commit {out.get('commit_ms_mean')} ms"
    )
    return out


async def run(
    mode: IngestMode, database_url: str | None, workdir: Path, profile: Path | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode.name, "started": time.strftime("%FT%TZ", time.gmtime())}
    log_path = workdir / "sink.log"
    db = await BenchPostgres.start(database_url)
    try:
        _say(f"Postgres ready ({'given' if database_url else 'embedded, temp dir'})")
        deliveries = baselines.parsed_deliveries(seed=1, count=mode.ceiling_deliveries)
        one = await baselines.db_ceiling(await db.fresh_database(), deliveries, 1)
        _say(f"DB ceiling, 1 connection: {one.events_per_s:,.0f} events/s (informative)")
        results["db_ceiling_1_connection"] = one.as_dict()
        naive_events = baselines.parsed_deliveries(
            seed=2, count=max(4, int(mode.naive_seconds * 60))
        )
        naive = await baselines.naive(
            await db.fresh_database(), naive_events, 1, mode.naive_seconds
        )
        results["naive"] = naive.as_dict()
        _say(f"naive sink (one commit per event): {naive.events_per_s:,.0f} events/s")

        ceiling_dsn = await db.fresh_database()
        sink = SinkProcess(log_path, {"SINK_DATABASE_URL": await db.fresh_database()})
        sink.start()
        try:
            await sink.wait_ready()
            _say(f"sink ready on {sink.base_url}")
            expect = one.events_per_s * 2.5 / load.EVENTS_PER_DELIVERY
            pg = db.postgres_pid

            def closed(name: str, seed: int, seconds: float) -> Phase:
                return Phase(
                    name,
                    sink.base_url,
                    seed,
                    seconds,
                    concurrency=mode.closed_concurrency,
                    prepare=int(expect * seconds) + 50,
                )

            if mode.warmup_seconds:
                await _phase(sink, closed("warm-up", 100, mode.warmup_seconds), pg)
            # The machine is shared: alternate the DB ceiling and the sink's maximum so
            # both see the same background load, and take the median round.
            rounds = []
            for r in range(mode.rounds):
                batch = baselines.parsed_deliveries(seed=10 + r, count=mode.ceiling_deliveries)
                ceiling = await baselines.db_ceiling(ceiling_dsn, batch, 2)
                _say(
                    f"round {r + 1}: DB ceiling, 2 connections: {ceiling.events_per_s:,.0f}"
                    " events/s"
                )
                sink_max = await _phase(
                    sink,
                    closed(f"round {r + 1}: sink max (closed loop)", 101 + r, mode.max_seconds),
                    pg,
                    profile if r == 0 else None,
                )
                sink_max["ratio_to_ceiling"] = round(
                    sink_max["events_per_s"] / ceiling.events_per_s, 3
                )
                rounds.append({"db_ceiling": ceiling.as_dict(), "sink": sink_max})
            rounds.sort(key=lambda x: x["sink"]["ratio_to_ceiling"])
            median = rounds[len(rounds) // 2]
            results["rounds"] = rounds
            results["db_ceiling"] = median["db_ceiling"]
            maximum = dict(median["sink"])
            maximum["sink_max_rss_mb"] = max(x["sink"]["sink_max_rss_mb"] for x in rounds)
            results["max"] = maximum
            max_rate = maximum["events_per_s"] / load.EVENTS_PER_DELIVERY
            points = []
            for n, fraction in enumerate(mode.sweep):
                rate = max(1.0, fraction * max_rate)
                phase = Phase(
                    f"{fraction:g}x max",
                    sink.base_url,
                    seed=110 + n,
                    duration=mode.point_seconds,
                    rate=rate,
                    concurrency=mode.open_concurrency,
                    prepare=int(rate * mode.point_seconds) + 20,
                )
                point = await _phase(sink, phase, pg)
                point["fraction"] = fraction
                points.append(point)
            results["sweep"] = points
        finally:
            sink.stop()
        results["startup"] = await time_to_ready(mode.startup_runs, log_path)
        _say(f"serve -> /readyz: {results['startup']}")
    finally:
        await db.close()
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results
