"""The PNG of throughput and p99 latency against offered load (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def ingest_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results["sweep"]
    offered = [p["offered_events_per_s"] for p in sweep]
    acked = [p["events_per_s"] for p in sweep]
    p99 = [p["latency_ms"].get("p99", float("nan")) for p in sweep]
    p50 = [p["latency_ms"].get("p50", float("nan")) for p in sweep]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    top.plot(offered, acked, "o-", label="sink: acknowledged (2xx) events/s")
    top.plot(offered, offered, ":", color="grey", label="offered")
    top.axhline(
        results["db_ceiling"]["events_per_s"],
        color="green",
        linestyle="--",
        label="DB ceiling (asyncpg, batches of 1000)",
    )
    if "raw_ceiling" in results:
        top.axhline(
            results["raw_ceiling"]["events_per_s"],
            color="purple",
            linestyle="--",
            label="raw-insert ceiling (one keyed table, batches of 1000)",
        )
    top.axhline(
        results["naive"]["events_per_s"],
        color="red",
        linestyle="--",
        label="naive sink (commit per event)",
    )
    top.axhline(
        results["max"]["events_per_s"], color="C0", linestyle=":", label="sink max (closed loop)"
    )
    top.set_ylabel("events/s")
    top.legend(fontsize=8)
    top.set_title(f"studio-sink ingest ({results['mode']} mode, 2 shared cores)")
    bottom.plot(offered, p99, "o-", color="C1", label="p99 delivery latency (all answers)")
    bottom.plot(offered, p50, "s--", color="C2", label="p50")
    bottom.axhline(50, color="grey", linestyle="--", label="target at half max: 50 ms")
    bottom.set_yscale("log")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("offered load, events/s (deliveries of 50 events)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def backfill_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = results["api"].get("calls_per_second_series", [])
    rss = results.get("rss_mb_series", [])
    step = results.get("rss_interval_s", 0.25)
    settings = results["settings"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(range(len(calls)), calls, label="Studio API calls/s (fake, 100 ms per call)")
    top.axhline(settings["rate_limit"], color="grey", linestyle="--", label="configured rate limit")
    top.set_ylabel("calls/s")
    top.legend(fontsize=8)
    top.set_title(
        f"studio-sink backfill: {settings['executions']} executions x"
        f" {settings['steps_per_execution']} steps ({results['mode']} mode)"
    )
    bottom.plot([i * step for i in range(len(rss))], rss, color="C1", label="backfill process RSS")
    bottom.set_ylim(0, max(rss, default=1) * 1.3)
    bottom.set_ylabel("MB")
    bottom.set_xlabel("seconds")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
