"""The parser's account rules (``sink.ingest.signer``): an event must belong to the account
that signed its delivery, and each Twilio test event is its own event, with its account."""

from __future__ import annotations

import json
from typing import Any

from sink.ingest.cloudevents import build_event, parse_binary, parse_delivery
from sink.ingest.signer import ACCOUNT_MISMATCH, dedup_id, with_account
from sink.jsontext import dumps
from tests.support.studio import ACCOUNT, STEP, TEST_EVENT, execution_story, sink_test_event

OTHER = "AC" + "f" * 32
TEST_ID = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


def body(events: list[dict[str, Any]]) -> bytes:
    return dumps(events).encode()


def test_an_event_of_another_account_is_rejected_naming_both_and_the_rest_kept() -> None:
    story = execution_story(2)  # every event names ACCOUNT
    story[2]["data"]["account_sid"] = OTHER
    delivery = parse_delivery({}, body(story), account=ACCOUNT)
    assert [e.event_id for e in delivery.events] == [story[n]["id"] for n in (0, 1, 3)]
    [rejection] = delivery.rejected
    assert rejection.reason == ACCOUNT_MISMATCH
    assert OTHER in rejection.detail and ACCOUNT in rejection.detail
    assert "SINK_ACCOUNTS_FILE" in rejection.detail
    assert (rejection.event_type, rejection.event_id) == (STEP, story[2]["id"])
    assert json.loads(rejection.raw)["data"]["account_sid"] == OTHER
    assert not delivery.fatal


def test_without_a_known_signer_no_account_is_refused() -> None:
    story = execution_story(1)
    story[1]["data"]["account_sid"] = OTHER
    delivery = parse_delivery({}, body(story))
    assert len(delivery.events) == 3 and not delivery.rejected
    assert [e.account_sid for e in delivery.events] == [ACCOUNT, OTHER, ACCOUNT]


def test_data_that_names_no_account_belongs_to_the_signer() -> None:
    event = {"specversion": "1.0", "id": "e1", "source": "/x", "type": "com.example", "data": {}}
    [parsed] = parse_delivery({}, body([event]), account=OTHER).events
    assert parsed.account_sid == OTHER and json.loads(parsed.data_json or "") == {}


def test_a_binary_mode_event_of_another_account_is_rejected() -> None:
    event = execution_story(0)[0]
    headers = {f"ce-{k}": v for k, v in event.items() if k not in ("data", "datacontenttype")}
    delivery = parse_binary(
        {**headers, "Content-Type": "application/json"},
        dumps(event["data"]).encode(),
        account=OTHER,
    )
    assert delivery.fatal and delivery.rejected[0].reason == ACCOUNT_MISMATCH


def test_each_test_event_is_keyed_by_its_test_id_and_carries_its_account() -> None:
    tests = [sink_test_event() | {"data": {"test_id": n}} for n in ("t1", "t2")]
    events = parse_delivery({}, body(tests), account=OTHER).events
    assert [e.event_id for e in events] == [f"{ACCOUNT}/t1", f"{ACCOUNT}/t2"]
    assert [json.loads(e.data_json or "") for e in events] == [
        {"test_id": "t1", "account_sid": OTHER},  # the signer, over what the id says
        {"test_id": "t2", "account_sid": OTHER},
    ]
    [unsigned] = parse_delivery({}, body([tests[0]])).events
    assert json.loads(unsigned.data_json or "")["account_sid"] == ACCOUNT  # the id's account


def test_a_test_event_read_again_keeps_its_id_and_its_data() -> None:
    [stored] = parse_delivery({}, body([sink_test_event()]), account=ACCOUNT).events
    element = {
        **sink_test_event(),
        "id": stored.event_id,
        "data": json.loads(stored.data_json or ""),
    }
    again = build_event(element, check_storable=False)  # as replay rebuilds stored events
    assert again.event_id == stored.event_id == f"{ACCOUNT}/{TEST_ID}"
    assert again.data_json == stored.data_json


def test_only_a_usable_test_id_changes_the_key() -> None:
    assert dedup_id(TEST_EVENT, ACCOUNT, {"test_id": "x"}) == f"{ACCOUNT}/x"
    for data in ({}, {"test_id": ""}, {"test_id": 7}, {"test_id": "x" * 201}, "text", None):
        assert dedup_id(TEST_EVENT, ACCOUNT, data) == ACCOUNT
    assert dedup_id(STEP, "EZ1", {"test_id": "x"}) == "EZ1"


def test_a_test_events_account_is_added_only_when_missing_and_known() -> None:
    assert with_account(TEST_EVENT, {"test_id": "x"}, "not-a-sid", None) == {"test_id": "x"}
    named = {"test_id": "x", "account_sid": OTHER}
    assert with_account(TEST_EVENT, named, ACCOUNT, ACCOUNT) is named
    assert with_account(STEP, {"a": 1}, ACCOUNT, OTHER) == {"a": 1}
