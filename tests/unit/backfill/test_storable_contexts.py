"""What a backfilled context becomes before it is stored (``sink.jsontext.storable``) and how
a REST body holding a lone surrogate is read (``sink.jsontext.loads_lenient``)."""

from __future__ import annotations

import copy
import json

import pytest

from sink import jsontext

FFFD = "\ufffd"


def test_nuls_and_lone_surrogates_become_the_replacement_character() -> None:
    context = {
        "trigger": {"message": {"Body": "stop\x00now", "From": "+1415555\x000100"}},
        "widgets": [{"lone high": "a\ud83d", "lone low": "\ude00b"}, "\x00"],
        "key\x00": 1,
        "kept": ["\U0001f600", "é", 3, 2.5, None, True],
    }
    before = copy.deepcopy(context)

    stored = jsontext.storable(context)

    assert stored == {
        "trigger": {"message": {"Body": f"stop{FFFD}now", "From": f"+1415555{FFFD}0100"}},
        "widgets": [{"lone high": f"a{FFFD}", "lone low": f"{FFFD}b"}, FFFD],
        f"key{FFFD}": 1,
        "kept": ["\U0001f600", "é", 3, 2.5, None, True],
    }
    assert context == before  # the caller's value is not changed
    assert jsontext.storable_problem(stored) is None
    jsontext.dumps(stored).encode("utf-8")  # orjson writes it: valid UTF-8, no \u0000


def test_a_storable_value_is_returned_as_it_is() -> None:
    context = {"widgets": {"send": {"body": "hello \U0001f600"}}}
    assert jsontext.storable(context) is context
    assert jsontext.storable("\x00") == FFFD and jsontext.storable(7) == 7


def test_deep_nesting_costs_no_recursion() -> None:
    deep: list[object] = ["\x00"]
    for _ in range(5000):
        deep = [deep]
    stored = jsontext.storable(deep)
    for _ in range(5000):
        stored = stored[0]
    assert stored == [FFFD]


def test_keys_that_become_equal_keep_the_later_value() -> None:
    assert jsontext.storable({"a\x00": 1, f"a{FFFD}": 2}) == {f"a{FFFD}": 2}


def test_a_body_with_a_lone_surrogate_escape_is_read() -> None:
    body = json.dumps({"context": {"Body": "half \ud83d", "n": 12345678901234567890123}})
    read = jsontext.loads_lenient(body.encode())
    assert read == {"context": {"Body": "half \ud83d", "n": 12345678901234567890123}}
    assert jsontext.storable(read)["context"]["Body"] == f"half {FFFD}"


@pytest.mark.parametrize("body", [b"{", b"NaN", b"\xff{}", b'{"a": 1} x'])
def test_what_is_not_json_is_still_refused(body: bytes) -> None:
    with pytest.raises(jsontext.JsonError):
        jsontext.loads_lenient(body)
