"""Review defect 5: Studio integer fields in events are strict, REST rows stay lenient."""

from __future__ import annotations

from typing import Any

import pytest

from sink.ingest.cloudevents import parse_structured
from sink.ingest.studio_facts import ExecutionFacts, StudioDataError, studio_facts
from sink.jsontext import dumps
from sink.twilio import EXECUTION_STARTED, is_integer, optional_int

EXECUTION, FLOW = "FN" + "a" * 32, "FW" + "b" * 32


def facts(revision: Any) -> ExecutionFacts:
    data = {"execution_sid": EXECUTION, "flow_sid": FLOW, "flow_revision": revision}
    result = studio_facts(EXECUTION_STARTED, data)
    assert isinstance(result, ExecutionFacts)
    return result


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("²", "'²'"),
        ("٣", "'٣'"),  # an Arabic-Indic digit: isdigit() is true, int() would take it
        ("-3", "'-3'"),
        ("3.0", "'3.0'"),
        ("", "''"),
        (3.5, "3.5"),
        (3.0, "3.0"),
        (True, "True"),
        ({"n": 3}, "{'n': 3}"),
        ([3], "[3]"),
        ("x" * 100, "'" + "x" * 36 + "..."),
    ],
)
def test_flow_revision_of_another_kind_is_refused_naming_the_field(value: Any, shown: str) -> None:
    with pytest.raises(StudioDataError) as caught:
        facts(value)
    assert str(caught.value).startswith(
        f"Studio event data 'flow_revision' is not an integer: {shown}"
    )
    assert len(str(caught.value)) < 160  # bounded, however long the value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (7, 7),
        ("7", 7),
        (" 7\n", 7),
        ("0" * 20 + "7", 7),
        ("2147483647", 2**31 - 1),
        (-1, -1),
        (2**31 - 1, 2**31 - 1),
        (2**31, None),  # an integer, beyond Postgres integer: kept only in the raw event
        ("2147483648", None),
        ("9" * 5000, None),  # over Python's int() digit limit: no ValueError
    ],
)
def test_flow_revision_integers_null_and_digit_strings_are_accepted(
    value: Any, expected: int | None
) -> None:
    assert facts(value).flow_revision == expected


def test_absent_flow_revision_is_accepted() -> None:
    result = studio_facts(EXECUTION_STARTED, {"execution_sid": EXECUTION, "flow_sid": FLOW})
    assert isinstance(result, ExecutionFacts) and result.flow_revision is None


@pytest.mark.parametrize("value", ["²", "-3", 3.5, True, {"n": 3}, "", "9" * 5000])
def test_rest_reader_stays_lenient(value: Any) -> None:
    """Backfill maps REST rows with optional_int: anything but an integer is None."""
    assert optional_int({"flow_version": value}, "flow_version") is None


def test_one_digit_rule_for_both_readers() -> None:
    for value in ("7", " 7 ", 7, -7, 0):
        assert is_integer(value)
    for value in ("²", "-7", "7.0", "", " ", True, False, 7.0, None, [7]):
        assert not is_integer(value)


def test_a_bad_revision_rejects_that_element_and_keeps_the_rest() -> None:
    def started(event_id: str, revision: Any) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": f"/v2/Flows/{FLOW}/Executions/{EXECUTION}",
            "type": EXECUTION_STARTED,
            "data": {"execution_sid": EXECUTION, "flow_sid": FLOW, "flow_revision": revision},
        }

    delivery = parse_structured(dumps([started("EZ1", "²"), started("EZ2", 4)]).encode())
    assert not delivery.fatal
    assert [e.event_id for e in delivery.events] == ["EZ2"]
    [rejection] = delivery.rejected
    assert (rejection.reason, rejection.event_id) == ("invalid_studio_data", "EZ1")
    assert "'flow_revision' is not an integer: '²'" in rejection.detail
