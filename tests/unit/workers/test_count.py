"""SINK_WORKERS: a number as given; ``auto`` from the CPUs this process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sink.config import Settings
from sink.workers.count import AUTO_MAX, cgroup_quota, usable_cpus, worker_count


def cpu_max(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "quota"),
    [("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)],
)
def test_a_cgroup_quota_rounds_up_and_max_is_none(tmp_path: Path, text: str, quota: int) -> None:
    assert cgroup_quota(cpu_max(tmp_path, text)) == quota


def test_no_cgroup_file_is_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path / "absent") is None


def test_auto_is_capped_by_the_quota(tmp_path: Path) -> None:
    one_cpu = cpu_max(tmp_path, "100000 100000")
    assert usable_cpus(one_cpu) == 1
    assert worker_count("auto", one_cpu) == 1


def test_auto_without_quota_is_the_affinity_at_most_auto_max(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert worker_count("auto", tmp_path / "absent") == min(cpus, AUTO_MAX)
    assert worker_count("auto", cpu_max(tmp_path, "6400000 100000")) == min(cpus, AUTO_MAX)


def test_a_number_is_taken_as_given() -> None:
    assert worker_count(3) == 3


@pytest.mark.parametrize(
    ("given", "parsed"), [("2", 2), (" auto ", "auto"), ("AUTO", "auto"), ("", 1)]
)
def test_the_setting_takes_a_number_or_auto(given: str, parsed: int | str) -> None:
    assert Settings(workers=given).workers == parsed
    assert Settings().workers == 1


@pytest.mark.parametrize("given", ["0", "-1", "two", "2.5"])
def test_the_setting_refuses_anything_else_with_the_fix(given: str) -> None:
    with pytest.raises(ValueError, match=r"a number of processes \(1 or more\) or 'auto'"):
        Settings(workers=given)
