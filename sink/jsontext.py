"""JSON in and out, fast (orjson) and exact where orjson is not (big integers).

Pure: no I/O. Postgres ``jsonb`` refuses NUL characters and non-finite numbers, so the
helpers here also tell whether a value can be stored at all.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Final

import orjson

# A regex search for 19 digits costs ~400 us on a 36 KB delivery (it was 70% of parsing);
# mapping every digit to "0" and looking for 19 zeros gives the same answer in ~30 us.
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_ZEROS: Final = b"0" * 19


def _has_long_integer(data: bytes) -> bool:
    """Whether ``data`` has 19 ASCII digits in a row (an integer orjson cannot keep exact)."""
    return _NINETEEN_ZEROS in data.translate(_DIGITS_TO_ZERO)


_MAX_DEPTH: Final = 1024


class JsonError(ValueError):
    """The bytes are not JSON we can keep; the message says why."""


def _exact_number(text: str) -> Any:
    value = Decimal(text)
    if not value.is_finite():
        raise JsonError(f"number {text[:40]} is out of range")
    as_float = float(value)
    if math.isinf(as_float):
        raise JsonError(f"number {text[:40]}... is too large to store")
    return as_float


def loads(raw: bytes | str) -> Any:
    """Parse JSON. Integers beyond 64 bits stay exact; NaN/Infinity are refused."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if not _has_long_integer(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if "infinity" not in str(exc):
                raise JsonError(str(exc)) from None
    with _standard_library_errors():
        value = json.loads(_text(data), parse_float=_exact_number, parse_constant=_refuse_constant)
    return value


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonError(f"not valid UTF-8 at byte {exc.start}") from None


@contextlib.contextmanager
def _standard_library_errors() -> Iterator[None]:
    """The standard library parser's errors as JsonError."""
    try:
        yield
    except RecursionError:
        raise JsonError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers over Python's digit limit
        raise JsonError(str(exc)) from None


_SPACE: Final = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def array_elements(raw: bytes) -> list[tuple[Any, bytes]]:
    """The elements of a top-level JSON array, each parsed on its own, with its own bytes.

    For a body ``loads`` refused: the standard library's parser keeps a lone UTF-16
    surrogate escape (``"\\ud800"``) as a string, for ``storable_problem`` to name, where
    orjson refuses the whole body. Raises JsonError when the body is not a JSON array of
    JSON values (a syntax error anywhere, NaN, a number out of range).
    """
    text = _text(raw)
    at = _skip_space(text, 0)
    if text[at : at + 1] != "[":
        raise JsonError("the body is not a JSON array")
    decoder = json.JSONDecoder(parse_float=_exact_number, parse_constant=_refuse_constant)
    elements: list[tuple[Any, bytes]] = []
    at = _skip_space(text, at + 1)
    while text[at : at + 1] != "]":
        if elements:
            if text[at : at + 1] != ",":
                raise JsonError(f"expected ',' or ']' at character {at}")
            at = _skip_space(text, at + 1)
        with _standard_library_errors():
            value, end = decoder.raw_decode(text, at)
        elements.append((value, text[at:end].encode("utf-8")))
        at = _skip_space(text, end)
    if _skip_space(text, at + 1) != len(text):
        raise JsonError(f"extra data after the array at character {at + 1}")
    return elements


def needs_storable_check(raw: bytes) -> bool:
    """Whether a parsed body may hold values Postgres refuses (checked per element then)."""
    return b"\\u0000" in raw or _has_long_integer(raw)


def _refuse_constant(name: str) -> Any:
    raise JsonError(f"{name} is not valid JSON")


def dumps(value: Any) -> str:
    """Serialize for a ``jsonb`` parameter."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        # integers beyond 64 bits, or nesting deeper than orjson writes: the standard
        # library writes them exactly, as deep as Python's recursion limit allows
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except RecursionError:
            raise JsonError("is nested too deeply to store") from None


def storable_problem(value: Any) -> str | None:
    """Why Postgres could not store this value in ``jsonb``/``text``, or None.

    Iterative, so a deeply nested value gets an answer instead of a RecursionError.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return "JSON nested too deeply"
        if isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                return problem
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _string_problem(key)
                if problem:
                    return problem
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number is out of range"
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which Postgres cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate, which is not valid Unicode"
    return None


# -- made storable: text from elsewhere that must be kept (backfilled contexts) ------------

REPLACEMENT_CHARACTER: Final = "\ufffd"
_UNSTORABLE: Final = dict.fromkeys([0, *range(0xD800, 0xE000)], REPLACEMENT_CHARACTER)


def storable(value: Any) -> Any:
    """``value`` with every character Postgres cannot store replaced: each U+0000 (NUL) and
    each lone UTF-16 surrogate becomes U+FFFD, the replacement character, in keys and values.

    Replaced rather than dropped: the stored text keeps a visible mark where a character was
    lost, and its length, as a UTF-8 decoder does with bytes it cannot read. ``value`` itself
    is returned when nothing needs replacing, copies of the containers otherwise (``value`` is
    never changed). Iterative: depth costs no recursion. Two keys of one object that differ
    only in such characters become one key, the later one's value winning.
    """
    if storable_problem(value) is None:
        return value
    root = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, slot, item = stack.pop()
        if isinstance(item, str):
            parent[slot] = _replace_unstorable(item)
        elif isinstance(item, dict):
            copy = {_replace_unstorable(k) if isinstance(k, str) else k: v for k, v in item.items()}
            parent[slot] = copy
            stack.extend((copy, key, child) for key, child in copy.items())
        elif isinstance(item, list):
            parent[slot] = items = list(item)
            stack.extend((items, n, child) for n, child in enumerate(items))
    return root[0]


def _replace_unstorable(text: str) -> str:
    return text.translate(_UNSTORABLE) if _string_problem(text) else text


def loads_lenient(raw: bytes) -> Any:
    """``loads`` for JSON from elsewhere that is kept whatever its strings hold (the Studio
    REST API's contexts): a lone UTF-16 surrogate escape (``"\\ud800"``), which orjson
    refuses, stays in its string, for ``storable`` to replace, instead of refusing the whole
    text. Raises JsonError for what is not JSON at all."""
    try:
        return loads(raw)
    except JsonError as exc:
        refused = exc
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_float=_exact_number, parse_constant=_refuse_constant)
    except (RecursionError, ValueError):  # UnicodeDecodeError and JsonError are ValueErrors
        raise refused from None
