"""/metrics moves with deliveries; logs carry request ids and never a secret."""

from __future__ import annotations

import json
import logging
import re

import pytest

from sink import logs
from tests.conftest import Sink
from tests.support.studio import execution_story
from tests.support.twilio import OTHER_TOKEN, TOKEN


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_deliveries_events_and_failures(sink: Sink) -> None:
    story = execution_story(2)
    await sink.post(story)
    await sink.post(story)
    await sink.post(story, token=OTHER_TOKEN)
    response = await sink.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert sample(text, "sink_deliveries_total", status="200") == 2
    assert sample(text, "sink_deliveries_total", status="401") == 1
    # a token set without an Account SID names no account: the bounded "other"
    assert sample(text, "sink_deliveries_total", status="200", account="other") == 2
    assert (
        sample(
            text, "sink_events_total", type="com.twilio.studio.flow.step.ended", outcome="stored"
        )
        == 2
    )
    assert (
        sample(
            text, "sink_events_total", type="com.twilio.studio.flow.step.ended", outcome="duplicate"
        )
        == 2
    )
    assert sample(text, "sink_signature_failures_total", reason="bad_signature") == 1
    assert sample(text, "sink_batch_size_count") >= 2
    assert sample(text, "sink_commit_seconds_count") >= 2
    assert sample(text, "sink_delivery_seconds_count") == 3
    assert "sink_db_pool_in_use" in text
    assert TOKEN not in text


async def test_json_logs_have_request_ids_and_no_secrets(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    formatter = logs.JsonFormatter()
    with caplog.at_level(logging.INFO):
        await sink.post(execution_story(1), token=OTHER_TOKEN)
        await sink.post(b"not json")
    records = [r for r in caplog.records if r.name.startswith("sink")]
    assert records
    lines = [json.loads(formatter.format(r)) for r in records]
    refused = [line for line in lines if "refused" in line["msg"]]
    assert refused and refused[0]["reason"] == "bad_signature"
    for line in lines:
        dumped = json.dumps(line)
        assert TOKEN not in dumped and OTHER_TOKEN not in dumped


def test_settings_repr_hides_secrets() -> None:
    from sink.config import Settings

    settings = Settings(
        twilio_auth_token=f"{TOKEN},{OTHER_TOKEN}",
        database_url="postgresql://u:dbsecret@h/db",
        admin_token="admintoken",
    )
    shown = repr(settings) + str(settings)
    for secret in (TOKEN, OTHER_TOKEN, "dbsecret", "admintoken"):
        assert secret not in shown
    assert len(settings.auth_tokens()) == 2
