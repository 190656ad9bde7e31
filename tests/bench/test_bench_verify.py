"""``python -m bench.verify`` runs, on a tiny load: each form's check must hold (the bench
asserts that the account that signed is the one found) and every figure is printed. No
speed is asserted."""

from __future__ import annotations

import pytest

from bench import verify


def test_the_verify_bench_checks_both_forms_and_prints_every_figure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert verify.main(["--accounts", "1,3", "--seconds", "0.001", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("== signature check")
    rows = [line.split() for line in out[2:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("1", "path"),
        ("1", "plain"),
        ("3", "path"),
        ("3", "plain"),
    ]
    assert rows[0][3] == "1.00x"
