"""What ``studio-sink doctor`` finds, account by account, at Twilio and in the database.

Each function returns one ``Finding`` per account: whether it is fine, and a short text
(for a problem, the fix). The doctor joins them into its one line per check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from sink.accounts.model import Account, Accounts, RestCredential
from sink.connect import arrival
from sink.connect.client import (
    CredentialsRefused,
    RestClient,
    RetryPolicy,
    TwilioApiError,
    account_name,
)
from sink.connect.plan import ACTIVE, STUDIO_EVENT_TYPES
from sink.connect.setup import Options, inspect
from sink.db.pool import Conn, redact_url

POLICY = RetryPolicy(attempts=3, backoff_cap=2.0, max_retry_after=5.0, timeout=10.0)
CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Finding:
    account: Account
    ok: bool
    text: str

    def line(self) -> str:
        return f"{account_name(self.account)}: {self.text}"


async def each(
    accounts: Sequence[Account], check: Callable[[Account], Awaitable[Finding]]
) -> list[Finding]:
    """``check`` of every account, a few at a time, in the accounts' order."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(account: Account) -> Finding:
        async with gate:
            return await check(account)

    return list(await asyncio.gather(*(one(account) for account in accounts)))


async def rest_credentials(
    session: aiohttp.ClientSession,
    studio_base_url: str,
    accounts: Accounts,
    account: Account,
    backfill_status: tuple[str, datetime | None] | None,
) -> Finding:
    """(4) Which of the account's credentials the Studio API accepts
    (``GET /v2/Flows?PageSize=1``), and what the backfill last found."""
    credentials = accounts.rest_credentials(account.sid)
    note = ""
    if backfill_status is not None and backfill_status[0] == "invalid":
        when = _when(backfill_status[1]) if backfill_status[1] else "at its last call"
        note = f" (the backfill found every credential refused {when}: its items wait)"
    if not credentials:
        return Finding(
            account,
            False,
            "no REST credentials: add api_key_sid and api_key_secret (or auth_tokens) to"
            f" [accounts.{account.sid}] in SINK_ACCOUNTS_FILE",
        )
    refused: list[str] = []
    last: TwilioApiError | None = None
    for credential in credentials:
        outcome = await _try_studio(session, studio_base_url, account, credential)
        if outcome is None:
            tried = f" ({', '.join(refused)} refused: remove it)" if refused else ""
            return Finding(account, True, f"{credential.name} works{tried}{note}")
        if not isinstance(outcome, CredentialsRefused):
            return Finding(account, False, f"{outcome} (SINK_STUDIO_BASE_URL {studio_base_url})")
        refused.append(credential.name)
        last = outcome
    names = ", ".join(refused)
    return Finding(account, False, f"every credential refused ({names}); {last}{note}")


async def _try_studio(
    session: aiohttp.ClientSession, base: str, account: Account, credential: RestCredential
) -> TwilioApiError | None:
    client = RestClient(session, base, account, credential, api="Studio API", policy=POLICY)
    try:
        await client.get("/v2/Flows", {"PageSize": "1"})
    except TwilioApiError as exc:
        return exc
    return None


async def event_streams(
    session: aiohttp.ClientSession,
    events_base_url: str,
    accounts: Accounts,
    account: Account,
    public_url: str,
    destinations: Sequence[str],
) -> Finding:
    """(5) The account's webhook sink sends to this URL, is active, and its
    subscription covers the Studio types."""
    options = Options(events_base_url, dry_run=True, policy=POLICY)
    only = "" if len(accounts) == 1 else f" --account {account.sid}"
    fix = f"run `studio-sink connect --url {redact_url(public_url)}{only}`"
    try:
        found = await inspect(session, accounts, account, destinations, options)
    except TwilioApiError as exc:
        return Finding(account, False, f"{exc} (SINK_EVENTS_BASE_URL {events_base_url})")
    plan = found.plan
    if plan.conflicts:
        return Finding(account, False, plan.conflict_message())
    if plan.sink is None:
        wanted = " or ".join(redact_url(d) for d in destinations)
        elsewhere = ""
        if plan.elsewhere:
            shown = ", ".join(redact_url(d) for d in plan.elsewhere)
            elsewhere = (
                f"; its webhook sinks send to {shown} instead (if that is this sink, set"
                " SINK_PUBLIC_URL to it)"
            )
        return Finding(account, False, f"no Event Streams sink sends to {wanted}{elsewhere}: {fix}")
    sink = plan.sink
    if sink.status != ACTIVE:
        return Finding(
            account,
            False,
            f"sink {sink.sid} is {sink.status or 'in no state'}, not active: {fix} (it validates"
            " the sink with a test event), or delete the sink if it failed",
        )
    missing = [c.event_type for c in plan.subscription_changes if c.action != "update_type"]
    missing += [t for c in plan.subscription_changes for t, _ in c.versions]
    if missing:
        return Finding(
            account,
            False,
            f"sink {sink.sid} is active, but no subscription sends it"
            f" {', '.join(map(str, missing))}: {fix}",
        )
    behind = [c for c in plan.subscription_changes if c.action == "update_type"]
    note = "".join(
        f"; {c.event_type} is at schema v{c.old_version}, v{c.version} is current ({fix})"
        for c in behind
    )
    return Finding(
        account,
        True,
        f"sink {sink.sid} active, subscribed to the {len(STUDIO_EVENT_TYPES)} Studio types{note}",
    )


async def last_arrivals(conn: Conn, account: Account, public_url: str | None) -> Finding:
    """(6) When the account's last delivery and last test event reached the database."""
    found = await arrival.last_arrivals(conn, account.sid)
    test = _when(found.last_test_event) if found.last_test_event else "none"
    if found.last_delivery is None:
        url = redact_url(public_url) if public_url else "the sink's URL"
        return Finding(
            account,
            False,
            f"no event in the last {arrival.LOOKBACK_DAYS} days: run `studio-sink connect --url"
            f" {url} --account {account.sid}` to send a test event, and check that Twilio"
            " reaches the sink (checks 3 and 5, `studio-sink quarantine list`)",
        )
    return Finding(
        account, True, f"last delivery {_when(found.last_delivery)}, last test event {test}"
    )


def _when(moment: datetime) -> str:
    ago = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    span = f"{ago} s" if ago < 120 else f"{ago // 60} min" if ago < 7200 else f"{ago // 3600} h"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z ({span} ago)"
