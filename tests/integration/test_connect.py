"""``studio-sink connect`` against a fake Events v1 API built from Twilio's spec, with the
sink itself running over real HTTP on a real Postgres for the test event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from jsonschema import Draft202012Validator
from pytest_aiohttp import AiohttpServer

from sink import cli
from sink.connect.plan import SinkState, SubscriptionState, make_plan, plan_subscription
from tests.conftest import Sink
from tests.fakes.events_api import SPEC_PATH, EventsAccount, FakeEvents, create_app
from tests.support.twilio import OTHER_TOKEN, TOKEN

URL = "https://sink.example.com/events"
STARTED = "com.twilio.studio.flow.execution.started"
ENDED = "com.twilio.studio.flow.execution.ended"
STEP = "com.twilio.studio.flow.step.ended"
CURRENT = {STARTED: 2, ENDED: 2, STEP: 1}  # the fake's latest schema versions

Run = Callable[..., Any]


@pytest.fixture
def fake() -> FakeEvents:
    return FakeEvents()


@pytest.fixture
def acme(fake: FakeEvents) -> EventsAccount:
    return fake.add_account(TOKEN)


async def run_cli(
    argv: list[str],
    defaults: dict[str, str | None],
    env: dict[str, str | None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    """``studio-sink ARGV`` with SINK_* settings: ``defaults`` overridden by ``env`` (lower
    case names; None unsets). (exit code, stdout, stderr)."""
    settings = {**defaults, **{name.upper(): value for name, value in env.items()}}
    for name, value in settings.items():
        if value is None:
            monkeypatch.delenv(f"SINK_{name}", raising=False)
        else:
            monkeypatch.setenv(f"SINK_{name}", value)
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
async def run_connect(
    fake: FakeEvents,
    aiohttp_server: AiohttpServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """``studio-sink connect ARGS`` with these SINK_* settings: (exit code, stdout, stderr)."""
    server = await aiohttp_server(create_app(fake))
    base = str(server.make_url("")).rstrip("/")

    async def run(*args: str, **env: str | None) -> tuple[int, str, str]:
        settings: dict[str, str | None] = {
            "DATABASE_URL": database_url,
            "EVENTS_BASE_URL": base,
            "LOG_LEVEL": "warning",
        }
        return await run_cli(["connect", *args], settings, env, monkeypatch, capsys)

    return run


def one_account(account: EventsAccount, token: str = TOKEN) -> dict[str, str]:
    return {"twilio_account_sid": account.sid, "twilio_auth_token": token}


def accounts_file(tmp_path: Path, *accounts: tuple[str, EventsAccount, str]) -> dict[str, str]:
    path = tmp_path / "accounts.toml"
    path.write_text(
        "".join(
            f'[accounts.{account.sid}]\nlabel = "{label}"\nauth_tokens = ["{token}"]\n\n'
            for label, account, token in accounts
        )
    )
    return {"accounts_file": str(path), "twilio_auth_token": None, "twilio_account_sid": None}


def subscribed(account: EventsAccount) -> list[dict[str, int]]:
    return [sub["types"] for sub in account.subscriptions.values()]


async def test_creates_the_sink_and_the_subscription_once_then_changes_nothing(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount
) -> None:
    code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
    assert code == 0, out
    (sink,) = acme.sinks.values()
    assert sink["sink_type"] == "webhook" and sink["status"] == "active"
    assert sink["sink_configuration"] == {
        "destination": URL,
        "method": "POST",
        "batch_events": True,
    }
    assert subscribed(acme) == [CURRENT]
    assert f"created webhook sink {sink['sid']}" in out
    assert "created subscription DF" in out and "com.twilio.studio.flow.step.ended v1" in out
    assert len(fake.tests[sink["sid"]]) == 1  # Twilio was asked for its test event
    made = len(fake.changes())
    assert made == 2

    code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
    assert code == 0, out
    assert len(fake.changes()) == made and len(acme.sinks) == 1 and subscribed(acme) == [CURRENT]
    assert f"webhook sink {sink['sid']} already sends here (active)" in out
    assert "nothing to change" in out and "created" not in out


async def test_dry_run_prints_the_plan_and_changes_nothing(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount
) -> None:
    code, out, _ = await run_connect("--url", URL, "--dry-run", **one_account(acme))
    assert code == 0, out
    assert "would create a webhook sink" in out
    assert f"would subscribe the sink to {STARTED} v2, {ENDED} v2, {STEP} v1" in out
    assert "dry run: nothing was changed" in out
    assert fake.changes() == [] and acme.sinks == {} and fake.tests == {}
    assert all(entry.method == "GET" for entry in fake.log)


async def test_an_incomplete_subscription_is_completed_and_a_behind_version_moved(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount
) -> None:
    sink_sid = fake.add_sink(acme, URL)
    sub_sid = fake.add_subscription(acme, sink_sid, {STARTED: 1})
    code, out, _ = await run_connect("--url", URL, "--dry-run", **one_account(acme))
    assert code == 0 and f"would add {ENDED} v2 to subscription {sub_sid}" in out
    assert f"would move {STARTED} from schema v1 to v2 in subscription {sub_sid}" in out
    assert acme.subscriptions[sub_sid]["types"] == {STARTED: 1}

    code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
    assert code == 0, out
    assert len(acme.sinks) == 1 and subscribed(acme) == [CURRENT]
    assert f"added {STEP} v1 to subscription {sub_sid}" in out


async def test_all_connects_every_account_of_the_file_with_a_progress_bar(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount, tmp_path: Path
) -> None:
    globex = fake.add_account(OTHER_TOKEN)
    env = accounts_file(tmp_path, ("acme", acme, TOKEN), ("globex", globex, OTHER_TOKEN))
    code, out, err = await run_connect("--url", URL, "--all", "--wait", "0", **env)
    assert code == 0, out
    for account in (acme, globex):
        (sink,) = account.sinks.values()
        assert sink["sink_configuration"]["destination"] == f"{URL}/{account.sid}"
        assert subscribed(account) == [CURRENT]
    assert f"acme ({acme.sid}): {URL}/{acme.sid}" in out
    assert f"globex ({globex.sid}): {URL}/{globex.sid}" in out
    assert "2 account(s): 2 changed, 0 already set up, 0 failed" in out
    assert "connect: 100%" in err and "2/2" in err

    code, out, _ = await run_connect("--url", URL, "--all", "--wait", "0", **env)
    assert code == 0 and "2 account(s): 0 changed, 2 already set up, 0 failed" in out


async def test_one_account_of_several_uses_its_own_path(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount, tmp_path: Path
) -> None:
    globex = fake.add_account(OTHER_TOKEN)
    env = accounts_file(tmp_path, ("acme", acme, TOKEN), ("globex", globex, OTHER_TOKEN))
    code, _, err = await run_connect("--url", URL, "--wait", "0", **env)
    assert code == 2 and "pass --account AC... for one of them" in err and globex.sinks == {}
    code, out, _ = await run_connect("--url", URL, "--account", globex.sid, "--wait", "0", **env)
    assert code == 0, out
    assert acme.sinks == {}
    (sink,) = globex.sinks.values()
    assert sink["sink_configuration"]["destination"] == f"{URL}/{globex.sid}"


async def test_a_refused_credential_names_the_account_and_the_credential_not_its_secret(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount, tmp_path: Path
) -> None:
    globex = fake.add_account(OTHER_TOKEN)
    wrong = "wrong-token-for-globex-31f0"
    env = accounts_file(tmp_path, ("acme", acme, TOKEN), ("globex", globex, wrong))
    code, out, _ = await run_connect("--url", URL, "--all", "--wait", "0", **env)
    assert code == 1
    assert subscribed(acme) == [CURRENT] and globex.sinks == {}  # the other account goes on
    (line,) = [line for line in out.splitlines() if "refused" in line]
    assert f"account globex ({globex.sid})" in line
    assert f"the auth token (auth_tokens of [accounts.{globex.sid}] in SINK_ACCOUNTS_FILE)" in line
    assert "HTTP 401" in line and "Check that credential" in line
    assert wrong not in out and OTHER_TOKEN not in out
    assert "1 failed" in out


async def test_429_and_503_are_retried_honouring_retry_after(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount
) -> None:
    fake.inject(429, 2, endpoint="ListSink", retry_after=0)
    fake.inject(503, 1, endpoint="CreateSink")
    fake.inject(429, 1, endpoint="CreateSubscription", retry_after="0")
    code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
    assert code == 0, out
    assert [e.status for e in fake.calls("ListSink")] == [429, 429, 200]
    assert [e.status for e in fake.calls("CreateSink")] == [503, 201]
    assert [e.status for e in fake.calls("CreateSubscription")] == [429, 201]
    assert len(acme.sinks) == 1 and subscribed(acme) == [CURRENT]


async def test_an_outage_longer_than_the_retries_says_to_run_again_later(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount
) -> None:
    fake.inject(503, 6, endpoint="ListSink", retry_after=0)
    code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
    assert code == 1 and len(fake.calls("ListSink")) == 6
    assert "GET /v1/Sinks" in out and "still failing after 6 attempts (last: HTTP 503)" in out
    assert "Run the command again later" in out and acme.sinks == {}


async def test_a_retry_after_is_waited_out(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount
) -> None:
    fake.inject(429, 1, endpoint="CreateSinkTest", retry_after=1)
    code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
    assert code == 0, out
    first, second = fake.calls("CreateSinkTest")
    assert (first.status, second.status) == (429, 201)
    assert second.at - first.at >= 0.95


async def test_a_conflicting_sink_is_reported_and_left_alone(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount
) -> None:
    other = fake.add_sink(acme, URL, method="GET", batch_events=False)
    before = {sid: dict(sink) for sid, sink in acme.sinks.items()}
    code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
    assert code == 1
    assert f"sink {other} (made in the Console) already sends to this URL" in out
    assert "method GET, batch_events False" in out and "never changes it" in out
    assert f"sinks:remove --sid {other}" in out
    assert acme.sinks == before and acme.subscriptions == {} and fake.changes() == []
    assert fake.tests == {}


async def test_the_test_event_reaches_the_running_sink_and_is_recognised_by_its_test_id(
    run_connect: Run,
    fake: FakeEvents,
    acme: EventsAccount,
    sink: Sink,
    conn: asyncpg.Connection[Any],
) -> None:
    fake.deliver_tests = True
    url = sink.url("/events")
    code, out, _ = await run_connect("--url", url, "--wait", "20", **one_account(acme))
    assert code == 0, out
    (sink_sid,) = acme.sinks
    (test_id,) = fake.tests[sink_sid]
    (delivery,) = fake.deliveries
    assert delivery.status == 200 and delivery.test_id == test_id
    assert f"test event {test_id} arrived " in out and " s after the request" in out
    stored = await conn.fetchval(
        "SELECT count(*) FROM sink.events WHERE type = 'com.twilio.eventstreams.test-event'"
        " AND data->>'test_id' = $1",
        test_id,
    )
    assert stored == 1
    assert subscribed(acme) == [CURRENT]


async def test_a_sink_not_active_yet_is_validated_with_the_test_that_arrived(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount, sink: Sink
) -> None:
    fake.new_sink_status = "initialized"
    code, out, _ = await run_connect(
        "--url", sink.url("/events"), "--wait", "0", **one_account(acme)
    )
    assert code == 1 and acme.subscriptions == {}
    assert "is initialized, and Twilio subscribes only an active sink" in out
    assert "run connect again with --wait" in out
    assert "1 account(s): 1 changed, 0 already set up, 1 failed" in out

    fake.deliver_tests = True
    code, out, _ = await run_connect(
        "--url", sink.url("/events"), "--wait", "20", **one_account(acme)
    )
    assert code == 0, out
    ((sink_sid, made),) = acme.sinks.items()
    assert made["status"] == "active" and f"validated sink {sink_sid}" in out
    assert [e.status for e in fake.calls("CreateSinkValidate")] == [201]
    assert subscribed(acme) == [CURRENT]


async def test_a_test_event_that_never_arrives_times_out_with_what_to_check(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount, sink: Sink
) -> None:
    url = sink.url("/events")  # a running sink, but Twilio cannot reach it
    code, out, _ = await run_connect("--url", url, "--wait", "1", **one_account(acme))
    assert code == 1
    (line,) = [line for line in out.splitlines() if "✘" in line]
    assert "did not reach this sink's database within 1 s" in line
    assert "reachable from the internet" in line and "SINK_PUBLIC_URL" in line
    assert "Auth Token" in line
    assert subscribed(acme) == [CURRENT]  # the subscription is set up all the same


async def test_a_test_event_signed_with_another_token_is_not_taken_for_arrival(
    run_connect: Run, fake: FakeEvents, sink: Sink
) -> None:
    stranger = fake.add_account("a-token-the-sink-does-not-have")
    fake.deliver_tests = True
    env = one_account(stranger, "a-token-the-sink-does-not-have")
    code, out, _ = await run_connect("--url", sink.url("/events"), "--wait", "2", **env)
    assert code == 1 and "did not reach this sink's database" in out
    (delivery,) = fake.deliveries
    assert delivery.status == 401  # the sink refused it: the signature does not hold


def strict(node: Any, spec: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as strict JSON Schema: ``nullable`` a null union, ``$ref``
    resolved, objects closed (the fake may not invent fields)."""
    if isinstance(node, list):
        return [strict(item, spec) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return strict(target, spec)
    schema = {key: strict(value, spec) for key, value in node.items() if key != "format"}
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in schema:
        schema.setdefault("additionalProperties", False)
    return schema


async def test_every_answer_of_the_fake_fits_twilios_spec(
    run_connect: Run, fake: FakeEvents, acme: EventsAccount, sink: Sink
) -> None:
    fake.deliver_tests = True
    fake.new_sink_status = "initialized"  # Validate and Fetch are called too
    sink_sid = fake.add_sink(acme, "https://elsewhere.example.com/events")
    fake.add_subscription(acme, sink_sid, {STARTED: 1})
    code, out, _ = await run_connect(
        "--url", sink.url("/events"), "--wait", "20", **one_account(acme)
    )
    assert code == 0, out
    fake.new_sink_status = "active"
    for _ in range(2):  # the second finds the sink and lists its subscriptions
        code, out, _ = await run_connect("--url", URL, "--wait", "0", **one_account(acme))
        assert code == 0, out
    spec = yaml.safe_load(SPEC_PATH.read_text())
    operations = {
        op["operationId"]: op
        for item in spec["paths"].values()
        for method, op in item.items()
        if method in ("get", "post", "delete")
    }
    checked = set()
    for entry in fake.log:
        assert entry.endpoint in operations and 200 <= entry.status < 300, entry
        response = operations[entry.endpoint]["responses"][str(entry.status)]
        schema = strict(response["content"]["application/json"]["schema"], spec)
        errors = list(Draft202012Validator(schema).iter_errors(entry.answer))
        assert not errors, (entry.endpoint, [e.message for e in errors])
        checked.add(entry.endpoint)
    assert checked == {
        "ListSink",
        "CreateSink",
        "FetchSink",
        "CreateSinkTest",
        "CreateSinkValidate",
        "ListSubscription",
        "CreateSubscription",
        "ListSubscribedEvent",
        "FetchEventType",
        "ListSchemaVersion",
    }


# -- the plan, without HTTP ----------------------------------------------------------------


def sink_state(destination: str, **config: Any) -> SinkState:
    configuration = {"destination": destination, "method": "POST", "batch_events": True}
    return SinkState("DG" + "a" * 32, "", "webhook", "active", {**configuration, **config})


def test_a_sink_with_the_wanted_settings_is_used_and_nothing_is_created() -> None:
    plan = make_plan(
        URL,
        [sink_state("https://other.example.com/events"), sink_state(URL)],
        [SubscriptionState("DF" + "b" * 32, "", dict(CURRENT))],
        CURRENT,
    )
    assert plan.sink is not None and plan.changes == () and plan.conflicts == ()
    assert plan.elsewhere == ("https://other.example.com/events",)


def test_batch_events_given_as_text_is_the_same_setting() -> None:
    assert sink_state(URL, batch_events="true").differences() == []
    assert sink_state(URL, method="post").differences() == []
    assert sink_state(URL, batch_events=False).differences() == ["batch_events False"]


def test_a_conflicting_sink_stops_the_plan_even_beside_a_good_one() -> None:
    good, bad = sink_state(URL), sink_state(URL, method="GET")
    plan = make_plan(URL, [good, bad], [], CURRENT)
    assert plan.conflicts == (bad,) and plan.changes == ()
    assert "method GET" in plan.conflict_message()


def test_a_type_covered_by_a_second_subscription_is_not_added_again() -> None:
    first = SubscriptionState("DF" + "1" * 32, "", {STARTED: 2, ENDED: 2})
    second = SubscriptionState("DF" + "2" * 32, "", {STEP: 1})
    assert plan_subscription([first, second], CURRENT) == []
    (change,) = plan_subscription([first], CURRENT)
    assert (change.action, change.subscription_sid, change.event_type) == (
        "add_type",
        first.sid,
        STEP,
    )
