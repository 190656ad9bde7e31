"""Time from ``studio-sink serve`` (embedded Postgres, data dir already made) to /readyz 200."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.load import SINK_ENV
from sink.db import embedded
from tests.support.process import SinkProcess


async def time_to_ready(runs: int, log_path: Path) -> dict[str, float | list[float]]:
    with tempfile.TemporaryDirectory(prefix="sink-bench-data-") as tmp:
        data_dir = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if k != "SINK_DATABASE_URL"}
        env["SINK_DATA_DIR"] = str(data_dir)
        with log_path.open("ab") as log:  # first start: initdb and migrations, not timed
            await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "sink", "migrate"],
                env=env,
                stdout=log,
                stderr=log,
                check=True,
                timeout=120,
            )
        await asyncio.to_thread(embedded.stop, data_dir)
        seconds: list[float] = []
        for _ in range(runs):
            sink = SinkProcess(None, log_path, {**SINK_ENV, "SINK_DATA_DIR": str(data_dir)})
            sink.start()
            try:
                ready = await sink.wait_ready(timeout=60, poll=0.01, request_timeout=2)
                seconds.append(round(ready, 3))
            finally:
                await asyncio.to_thread(sink.terminate)
                await asyncio.to_thread(embedded.stop, data_dir)
    return {"median_s": statistics.median(seconds), "runs_s": seconds}
