"""``python -m bench ingest``: the sink's throughput, latency and memory, with baselines.

Order: DB ceiling and naive sink (asyncpg, no HTTP), then the sink process: a warm-up,
the maximum throughput (closed loop, in rounds alternating with both ceilings: the sink's
own ``sink.ingest`` and the raw insert), an open-loop sweep of offered load as fractions of
that maximum (latency at half of it, overload at twice it), and the start-up time. Every
phase reports the CPU microseconds per acknowledged event in the sink and in Postgres.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import baselines, load, profiler
from bench.generator import Generator, Phase, PhaseResult
from bench.startup import time_to_ready
from tests.support.pg import FreshDatabases
from tests.support.process import Monitor, SinkProcess, scrape_batches


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
    out["sink_cpu_us_per_event"] = _per_event(monitor.cpu_share, result.events_per_s)
    out["postgres_cpu_us_per_event"] = _per_event(monitor.postgres_cpu_share, result.events_per_s)
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
        f" machine {monitor.machine_cpu_share:.2f}; CPU us/event: sink"
        f" {out['sink_cpu_us_per_event']}, postgres {out['postgres_cpu_us_per_event']}; batches of"
        f" {out.get('batch_events_mean')} events, commit {out.get('commit_ms_mean')} ms"
    )
    return out


def _per_event(cores: float | None, events_per_s: float) -> float | None:
    """CPU microseconds per event from a CPU share (cores) at a rate (events/s)."""
    if cores is None or not events_per_s:
        return None
    return round(cores / events_per_s * 1e6, 1)


async def run(
    mode: IngestMode, database_url: str | None, workdir: Path, profile: Path | None = None
) -> dict[str, Any]:
    """Baselines, then the sink process (warm-up, maximum, sweep), then its start-up time."""
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode.name, "started": time.strftime("%FT%TZ", time.gmtime())}
    log_path = workdir / "sink.log"
    db = await FreshDatabases.start(database_url, prefix="sink_bench")
    try:
        _say(f"Postgres ready ({'given' if database_url else 'embedded, temp dir'})")
        one = await _baselines(mode, db, results)
        await _measure_sink(mode, db, log_path, one, results, profile)
        results["startup"] = await time_to_ready(mode.startup_runs, log_path)
        _say(f"serve -> /readyz: {results['startup']}")
    finally:
        await db.close()
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


async def _baselines(
    mode: IngestMode, db: FreshDatabases, results: dict[str, Any]
) -> baselines.BaselineResult:
    """The DB ceiling on one connection and the naive sink; returns the ceiling."""
    deliveries = baselines.parsed_deliveries(seed=1, count=mode.ceiling_deliveries)
    pg = db.postgres_pid
    one = await baselines.db_ceiling(await db.fresh_database(), deliveries, 1, pg)
    _say(f"DB ceiling, 1 connection: {one.events_per_s:,.0f} events/s (informative)")
    results["db_ceiling_1_connection"] = one.as_dict()
    naive_events = baselines.parsed_deliveries(seed=2, count=max(4, int(mode.naive_seconds * 60)))
    naive = await baselines.naive(
        await db.fresh_database(), naive_events, 1, mode.naive_seconds, pg
    )
    results["naive"] = naive.as_dict()
    _say(
        f"naive sink (one commit per event): {naive.events_per_s:,.0f} events/s,"
        f" postgres {naive.postgres_cpu_us_per_event} us/event"
    )
    return one


@dataclass(frozen=True)
class _Bench:
    """The running sink and what every phase against it needs."""

    mode: IngestMode
    sink: SinkProcess
    postgres_pid: int | None
    expect: float  # deliveries/s the closed loop should prepare for

    def closed(self, name: str, seed: int, seconds: float) -> Phase:
        """A closed-loop phase: as fast as the sink answers."""
        return Phase(
            name,
            self.sink.base_url,
            seed,
            seconds,
            concurrency=self.mode.closed_concurrency,
            prepare=int(self.expect * seconds) + 50,
        )

    def open(self, name: str, seed: int, rate: float) -> Phase:
        """An open-loop phase: ``rate`` deliveries/s offered, whatever the answers."""
        return Phase(
            name,
            self.sink.base_url,
            seed=seed,
            duration=self.mode.point_seconds,
            rate=rate,
            concurrency=self.mode.open_concurrency,
            prepare=int(rate * self.mode.point_seconds) + 20,
        )

    async def measure(self, phase: Phase, profile: Path | None = None) -> dict[str, Any]:
        return await _phase(self.sink, phase, self.postgres_pid, profile)


async def _measure_sink(
    mode: IngestMode,
    db: FreshDatabases,
    log_path: Path,
    one: baselines.BaselineResult,
    results: dict[str, Any],
    profile: Path | None,
) -> None:
    """The sink process: a warm-up, its maximum (rounds), then the sweep of offered load."""
    ceiling_dsn = await db.fresh_database()
    raw_dsn = await db.fresh_database()
    sink = SinkProcess(await db.fresh_database(), log_path, load.SINK_ENV)
    sink.start()
    try:
        await sink.wait_ready(timeout=30, request_timeout=2)
        _say(f"sink ready on {sink.base_url}")
        expect = one.events_per_s * 2.5 / load.EVENTS_PER_DELIVERY
        bench = _Bench(mode, sink, db.postgres_pid, expect)
        if mode.warmup_seconds:
            await bench.measure(bench.closed("warm-up", 100, mode.warmup_seconds))
        maximum = await _maximum(bench, (ceiling_dsn, raw_dsn), results, profile)
        results["sweep"] = await _sweep(bench, maximum)
    finally:
        sink.terminate()


async def _maximum(
    bench: _Bench, dsns: tuple[str, str], results: dict[str, Any], profile: Path | None
) -> dict[str, Any]:
    """The sink's maximum throughput: the median round by ratio to the DB ceiling."""
    # The machine is shared: alternate the DB ceiling and the sink's maximum so
    # both see the same background load, and take the median round.
    rounds = [
        await _round(bench, dsns, r, profile if r == 0 else None) for r in range(bench.mode.rounds)
    ]
    rounds.sort(key=lambda x: x["sink"]["ratio_to_ceiling"])
    median = rounds[len(rounds) // 2]
    results["rounds"] = rounds
    results["db_ceiling"] = median["db_ceiling"]
    results["raw_ceiling"] = median["raw_ceiling"]
    maximum = dict(median["sink"])
    maximum["sink_max_rss_mb"] = max(x["sink"]["sink_max_rss_mb"] for x in rounds)
    results["max"] = maximum
    return maximum


async def _round(
    bench: _Bench, dsns: tuple[str, str], r: int, profile: Path | None
) -> dict[str, Any]:
    """One round: the DB ceiling and the raw-insert ceiling on two connections, then the
    sink's closed-loop maximum."""
    pg = bench.postgres_pid
    batch = baselines.parsed_deliveries(seed=10 + r, count=bench.mode.ceiling_deliveries)
    ceiling = await baselines.db_ceiling(dsns[0], batch, 2, pg)
    raw = await baselines.raw_ceiling(dsns[1], batch, 2, pg)
    _say(
        f"round {r + 1}: 2 connections: DB ceiling {ceiling.events_per_s:,.0f} events/s"
        f" (postgres {ceiling.postgres_cpu_us_per_event} us/event), raw-insert ceiling"
        f" {raw.events_per_s:,.0f} events/s (postgres {raw.postgres_cpu_us_per_event} us/event)"
    )
    sink_max = await bench.measure(
        bench.closed(f"round {r + 1}: sink max (closed loop)", 101 + r, bench.mode.max_seconds),
        profile,
    )
    sink_max["ratio_to_ceiling"] = round(sink_max["events_per_s"] / ceiling.events_per_s, 3)
    sink_max["ratio_to_raw_ceiling"] = round(sink_max["events_per_s"] / raw.events_per_s, 3)
    return {"db_ceiling": ceiling.as_dict(), "raw_ceiling": raw.as_dict(), "sink": sink_max}


async def _sweep(bench: _Bench, maximum: dict[str, Any]) -> list[dict[str, Any]]:
    """Open-loop points at fractions of the maximum (latency at half, overload at twice)."""
    max_rate = maximum["events_per_s"] / load.EVENTS_PER_DELIVERY
    points = []
    for n, fraction in enumerate(bench.mode.sweep):
        rate = max(1.0, fraction * max_rate)
        point = await bench.measure(bench.open(f"{fraction:g}x max", 110 + n, rate))
        point["fraction"] = fraction
        points.append(point)
    return points
