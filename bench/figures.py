"""Turns raw results into the figures we hold ourselves to (value, target, verdict)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OK_STATUSES = frozenset({"429", "503"})


@dataclass(frozen=True)
class Figure:
    name: str
    value: str
    target: str
    ok: bool | None  # None: informative, no target
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _point(results: dict[str, Any], fraction: float) -> dict[str, Any] | None:
    return next((p for p in results.get("sweep", []) if p["fraction"] == fraction), None)


def _answered_well(point: dict[str, Any]) -> bool:
    statuses = point["statuses"]
    good = all(s.startswith("2") or s in OK_STATUSES for s in statuses)
    return good and not point["errors"] and point["max_latency_ms"] <= 5000


def ingest_figures(results: dict[str, Any]) -> list[Figure]:
    """Throughput against the baselines, latency, overload, memory, start-up, generator."""
    return [
        *_throughput_figures(results),
        *_latency_figures(results),
        *_overload_figures(results),
        _rss_figure(results),
        *_startup_figures(results),
        _generator_figure(results),
    ]


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} us"


def _throughput_figures(results: dict[str, Any]) -> list[Figure]:
    sink_eps = results["max"]["events_per_s"]
    ceiling = results["db_ceiling"]["events_per_s"]
    naive = results["naive"]["events_per_s"]
    return [
        *_raw_figures(results),
        Figure(
            "ingest vs DB ceiling",
            f"{sink_eps / ceiling:.2f}x",
            ">= 0.6x",
            sink_eps / ceiling >= 0.6,
            f"{sink_eps:,.0f} vs {ceiling:,.0f} events/s ({results['db_ceiling']['connections']}"
            f" conn., batches of 1000); median of rounds"
            f" {[r['sink']['ratio_to_ceiling'] for r in results.get('rounds', [])]}",
        ),
        Figure(
            "(bound) DB ceiling vs naive",
            f"{ceiling / naive:.1f}x",
            "(informative)",
            None,
            "the most any sink could show against naive here",
        ),
        Figure(
            "ingest vs naive sink",
            f"{sink_eps / naive:.1f}x",
            ">= 20x",
            sink_eps / naive >= 20,
            f"{sink_eps:,.0f} vs {naive:,.0f} events/s (one commit per event)",
        ),
        _cpu_figure(results),
        *_cores_bound(results),
    ]


def _raw_figures(results: dict[str, Any]) -> list[Figure]:
    """Against the physical limit: the same events batch-inserted into one keyed table."""
    raw = results.get("raw_ceiling")
    if not raw:
        return []
    sink_eps = results["max"]["events_per_s"]
    ratio = sink_eps / raw["events_per_s"]
    rounds = [r["sink"].get("ratio_to_raw_ceiling") for r in results.get("rounds", [])]
    return [
        Figure(
            "ingest vs raw-insert ceiling",
            f"{ratio:.2f}x",
            ">= 0.6x",
            ratio >= 0.6,
            f"{sink_eps:,.0f} vs {raw['events_per_s']:,.0f} events/s (2 conn., batches of 1000,"
            f" INSERT .. ON CONFLICT DO NOTHING into one keyed table); rounds {rounds}",
        ),
        Figure(
            "(bound) DB ceiling vs raw-insert ceiling",
            f"{results['db_ceiling']['events_per_s'] / raw['events_per_s']:.2f}x",
            "(informative)",
            None,
            "what sink.ingest's own work (dedup key, typed rows, rollup, deliveries) leaves;"
            f" postgres CPU per event {_us(results['db_ceiling'].get('postgres_cpu_us_per_event'))}"
            f" vs {_us(raw.get('postgres_cpu_us_per_event'))}",
        ),
    ]


def _cores_bound(results: dict[str, Any]) -> list[Figure]:
    """What 2 whole cores allow at the CPU the sink and Postgres spend per event."""
    top, raw = results["max"], results.get("raw_ceiling")
    sink_us, pg_us = top.get("sink_cpu_us_per_event"), top.get("postgres_cpu_us_per_event")
    if not raw or not sink_us or not pg_us:
        return []
    bound = 2 * 1e6 / (sink_us + pg_us)
    return [
        Figure(
            "(bound) 2 idle cores / CPU per event",
            f"{bound / raw['events_per_s']:.2f}x raw",
            "(informative)",
            None,
            f"{bound:,.0f} events/s if the sink ({sink_us:.0f} us) and Postgres ({pg_us:.0f} us)"
            " had both cores to themselves: the most the raw-insert ratio can be here",
        )
    ]


def _cpu_figure(results: dict[str, Any]) -> Figure:
    """Where an acknowledged event's CPU goes, at the maximum and at half of it."""
    top = results["max"]
    half = _point(results, 0.5) or {}
    return Figure(
        "CPU per event at max: sink / postgres",
        f"{_us(top.get('sink_cpu_us_per_event'))} / {_us(top.get('postgres_cpu_us_per_event'))}",
        "(informative)",
        None,
        f"at half max {_us(half.get('sink_cpu_us_per_event'))} /"
        f" {_us(half.get('postgres_cpu_us_per_event'))}; whole machine busy"
        f" {top.get('machine_cpu_share')} of 2 cores at max",
    )


