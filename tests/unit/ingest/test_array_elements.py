"""Review defect 6: one element with a lone UTF-16 surrogate does not cost the batch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sink import jsontext
from sink.ingest.cloudevents import parse_structured

GOOD = b'{"specversion":"1.0","id":"EZ%d","source":"/s","type":"com.example.t","data":{"n":%d}}'
LONE = b'{"specversion":"1.0","id":"EZbad","source":"/s","type":"com.example.t","data":"\\ud800"}'


def good(n: int) -> bytes:
    return GOOD % (n, n)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b" [ ]\n",
        b"[1]",
        b'[1, "two" ,{"three":[3]}, null, 12345678901234567890123]',
        b'\r\n\t[ {"a": "\\ud800"} , "\\udc00x", "\\ud83d\\ude00" ]  ',
    ],
)
def test_array_elements_match_the_standard_library(body: bytes) -> None:
    pairs = jsontext.array_elements(body)
    assert [value for value, _ in pairs] == json.loads(body)
    assert [json.loads(raw) for _, raw in pairs] == json.loads(body)
    for _, raw in pairs:
        assert raw in body  # each element's own bytes, as they came


@pytest.mark.parametrize(
    "body",
    [b"", b"{}", b'"x"', b"[", b"[1", b"[1,]", b"[,1]", b"[1 2]", b"[1]x", b"[1]]", b"[NaN]",
     b"[1e400]", b'["\xc3"]', b"[" * 5000 + b"]" * 5000],
)  # fmt: skip
def test_array_elements_refuse_what_is_not_a_json_array(body: bytes) -> None:
    with pytest.raises(jsontext.JsonError):
        jsontext.array_elements(body)


def test_a_lone_surrogate_rejects_that_element_and_keeps_the_rest() -> None:
    body = b"[" + b",\n ".join([good(1), LONE, good(2)]) + b"]"
    with pytest.raises(jsontext.JsonError):
        jsontext.loads(body)  # orjson refuses the whole body
    delivery = parse_structured(body)
    assert not delivery.fatal
    assert [e.event_id for e in delivery.events] == ["EZ1", "EZ2"]
    [rejection] = delivery.rejected
    assert rejection.reason == "unstorable_value"
    assert rejection.detail == (
        "the event contains a lone UTF-16 surrogate, which is not valid Unicode"
    )
    assert rejection.raw == LONE
    assert (rejection.event_id, rejection.source, rejection.event_type) == (
        "EZbad",
        "/s",
        "com.example.t",
    )


def test_attributes_postgres_cannot_hold_are_left_out_of_the_rejection() -> None:
    lone_id = LONE.replace(b'"EZbad"', b'"EZ\\udfff"')
    delivery = parse_structured(b"[" + good(1) + b"," + lone_id + b"]")
    [rejection] = delivery.rejected
    assert rejection.event_id is None and rejection.source == "/s"
    assert rejection.raw == lone_id


@pytest.mark.parametrize("elements", [[LONE], [LONE, LONE]])
def test_only_bad_elements_is_fatal_with_each_kept(elements: list[bytes]) -> None:
    delivery = parse_structured(b"[" + b",".join(elements) + b"]")
    assert delivery.fatal and delivery.events == []
    assert [r.reason for r in delivery.rejected] == ["unstorable_value"] * len(elements)


@pytest.mark.parametrize(
    "body",
    [b"[" + good(1) + b"," + LONE + b",", b"[" + good(1) + b"] trailing", b"\xff[]"],
)
def test_a_body_that_is_not_json_stays_one_fatal_rejection(body: bytes) -> None:
    delivery = parse_structured(body)
    assert delivery.fatal and delivery.events == []
    [rejection] = delivery.rejected
    assert (rejection.reason, rejection.raw) == ("not_json", body)
    assert rejection.detail.startswith("the body is not valid JSON: ")


def test_the_fallback_parses_exactly_as_the_fast_path() -> None:
    """Valid elements found by the fallback are the events orjson's parse would give."""
    elements: list[Any] = [good(n) for n in range(5)]
    fast = parse_structured(b"[" + b",".join(elements) + b"]")
    slow = parse_structured(b"[" + b",".join([*elements, LONE]) + b"]")
    assert slow.events == fast.events
