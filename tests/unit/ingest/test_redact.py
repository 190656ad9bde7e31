"""Redaction before storage: contact modes, context paths, raw bytes, idempotence."""

from __future__ import annotations

import json

import pytest

from sink.cli import check_serve_settings
from sink.config import Settings
from sink.errors import ConfigError
from sink.ingest import redact
from sink.ingest.cloudevents import parse_structured
from sink.ingest.redact import Policy, contact_key, mask, text_forms
from sink.ingest.studio_facts import ExecutionFacts
from tests.support.studio import STARTED, execution_event, recent, sid

PHONE = "+15551230123"
KEY = b"k" * 32
HASH = Policy(mode="hash", key=KEY)
MASK = Policy(mode="mask")


def test_mask_keeps_the_channel_prefix_and_the_last_four() -> None:
    assert mask(PHONE) == "+*******0123"
    assert mask("whatsapp:" + PHONE) == "whatsapp:+*******0123"
    assert mask("123") == "***"


def test_hash_is_an_hmac_with_the_key_not_a_bare_hash() -> None:
    hashed = HASH.contact(PHONE)
    assert hashed == contact_key(PHONE, KEY)
    assert hashed is not None and hashed.startswith("h:") and len(hashed) == 66
    assert Policy(mode="hash", key=b"other").contact(PHONE) != hashed


@pytest.mark.parametrize("policy", [HASH, MASK], ids=["hash", "mask"])
def test_redaction_is_idempotent(policy: Policy) -> None:
    once = policy.contact(PHONE)
    assert once != PHONE
    assert policy.contact(once) == once
    context = {"trigger": {"message": {"From": PHONE, "Body": "hi"}}}
    assert policy.context(policy.context(context)) == policy.context(context)


def test_keep_stores_the_address_as_received() -> None:
    assert redact.KEEP.contact(PHONE) == PHONE


def test_context_paths_replace_values_and_keep_the_structure() -> None:
    policy = Policy(context_paths=(("widgets", "*", "inbound", "Body"), ("flow", "data", "ssn")))
    context = {
        "widgets": {"ask": {"inbound": {"Body": "my ssn is 123", "From": PHONE}}, "x": 1},
        "flow": {"data": {"ssn": "123-45-6789", "plan": "gold"}},
    }
    assert policy.context(context) == {
        "widgets": {"ask": {"inbound": {"Body": "[redacted]", "From": PHONE}}, "x": 1},
        "flow": {"data": {"ssn": "[redacted]", "plan": "gold"}},
    }


def test_addresses_inside_contexts_follow_the_contact_mode() -> None:
    context = {
        "trigger": {"message": {"From": "whatsapp:" + PHONE, "Body": f"call {PHONE} or +1 555"}},
        "widgets": {"http": {"body": "to=%2B15551230123&x=1"}},
    }
    assert MASK.context(context) == {
        "trigger": {
            "message": {"From": "whatsapp:+*******0123", "Body": "call +*******0123 or +1 555"}
        },
        "widgets": {"http": {"body": "to=+*******0123&x=1"}},
    }


def test_a_delivery_is_redacted_in_facts_raw_data_and_rejected_elements() -> None:
    flow, execution = sid("FW"), sid("FN")
    good = execution_event(STARTED, execution, flow, at=recent(), contact=PHONE)
    bad = dict(good, id=None)
    delivery = HASH.delivery(parse_structured(json.dumps([good, bad]).encode()))
    [event] = delivery.events
    assert isinstance(event.studio, ExecutionFacts)
    assert event.studio.contact_channel_address == contact_key(PHONE, KEY)
    assert event.data_json is not None and PHONE not in event.data_json
    assert json.loads(event.data_json)["contact_channel_address"] == contact_key(PHONE, KEY)
    [rejected] = delivery.rejected
    assert PHONE.encode() not in rejected.raw and b"contact_channel_address" in rejected.raw


def test_raw_bytes_that_are_not_json_are_scrubbed_of_phone_numbers() -> None:
    raw = b'{"broken": "+15551230123", data=%2B15551230123'
    scrubbed = MASK.raw(raw)
    assert all(form.encode() not in scrubbed for form in text_forms(PHONE))
    assert b"+*******0123" in scrubbed


def test_text_forms_cover_plain_digits_url_encoded_and_json_escaped() -> None:
    assert set(text_forms(PHONE)) == {PHONE, "15551230123", "%2B15551230123", "\\u002b15551230123"}


def test_hash_mode_without_a_key_refuses_to_serve_naming_the_variable() -> None:
    settings = Settings(contact_mode="hash", twilio_auth_token="t")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="SINK_PII_KEY"):
        check_serve_settings(settings)


def test_the_key_is_never_in_a_repr() -> None:
    settings = Settings(contact_mode="hash", pii_key="s3cret-key-value")  # type: ignore[arg-type]
    policy = redact.policy(settings)
    assert "s3cret" not in repr(policy) and "s3cret" not in repr(settings)


def test_context_paths_setting_is_comma_separated() -> None:
    settings = Settings(redact_context_paths="widgets.*.SpeechResult, trigger.message.Body")  # type: ignore[arg-type]
    assert redact.policy(settings).context_paths == (
        ("widgets", "*", "SpeechResult"),
        ("trigger", "message", "Body"),
    )