def _latency_figures(results: dict[str, Any]) -> list[Figure]:
    """p99 at half the maximum, when the sweep has that point."""
    half = _point(results, 0.5)
    if not half:
        return []
    p99 = half["latency_ms"].get("p99", float("inf"))
    return [
        Figure(
            "p99 latency at half max",
            f"{p99:.1f} ms",
            "<= 50 ms",
            p99 <= 50,
            f"offered {half['offered_events_per_s']:,.0f} events/s",
        )
    ]


def _overload_figures(results: dict[str, Any]) -> list[Figure]:
    """At twice the maximum: every delivery answered quickly, memory bounded."""
    over = _point(results, 2.0)
    if not over:
        return []
    rss = over["sink_max_rss_mb"]
    return [
        Figure(
            "overload 2x: all answered < 5 s",
            "yes" if _answered_well(over) else "no",
            "2xx/429/503, no timeouts",
            _answered_well(over),
            f"statuses {over['statuses']}, errors {over['errors'] or 'none'},"
            f" max {over['max_latency_ms']:.0f} ms",
        ),
        Figure("overload 2x: sink RSS", f"{rss:.0f} MB", "< 256 MB", rss < 256),
    ]


def _rss_figure(results: dict[str, Any]) -> Figure:
    """The sink's memory at its maximum (and at 1x max, when the sweep has that point)."""
    steady = [results["max"]["sink_max_rss_mb"]]
    full = _point(results, 1.0)
    if full:
        steady.append(full["sink_max_rss_mb"])
    return Figure("sink RSS at max load", f"{max(steady):.0f} MB", "<= 150 MB", max(steady) <= 150)


def _startup_figures(results: dict[str, Any]) -> list[Figure]:
    startup = results.get("startup")
    if not startup:
        return []
    median = startup["median_s"]
    return [
        Figure(
            "serve -> /readyz (embedded)",
            f"{median:.2f} s",
            "<= 3 s",
            median <= 3,
            f"runs {startup['runs_s']}",
        )
    ]


def _generator_figure(results: dict[str, Any]) -> Figure:
    return Figure(
        "generator CPU share at max",
        f"{results['max']['generator_cpu_share']:.2f} core",
        "(informative)",
        None,
        f"sink process {results['max']['sink_cpu_share']:.2f} core",
    )


def verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: ""}[ok]


def print_figures(title: str, figures: list[Figure]) -> None:
    print(f"\n== {title}: ratios against baselines measured in this run ==")
    width = max(len(f.name) for f in figures)
    for f in figures:
        print(
            f"{f.name:<{width}}  {f.value:>10}  target {f.target:<24} {verdict(f.ok):<4}  "
            f"{f.detail}"
        )


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| figure | measured | target | verdict | detail |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {f.name} | {f.value} | {f.target} | {verdict(f.ok) or '-'} | {f.detail} |"
        for f in figures
    ]
    return "\n".join(lines)


def sweep_table(results: dict[str, Any]) -> str:
    lines = [
        "| offered (x max) | offered events/s | acked events/s | p50 ms | p99 ms | max ms |"
        " statuses | errors | sink RSS MB | sink CPU | postgres CPU | sink us/event |"
        " postgres us/event | generator CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [{**results["max"], "fraction": "max (closed loop)"}, *results.get("sweep", [])]
    for p in rows:
        offered = p["offered_events_per_s"]
        lat = p["latency_ms"]
        lines.append(
            f"| {p['fraction']} | {'-' if offered is None else f'{offered:,.0f}'}"
            f" | {p['events_per_s']:,.0f} | {lat.get('p50', '-')} | {lat.get('p99', '-')}"
            f" | {p['max_latency_ms']} | {p['statuses']} | {p['errors'] or '-'}"
            f" | {p['sink_max_rss_mb']} | {p['sink_cpu_share']} | {p.get('postgres_cpu_share')}"
            f" | {p.get('sink_cpu_us_per_event')} | {p.get('postgres_cpu_us_per_event')}"
            f" | {p['generator_cpu_share']} |"
        )
    return "\n".join(lines)
