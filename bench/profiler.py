"""Optional: py-spy on the sink process during the maximum-throughput phase.

``python -m bench ingest --profile out.txt`` (needs ``pip install py-spy`` and ptrace
rights) writes collapsed stacks, then prints the functions with the most own samples.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path


def start(pid: int, path: Path, seconds: float) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    return subprocess.Popen(
        [
            exe,
            "record",
            "-p",
            str(pid),
            "-o",
            str(path),
            "--format",
            "raw",
            "-r",
            "200",
            "-d",
            str(int(seconds) + 1),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish(proc: subprocess.Popen[bytes], path: Path, top: int = 25) -> str:
    proc.wait(60)
    return summary(path, top)


def summary(path: Path, top: int = 25) -> str:
    """Own and inclusive sample shares per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; own time:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)
