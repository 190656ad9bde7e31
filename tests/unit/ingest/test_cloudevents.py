"""Pure tests of CloudEvents parsing (sink/events.py), JSON text and Studio facts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sink import jsontext
from sink.ingest.cloudevents import (
    REQUIRED,
    is_binary_mode,
    parse_binary,
    parse_delivery,
    parse_structured,
)
from sink.ingest.studio_facts import (
    ExecutionFacts,
    StepFacts,
    StudioDataError,
    studio_facts,
)
from sink.twilio import is_sid
from tests.support.studio import ENDED, STARTED, STEP, execution_story, sink_test_event


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_a_story_parses_with_its_studio_facts() -> None:
    story = execution_story(2)
    delivery = parse_structured(dumps(story))
    assert not delivery.rejected and not delivery.fatal
    started, step, _, ended = delivery.events
    assert isinstance(started.studio, ExecutionFacts) and started.studio.status == "active"
    assert isinstance(ended.studio, ExecutionFacts) and ended.studio.status == "ended"
    assert ended.studio.ended_reason == "FLOW_END"
    assert isinstance(step.studio, StepFacts)
    assert step.studio.execution_sid == started.studio.execution_sid
    assert started.event_id == story[0]["id"] and started.source == story[0]["source"]
    assert started.time is not None and started.time.tzinfo is not None
    assert json.loads(started.data_json or "") == story[0]["data"]


def test_single_object_and_test_event() -> None:
    delivery = parse_structured(dumps(sink_test_event()))
    [event] = delivery.events
    assert event.studio is None and event.event_id.startswith("AC")


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_required_attribute_is_rejected_never_invented(name: str) -> None:
    good, bad = execution_story(0)
    del bad[name]
    delivery = parse_structured(dumps([good, bad]))
    assert [e.event_id for e in delivery.events] == [good["id"]]
    [rejection] = delivery.rejected
    assert rejection.reason == "missing_attribute"
    assert f"'{name}'" in rejection.detail
    assert rejection.event_id == bad.get("id")  # None when it is the id that is missing
    assert json.loads(rejection.raw) == bad
    assert not delivery.fatal


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        ("id", 12, "invalid_attribute"),
        ("id", "", "invalid_attribute"),
        ("source", ["x"], "invalid_attribute"),
        ("type", {"a": 1}, "invalid_attribute"),
        ("specversion", "0.3", "unsupported_specversion"),
        ("specversion", 1.0, "invalid_attribute"),
        ("time", "yesterday", "invalid_attribute"),
        ("time", "2026-11-20T14:00:00", "invalid_attribute"),
        ("time", 1700000000, "invalid_attribute"),
        ("dataschema", 3, "invalid_attribute"),
        ("datacontenttype", False, "invalid_attribute"),
        ("subject", [], "invalid_attribute"),
    ],
)
def test_wrong_attribute_types(attribute: str, value: Any, reason: str) -> None:
    event = execution_story(0)[0]
    event[attribute] = value
    delivery = parse_structured(dumps([event]))
    assert [r.reason for r in delivery.rejected] == [reason]
    assert delivery.fatal  # nothing valid in the body


def test_null_attribute_counts_as_missing() -> None:
    event = execution_story(0)[0]
    event["id"] = None
    [rejection] = parse_structured(dumps([event])).rejected
    assert rejection.reason == "missing_attribute" and rejection.event_id is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not_json"),
        (b"", "not_json"),
        (b"\xff\xfe[]", "not_json"),
        (b'"a string"', "not_cloudevents"),
        (b"42", "not_cloudevents"),
        (b"null", "not_cloudevents"),
        (b"[1, 2]", "not_an_object"),
        (b"[NaN]", "not_json"),
        (b"[" * 5000 + b"]" * 5000, "not_json"),
        (b"[" * 5000 + b"12345678901234567890" + b"]" * 5000, "not_json"),
    ],
)
def test_unusable_bodies_are_fatal_and_kept(body: bytes, reason: str) -> None:
    delivery = parse_structured(body)
    assert delivery.fatal and not delivery.events
    assert reason in {r.reason for r in delivery.rejected}
    assert all(r.detail for r in delivery.rejected)


def test_empty_array_is_not_fatal() -> None:
    delivery = parse_structured(b"[]")
    assert not delivery.fatal and not delivery.events and not delivery.rejected


def test_nul_in_json_text_is_rejected_with_the_reason() -> None:
    good, bad = execution_story(0)
    bad["data"]["contact_channel_address"] = "a\u0000b"
    body = dumps([good, bad])
    assert b"\\u0000" in body
    delivery = parse_structured(body)
    assert len(delivery.events) == 1
    [rejection] = delivery.rejected
    assert rejection.reason == "unstorable_value" and "NUL" in rejection.detail
    assert rejection.event_id == bad["id"]


def test_nul_in_an_attribute_keeps_it_out_of_the_rejection_columns() -> None:
    event = execution_story(0)[0]
    event["id"] = "EZ\u0000"
    [rejection] = parse_structured(dumps([event])).rejected
    assert rejection.reason == "unstorable_value" and rejection.event_id is None


def test_big_numbers_stay_exact_or_are_refused() -> None:
    event = sink_test_event()
    event["data"] = {"big": 123456789012345678901234567890, "small": 1.5}
    [parsed] = parse_structured(dumps([event])).events
    assert '"big":123456789012345678901234567890' in (parsed.data_json or "")
    huge = b'[{"specversion":"1.0","id":"a","source":"s","type":"t","data":1e999}]'
    assert parse_structured(huge).rejected[0].reason == "not_json"


def test_data_as_json_string_is_decoded_and_plain_strings_kept() -> None:
    events = execution_story(1)
    for event in events:
        event["data"] = json.dumps(event["data"])
    delivery = parse_structured(dumps(events))
    assert len(delivery.events) == 3
    assert all(e.studio is not None for e in delivery.events)
    other = {"specversion": "1.0", "id": "1", "source": "s", "type": "x", "data": "{oops"}
    [event] = parse_structured(dumps([other])).events
    assert event.data_json == '"{oops"'
    text = {**other, "datacontenttype": "text/plain", "data": '{"a":1}'}
    [event] = parse_structured(dumps([text])).events
    assert event.data_json == json.dumps('{"a":1}')


def test_extensions_are_kept() -> None:
    event = {**sink_test_event(), "traceparent": "00-abc", "data_base64": "AAE="}
    [parsed] = parse_structured(dumps([event])).events
    assert json.loads(parsed.extensions_json or "") == {
        "traceparent": "00-abc",
        "data_base64": "AAE=",
    }


def test_studio_event_without_its_sids_is_rejected() -> None:
    story = execution_story(1)
    story[0]["data"]["execution_sid"] = "FNnot-a-sid"
    del story[1]["data"]["step_sid"]
    story[2]["data"] = "plain text"
    delivery = parse_structured(dumps(story))
    assert [r.reason for r in delivery.rejected] == ["invalid_studio_data"] * 3
    assert "execution_sid" in delivery.rejected[0].detail
    assert "step_sid" in delivery.rejected[1].detail


def test_binary_mode() -> None:
    event = execution_story(0)[0]
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event["id"],
        "ce-source": event["source"].replace("/", "%2F"),
        "ce-type": event["type"],
        "Content-Type": "application/json",
    }
    assert is_binary_mode(headers)
    delivery = parse_delivery(headers, dumps(event["data"]))
    [parsed] = delivery.events
    assert parsed.source == event["source"]
    assert isinstance(parsed.studio, ExecutionFacts)
    missing = {k: v for k, v in headers.items() if k != "ce-id"}
    result = parse_binary(missing, dumps(event["data"]))
    assert result.fatal and result.rejected[0].reason == "missing_attribute"
    assert parse_binary(headers, b"{").rejected[0].reason == "not_json"
    text_headers = {**headers, "Content-Type": "application/octet-stream"}
    assert parse_binary(text_headers, b"\xff").rejected[0].reason == "not_utf8"


def test_studio_facts_details() -> None:
    execution, flow = "FN" + "a" * 32, "FW" + "b" * 32
    facts = studio_facts(
        STARTED,
        {
            "execution_sid": execution,
            "flow_sid": flow,
            "account_sid": "nope",
            "status": "ended",
            "flow_revision": "7",
            "contact_channel_address": 15551234,
            "date_created": "2026-11-20T14:00:00",
            "date_updated": "2026-11-20T14:00:00Z",
        },
    )
    assert isinstance(facts, ExecutionFacts)
    assert facts.status == "ended"  # status text wins even on a 'started' event
    assert facts.account_sid is None
    assert facts.flow_revision == 7
    assert facts.contact_channel_address == "15551234"
    assert facts.date_created is None and facts.date_updated is not None
    big = studio_facts(
        ENDED, {"execution_sid": execution, "flow_sid": flow, "flow_revision": 2**40}
    )
    assert isinstance(big, ExecutionFacts) and big.flow_revision is None and big.status == "ended"
    assert studio_facts("com.example.other", "anything") is None
    with pytest.raises(StudioDataError, match="JSON object"):
        studio_facts(STEP, ["x"])
    assert is_sid("FT" + "0" * 32, "FT") and not is_sid("FT" + "0" * 31, "FT")
    assert not is_sid(None, "FT")


def test_jsontext_round_trips_and_refusals() -> None:
    assert jsontext.loads(b'{"a":[1,2.5,"x"]}') == {"a": [1, 2.5, "x"]}
    assert jsontext.loads('{"n":12345678901234567890123}') == {"n": 12345678901234567890123}
    assert jsontext.dumps({"n": 2**70}) == '{"n":1180591620717411303424}'
    for bad in (b"[Infinity]", b"[-Infinity]", b"[NaN]", b"[1e400]", b"{", b"\xc3\x28"):
        with pytest.raises(jsontext.JsonError):
            jsontext.loads(bad)
    assert jsontext.needs_storable_check(b'"\\u0000"')
    assert not jsontext.needs_storable_check(b'"plain"')
    assert jsontext.storable_problem({"k\x00": 1}) is not None
    assert jsontext.storable_problem(["\ud800"]) is not None
    assert jsontext.storable_problem([float("inf")]) is not None
    deep: Any = 1
    for _ in range(1100):
        deep = [deep]
    assert jsontext.storable_problem(deep) == "JSON nested too deeply"
    assert jsontext.storable_problem({"quote": "'\";--", "emoji": "\U0001f600"}) is None


@pytest.mark.parametrize("depth", [300, 900, 1000, 1023, 1100])
@pytest.mark.parametrize("inner", [b"", b'"\\u0000"', b"123456789012345678901234567"])
def test_deep_nesting_is_answered_never_a_recursion_error(depth: int, inner: bytes) -> None:
    head = b'[{"specversion":"1.0","id":"a","source":"s","type":"t","data":'
    body = head + b"[" * depth + inner + b"]" * depth + b"}]"
    delivery = parse_structured(body)
    assert len(delivery.events) + len(delivery.rejected) == 1
    for rejection in delivery.rejected:
        assert rejection.reason in {"unstorable_value", "not_json"}
        assert len(rejection.raw) >= depth  # the element (or the body), never a stub
