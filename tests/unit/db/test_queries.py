"""The named queries: every statement the code runs is in sql/queries/, named once, used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sink.db.queries import all_queries, parse_query_file, query
from sink.errors import ConfigError

SINK = Path(__file__).resolve().parents[3] / "sink"
LITERAL = re.compile(r'query\(\s*"([a-z0-9_]+)"\s*\)')
DYNAMIC = re.compile(r'query\(\s*f"([a-z0-9_]+)\{')


def used_names() -> tuple[set[str], set[str]]:
    literal: set[str] = set()
    prefixes: set[str] = set()
    for path in SINK.rglob("*.py"):
        text = path.read_text("utf-8")
        literal.update(LITERAL.findall(text))
        prefixes.update(DYNAMIC.findall(text))
    return literal, prefixes


def test_every_query_the_code_names_exists() -> None:
    literal, prefixes = used_names()
    known = all_queries()
    assert literal, "no query(...) call found: the scan is broken"
    assert sorted(literal - known.keys()) == []
    for prefix in prefixes:
        assert any(name.startswith(prefix) for name in known), prefix


def test_every_named_query_is_used() -> None:
    literal, prefixes = used_names()
    unused = [
        name
        for name in all_queries()
        if name not in literal and not any(name.startswith(p) for p in prefixes)
    ]
    assert unused == []


def test_a_query_is_its_text_without_the_comment_or_the_final_semicolon() -> None:
    parsed = parse_query_file(
        "x.sql", "-- name: one\n-- The first.\nSELECT 1;\n\n-- name: two\n-- Two.\nSELECT 2\n"
    )
    assert parsed == {"one": "SELECT 1", "two": "SELECT 2"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("SELECT 1;\n", "needs a '-- name:' header"),
        ("-- name: one\nSELECT 1;\n", "lacks its one-line comment"),
        ("-- name: one\n-- Only a comment.\n", "is empty"),
        ("-- name: one\n-- A.\nSELECT 1;\n-- name: one\n-- B.\nSELECT 2;\n", "defined twice"),
    ],
)
def test_a_malformed_file_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_query_file("x.sql", text)


def test_an_unknown_name_says_so() -> None:
    with pytest.raises(KeyError, match="no query named 'nope'"):
        query("nope")
