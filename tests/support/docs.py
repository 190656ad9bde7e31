"""Reading the project's Markdown docs in tests: fenced SQL blocks and column tables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

TSTZ: Final = "timestamp with time zone"
_FENCE: Final = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
_ROW: Final = re.compile(r"\| (\w+) \| ([\w\[\] ]+?) \| .* \|")


def code_blocks(doc: Path, info: str) -> list[str]:
    """The fenced code blocks of ``doc`` whose info string is exactly ``info``."""
    return [body for tag, body in _FENCE.findall(doc.read_text("utf-8")) if tag == info]


def column_tables(doc: Path, heading: str) -> dict[str, list[tuple[str, str]]]:
    """The ``| column | type | … |`` tables under each ``<heading> studio.name`` heading,
    as (column, Postgres type name) pairs; ``timestamptz`` is spelled out as Postgres does."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    title = re.compile(rf"{re.escape(heading)} studio\.(\w+)")
    for line in doc.read_text("utf-8").splitlines():
        match = title.fullmatch(line)
        if match:
            current = match.group(1)
            continue
        row = _ROW.fullmatch(line)
        if current and row and row.group(1) != "column":
            kind = TSTZ if row.group(2) == "timestamptz" else row.group(2)
            found.setdefault(current, []).append((row.group(1), kind))
    return found
