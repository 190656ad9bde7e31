"""How many ``serve`` processes: SINK_WORKERS as a number, or ``auto``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Final, Literal

AUTO_MAX: Final = 8  # each worker opens its own pool: 8 x SINK_DB_POOL_SIZE connections
CGROUP_CPU_MAX: Final = Path("/sys/fs/cgroup/cpu.max")


def worker_count(setting: int | Literal["auto"], cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The number of processes to run: the setting itself, or for ``auto`` the CPUs this
    process may use (its affinity, and a container's CPU quota), at most ``AUTO_MAX``."""
    if setting != "auto":
        return setting
    return max(1, min(usable_cpus(cgroup_cpu_max), AUTO_MAX))


def usable_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on, lowered to a cgroup v2 CPU quota when there is one
    (``docker run --cpus 2`` on a 16-core host: 2, where ``os.cpu_count()`` says 16)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_quota(cgroup_cpu_max)
    if quota is not None:
        return max(1, min(cpus or 1, quota))
    return cpus or 1


def cgroup_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """The CPU quota of a cgroup v2 ``cpu.max`` file ("200000 100000": 2) rounded up;
    None without a file or a quota ("max 100000")."""
    try:
        quota, _, period = path.read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return math.ceil(int(quota) / int(period))
