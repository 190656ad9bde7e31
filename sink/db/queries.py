"""The SQL files shipped with studio-sink, and the named queries in ``sql/queries/``.

``sql/`` is packaged as ``sink.sql``; from a source tree that is not installed, the
``sql/`` beside ``sink/`` is read instead. A query file holds named statements, each
introduced by a header and a one-line description::

    -- name: claim_item
    -- The next claimable item, leased to a worker.
    WITH next AS (...)

``query("claim_item")`` returns the statement's text. Names are unique across every file
of ``sql/queries/``: one name, one statement.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Final

from sink.errors import ConfigError

_HEADER: Final = re.compile(r"^-- name: ([a-z][a-z0-9_]*)[ \t]*$", re.M)


def sql_files(folder: str) -> list[tuple[str, str]]:
    """``(file name, text)`` of every ``.sql`` file in ``sql/<folder>/``."""
    try:
        package = resources.files("sink.sql") / folder
    except ModuleNotFoundError:
        source = Path(__file__).resolve().parents[2] / "sql" / folder
        return sorted((p.name, p.read_text("utf-8")) for p in source.glob("*.sql"))
    return sorted(
        (entry.name, entry.read_text("utf-8"))
        for entry in package.iterdir()
        if entry.name.endswith(".sql")
    )


def parse_query_file(filename: str, text: str) -> dict[str, str]:
    """The named statements of one file; every statement must have a name and a comment."""
    found: dict[str, str] = {}
    heads = list(_HEADER.finditer(text))
    if not heads or text[: heads[0].start()].strip():
        raise ConfigError(f"sql/queries/{filename}: every statement needs a '-- name:' header")
    for n, head in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(text)
        body = text[head.end() : end].strip()
        name = head.group(1)
        if not body.startswith("-- "):
            raise ConfigError(f"sql/queries/{filename}: query {name} lacks its one-line comment")
        statement = "\n".join(
            line for line in body.splitlines() if not line.startswith("-- ")
        ).strip()
        statement = statement.removesuffix(";").rstrip()
        if not statement:
            raise ConfigError(f"sql/queries/{filename}: query {name} is empty")
        if name in found:
            raise ConfigError(f"sql/queries/{filename}: query {name} is defined twice")
        found[name] = statement
    return found


@functools.cache
def all_queries() -> dict[str, str]:
    """Every named query of ``sql/queries/``, by name."""
    merged: dict[str, str] = {}
    for filename, text in sql_files("queries"):
        for name, statement in parse_query_file(filename, text).items():
            if name in merged:
                raise ConfigError(f"query {name} is defined in two files of sql/queries/")
            merged[name] = statement
    return merged


def query(name: str) -> str:
    """The text of the named query; KeyError names the query when it does not exist."""
    try:
        return all_queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries/") from None
