"""Make one account ready: its webhook sink, Twilio's test event, its subscription.

The steps, in order: read what the account has and plan (``sink.connect.plan``); stop at
a conflicting sink; create the sink if there is none; ask Twilio for its test event and
wait for it in this sink's database; validate the sink with that test's id if it is not
active yet; then create or complete the subscription. A dry run stops after the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from sink.accounts.model import Account, Accounts
from sink.connect import arrival
from sink.connect.client import RetryPolicy, TwilioApiError, account_name
from sink.connect.events import EventsApi
from sink.connect.plan import ACTIVE, STUDIO_EVENT_TYPES, Change, Plan, SinkState, make_plan
from sink.db.pool import DB_ERRORS, Conn, redact_url

CHANGE, SAME, OK, FAILED = "+", "=", "✔", "✘"


@dataclass(slots=True)
class Outcome:
    """What happened to one account: its report lines, and whether all went well."""

    account: Account
    destination: str
    lines: list[str] = field(default_factory=list)
    ok: bool = True
    changed: bool = False

    def say(self, mark: str, text: str) -> None:
        self.lines.append(f"  {mark} {text}")
        if mark == FAILED:
            self.ok = False

    def report(self) -> str:
        head = f"{account_name(self.account)}: {redact_url(self.destination)}"
        return "\n".join([head, *self.lines])


@dataclass(frozen=True, slots=True)
class Options:
    events_base_url: str
    dry_run: bool = False
    wait: float = 30.0
    policy: RetryPolicy | None = None


@dataclass(frozen=True, slots=True)
class Found:
    """An account's Event Streams state for a destination, and the plan for it."""

    api: EventsApi
    sinks: list[SinkState]
    plan: Plan


async def inspect(
    session: aiohttp.ClientSession,
    accounts: Accounts,
    account: Account,
    destinations: Sequence[str],
    options: Options,
) -> Found:
    """Read the account's sinks, the matching sink's subscriptions and the Studio types'
    current schema versions, and plan the changes for the first of ``destinations`` that
    a sink already sends to (else the first). Raises ``TwilioApiError``."""
    api, sinks = await EventsApi.open(
        session,
        options.events_base_url,
        account,
        accounts.rest_credentials(account.sid),
        policy=options.policy,
    )
    versions = await api.current_versions(STUDIO_EVENT_TYPES)
    plans = [make_plan(destination, sinks, [], versions) for destination in destinations]
    plan = next((p for p in plans if p.sink is not None or p.conflicts), plans[0])
    if plan.sink is not None and not plan.conflicts:
        subscriptions = await api.subscriptions(plan.sink.sid)
        plan = make_plan(plan.destination, sinks, subscriptions, versions)
    return Found(api, sinks, plan)


async def connect_account(
    session: aiohttp.ClientSession,
    accounts: Accounts,
    account: Account,
    destination: str,
    options: Options,
    conn: Conn | None,
) -> Outcome:
    outcome = Outcome(account, destination)
    try:
        found = await inspect(session, accounts, account, [destination], options)
        await _carry_out(found, options, conn, outcome)
    except TwilioApiError as exc:
        outcome.say(FAILED, str(exc))
    return outcome


async def _carry_out(found: Found, options: Options, conn: Conn | None, out: Outcome) -> None:
    plan, api = found.plan, found.api
    if plan.conflicts:
        out.say(FAILED, plan.conflict_message())
        return
    if options.dry_run:
        _say_plan(plan, options, out)
        return
    sink = plan.sink
    if sink is None:
        sink = await api.create_sink(plan.destination)
        out.changed = True
        out.say(CHANGE, f"created webhook sink {sink.sid} (POST, batch_events true)")
    else:
        out.say(SAME, f"webhook sink {sink.sid} already sends here ({sink.status})")
    sink = await _test(api, sink, options, conn, out)
    if sink.status != ACTIVE:
        then = (
            "run connect again with --wait, so that the test event, once it arrives,"
            " validates the sink"
            if options.wait <= 0
            else "the test event above must arrive to validate it"
        )
        out.say(
            FAILED,
            f"sink {sink.sid} is {sink.status or 'in no state'}, and Twilio subscribes only an"
            f" active sink: {then}",
        )
        return
    await _subscribe(api, sink, plan.subscription_changes, out)
    if not out.changed:
        out.say(SAME, "nothing to change: the sink and its subscription were already set up")


