"""The benchmarks still run: each entry point on a tiny load. No speed is asserted
(speed is for the benchmarks themselves); only that they finish, print their figures
last and write their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes: outside the quick run


ROOT = Path(__file__).resolve().parents[2]


def run_bench(kind: str, pg_server: str, results: Path) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            kind,
            "--tiny",
            "--database-url",
            pg_server,
            "--results-dir",
            str(results),
            "--no-docs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(60)
def test_ingest_bench_runs_and_prints_its_ratios_last(pg_server: str, tmp_path: Path) -> None:
    out = run_bench("ingest", pg_server, tmp_path)
    tail = out[out.index("== ingest (tiny)") :]
    for name in (
        "ingest vs DB ceiling",
        "ingest vs naive sink",
        "p99 latency at half max",
        "overload 2x",
        "sink RSS at max load",
        "serve -> /readyz",
    ):
        assert name in tail
    [path] = tmp_path.glob("ingest-tiny-*.json")
    results = json.loads(path.read_text())
    assert results["max"]["acked_events"] > 0
    assert results["naive"]["events"] > 0 and results["db_ceiling"]["events"] > 0
    assert {p["fraction"] for p in results["sweep"]} == {0.5, 2.0}
    assert results["max"]["errors"] == {}


@pytest.mark.timeout(60)
def test_backfill_bench_runs_and_prints_its_ratios_last(pg_server: str, tmp_path: Path) -> None:
    out = run_bench("backfill", pg_server, tmp_path)
    tail = out[out.index("== backfill (tiny)") :]
    assert "backfill API calls/s vs rate limit" in tail
    [path] = tmp_path.glob("backfill-tiny-*.json")
    results = json.loads(path.read_text())
    assert results["items"] == {"done": 11}  # the listing and its 10 executions
    assert results["steps_with_context"] == 50