def _say_plan(plan: Plan, options: Options, out: Outcome) -> None:
    for change in plan.changes:
        out.say(CHANGE, f"would {change.describe()}")
    if plan.sink is not None:
        out.say(SAME, f"webhook sink {plan.sink.sid} already sends here ({plan.sink.status})")
    if options.wait > 0:
        out.say(SAME, f"would ask Twilio for its test event and wait up to {options.wait:g} s")
    if not plan.changes:
        out.say(SAME, "nothing to change: the sink and its subscription are already set up")
    out.say(SAME, "dry run: nothing was changed")


async def _test(
    api: EventsApi, sink: SinkState, options: Options, conn: Conn | None, out: Outcome
) -> SinkState:
    """Ask for the test event and wait for it; validate the sink with it if need be."""
    if options.wait <= 0:
        await api.test_sink(sink.sid)
        out.say(SAME, "asked Twilio for its test event (not waited for: --wait 0)")
        return sink
    if conn is None:
        await api.test_sink(sink.sid)
        out.say(
            FAILED,
            "asked Twilio for its test event, but this sink's database cannot be reached to"
            " see it arrive: check SINK_DATABASE_URL, or look for it yourself in studio.events"
            " (type com.twilio.eventstreams.test-event)",
        )
        return sink
    try:
        since = await arrival.clock(conn)
        await api.test_sink(sink.sid)
        arrived = await arrival.wait_for_test_event(conn, out.account.sid, since, options.wait)
    except DB_ERRORS as exc:
        out.say(
            FAILED,
            f"the wait for Twilio's test event stopped: the database failed ({exc}); look for"
            " it in studio.events (type com.twilio.eventstreams.test-event)",
        )
        return sink
    if arrived is None:
        out.say(FAILED, _timeout_advice(out, options.wait))
        return sink
    took = f"{arrived.elapsed:.2f}" if arrived.elapsed < 10 else f"{arrived.elapsed:.0f}"
    out.say(OK, f"test event {arrived.test_id} arrived {took} s after the request")
    if sink.status != ACTIVE:
        result = await api.validate_sink(sink.sid, arrived.test_id)
        sink = await api.fetch_sink(sink.sid)
        out.changed = True
        out.say(CHANGE, f"validated sink {sink.sid} with that test ({result}): {sink.status}")
    return sink


def _timeout_advice(out: Outcome, wait: float) -> str:
    return (
        f"Twilio's test event did not reach this sink's database within {wait:g} s. Check"
        f" that {redact_url(out.destination)} is reachable from the internet (not only from"
        " here), that SINK_PUBLIC_URL is exactly that URL, and that the sink has"
        f" {account_name(out.account)}'s Auth Token (SINK_ACCOUNTS_FILE or"
        " SINK_TWILIO_AUTH_TOKEN); `studio-sink doctor` and `studio-sink quarantine list`"
        " show deliveries refused for their signature"
    )


async def _subscribe(
    api: EventsApi, sink: SinkState, changes: tuple[Change, ...], out: Outcome
) -> None:
    if not changes:
        out.say(SAME, f"subscription already covers the {len(STUDIO_EVENT_TYPES)} Studio types")
        return
    for change in changes:
        if change.action == "create_subscription":
            sid = await api.create_subscription(sink.sid, dict(change.versions))
            out.say(CHANGE, f"created subscription {sid} to {change.kinds()}")
        elif change.action == "add_type":
            assert change.subscription_sid and change.event_type and change.version is not None
            await api.add_type(change.subscription_sid, change.event_type, change.version)
            out.say(CHANGE, change.describe().replace("add", "added", 1))
        elif change.action == "update_type":
            assert change.subscription_sid and change.event_type and change.version is not None
            await api.update_type(change.subscription_sid, change.event_type, change.version)
            out.say(CHANGE, change.describe().replace("move", "moved", 1))
        out.changed = True
