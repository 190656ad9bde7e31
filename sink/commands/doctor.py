"""``studio-sink doctor``: is this sink set up to receive and keep Twilio's events?

Each check is a small async function taking the ``Doctor`` context and returning a
``Result``: one line, ✔ or ✘, and for a ✘ what to do. They run in the order of ``CHECKS``
(the database first: later checks use its connection), and the command exits 1 when any
fails. A new check is a function appended to ``CHECKS``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from sink.accounts.load import load_accounts
from sink.accounts.model import Accounts
from sink.commands._common import open_route
from sink.config import Settings
from sink.connect import arrival, diagnose
from sink.connect.plan import account_url
from sink.db import migrate
from sink.db.pool import DB_ERRORS, Conn, redact_url
from sink.db.queries import query
from sink.db.replication import replication_warning
from sink.errors import AccountsFileError, ConfigError, MigrationError, SinkError
from sink.maintenance import quarantine

OK: Final = "✔"
FAILED: Final = "✘"

ReplicationWarning = Callable[[Conn], Awaitable[str | None]]
# The synchronous-replication check asks sink.db.replication (tests plant another).
REPLICATION_WARNING: ReplicationWarning | None = replication_warning


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    ok: bool
    detail: str  # what was found; for a failure, what to do about it

    def line(self) -> str:
        return f"{OK if self.ok else FAILED} {self.name}: {self.detail}"


@dataclass(slots=True)
class Doctor:
    """What the checks share: the settings, and the database once the first check has
    connected (None when it could not)."""

    settings: Settings
    conn: asyncpg.Connection[Any] | None = None
    schema_current: bool = False
    accounts: Accounts | None = None  # once check 2 has loaded them
    rest_ok: set[str] = field(default_factory=set)  # accounts whose credentials work
    public_url_ok: bool = False
    replication_warning: ReplicationWarning | None = field(
        default_factory=lambda: REPLICATION_WARNING
    )


Check = Callable[[Doctor], Awaitable[Result]]


async def check_database(doctor: Doctor) -> Result:
    """(1) The database is reachable and its schema is current."""
    name = "database"
    settings = doctor.settings
    try:
        route = await open_route(settings)
        doctor.conn = await asyncpg.connect(
            route.dsn, timeout=settings.db_connect_timeout, **route.connect_options()
        )
    except (*DB_ERRORS, SinkError) as exc:
        where = "SINK_DATABASE_URL" if settings.database_url else "the embedded Postgres"
        return Result(
            name,
            False,
            f"cannot connect ({type(exc).__name__}: {exc}). Check that Postgres is up and"
            f" that {where} points at it (and its credentials).",
        )
    where = redact_url(route.dsn)
    try:
        todo = await migrate.pending(doctor.conn)
    except MigrationError as exc:
        return Result(name, False, f"reachable at {where}, but {exc}")
    if todo:
        names = ", ".join(m.filename for m in todo)
        return Result(
            name,
            False,
            f"reachable at {where}, but the schema is behind ({len(todo)} pending: {names})."
            " Run `studio-sink migrate` with the same SINK_DATABASE_URL.",
        )
    doctor.schema_current = True
    return Result(name, True, f"reachable at {where}, schema current")


async def check_auth_tokens(doctor: Doctor) -> Result:
    """(2) The accounts and the keys to verify Twilio's signature load (the values are
    never shown)."""
    name = "accounts and tokens"
    settings = doctor.settings
    try:
        accounts = load_accounts(settings)
    except (AccountsFileError, ConfigError) as exc:
        return Result(name, False, str(exc))
    doctor.accounts = accounts
    tokens, shared = len(accounts.every_signing_key), len(settings.twilio_shared_keys)
    found = f"{len(accounts)} account(s), {tokens} Auth Token(s), {shared} shared key(s)"
    if not settings.verify_signature:
        return Result(
            name,
            True,
            f"{found}; tokens not needed: SINK_VERIFY_SIGNATURE=false (anyone who reaches the"
            " sink can write events: for a local trial only)",
        )
    if not tokens and not shared:
        return Result(
            name,
            False,
            "none configured, so no delivery can be verified. Set SINK_TWILIO_AUTH_TOKEN to"
            " the account's Auth Token (comma-separate several during a rotation), or list"
            " the accounts in SINK_ACCOUNTS_FILE.",
        )
    return Result(name, True, f"{found} configured")


async def check_public_url(doctor: Doctor) -> Result:
    """(3) SINK_PUBLIC_URL is set, and https: the exact URL Twilio signs."""
    name = "public URL"
    url = doctor.settings.public_url
    fix = (
        "Set SINK_PUBLIC_URL to the exact https URL configured in the Event Streams sink"
        " (e.g. https://sink.example.com/events): Twilio signs that URL, and behind a proxy"
        " the URL the sink sees differs."
    )
    if not url:
        return Result(name, False, f"SINK_PUBLIC_URL is not set. {fix}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
        shown = redact_url(url)  # Twilio allows basic auth in the URL: never show a password
    except ValueError as exc:
        return Result(name, False, f"SINK_PUBLIC_URL is not a URL ({exc}). {fix}")
    if parts.scheme != "https" or not parts.hostname:
        return Result(name, False, f"SINK_PUBLIC_URL {shown!r} is not an https URL. {fix}")
    doctor.public_url_ok = True
    return Result(name, True, shown)


NO_ACCOUNT: Final = (
    "no Twilio account is configured (only tokens), so neither the backfill nor this check"
    " can call Twilio: set SINK_TWILIO_ACCOUNT_SID (with its API key or auth token), or list"
    " the accounts in SINK_ACCOUNTS_FILE"
)


def _joined(name: str, findings: list[diagnose.Finding]) -> Result:
    """One line for every account: the failures first."""
    ordered = sorted(findings, key=lambda f: f.ok)
    return Result(name, all(f.ok for f in findings), "; ".join(f.line() for f in ordered))


async def check_rest_credentials(doctor: Doctor) -> Result:
    """(4) Each account's REST credentials work: ``GET /v2/Flows?PageSize=1``."""
    name = "REST credentials"
    accounts = doctor.accounts
    if accounts is None:
        return Result(name, False, "not checked: the accounts do not load (check 2)")
    if not len(accounts):
        return Result(name, False, NO_ACCOUNT)
    listed = accounts.listed()
    status: dict[str, tuple[str, Any]] = {}
    if doctor.conn is not None and doctor.schema_current:
        status = await arrival.credentials_status(doctor.conn, [a.sid for a in listed])
    base = doctor.settings.studio_base_url
    async with aiohttp.ClientSession(headers={"User-Agent": "studio-sink doctor"}) as session:
        findings = await diagnose.each(
            listed,
            lambda account: diagnose.rest_credentials(
                session, base, accounts, account, status.get(account.sid)
            ),
        )
    doctor.rest_ok = {f.account.sid for f in findings if f.ok}
    return _joined(name, findings)


async def check_event_streams(doctor: Doctor) -> Result:
    """(5) Each account's Event Streams sink exists, is active, sends to SINK_PUBLIC_URL
    (or its ``/{AccountSid}`` form), and its subscription covers the Studio types."""
    name = "Event Streams"
    accounts, url = doctor.accounts, doctor.settings.public_url
    if accounts is None or not len(accounts):
        return Result(name, False, "not checked: no account is configured (checks 2 and 4)")
    if not doctor.public_url_ok or url is None:
        return Result(name, False, "not checked: needs an https SINK_PUBLIC_URL (check 3)")
    listed = [a for a in accounts.listed() if a.sid in doctor.rest_ok]
    skipped = [
        diagnose.Finding(a, False, "not checked: its REST credentials do not work (check 4)")
        for a in accounts.listed()
        if a.sid not in doctor.rest_ok
    ]
    base = doctor.settings.events_base_url
    async with aiohttp.ClientSession(headers={"User-Agent": "studio-sink doctor"}) as session:
        findings = await diagnose.each(
            listed,
            lambda account: diagnose.event_streams(
                session, base, accounts, account, url, [account_url(url, account.sid), url]
            ),
        )
    return _joined(name, [*findings, *skipped])


async def check_last_arrivals(doctor: Doctor) -> Result:
    """(6) When each account's last delivery and last sink test event arrived."""
    name = "last deliveries"
    accounts, conn = doctor.accounts, doctor.conn
    if conn is None or not doctor.schema_current:
        return Result(name, False, "not checked: needs the database with a current schema")
    if accounts is None or not len(accounts):
        return Result(name, False, "not checked: no account is configured (checks 2 and 4)")
    url = doctor.settings.public_url
    findings = [await diagnose.last_arrivals(conn, account, url) for account in accounts.listed()]
    return _joined(name, findings)


async def check_quarantine(doctor: Doctor) -> Result:
    """(7) Deliveries refused for their signature in the last hour: a misconfiguration is
    losing events (or someone is sending forged ones)."""
    name = "signature failures (last hour)"
    conn = doctor.conn
    if conn is None or not await conn.fetchval(query("relation_exists"), "studio.quarantine"):
        return Result(name, False, "not checked: needs the database with a current schema")
    by_reason = await quarantine.recent_by_reason(conn, 3600)
    if not by_reason:
        return Result(name, True, "no delivery refused for its signature")
    total = sum(by_reason.values())
    reasons = ", ".join(f"{reason}: {n}" for reason, n in by_reason.items())
    return Result(
        name,
        False,
        f"{total} deliveries refused and quarantined ({reasons}): a misconfiguration is losing"
        " events. Check SINK_PUBLIC_URL and the token (`studio-sink quarantine list` shows"
        " the URLs), then run `studio-sink quarantine retry`. If they are not from Twilio,"
        " someone is sending forged requests.",
    )


async def check_synchronous_replication(doctor: Doctor) -> Result:
    """(8) An acknowledged event survives a failover only with synchronous replication."""
    name = "synchronous replication"
    warning_of = doctor.replication_warning
    if warning_of is None:
        return Result(name, True, "not checked by this version")
    if doctor.conn is None:
        return Result(name, False, "not checked: needs the database")
    warning = await warning_of(doctor.conn)
    if warning is None:
        return Result(name, True, "no asynchronous standby seen")
    return Result(name, False, warning)


CHECKS: list[Check] = [
    check_database,
    check_auth_tokens,
    check_public_url,
    check_rest_credentials,
    check_event_streams,
    check_last_arrivals,
    check_quarantine,
    check_synchronous_replication,
]


async def run_checks(doctor: Doctor, checks: list[Check] = CHECKS) -> list[Result]:
    """Every check in order; the connection the first opened is closed at the end."""
    try:
        return [await check(doctor) for check in checks]
    finally:
        if doctor.conn is not None:
            with contextlib.suppress(*DB_ERRORS):
                await doctor.conn.close()


async def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    results = await run_checks(Doctor(settings))
    for result in results:
        print(result.line())
    failed = sum(not r.ok for r in results)
    print(f"{failed} of {len(results)} checks failed" if failed else "all checks passed")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "doctor",
        help=(
            "check the sink's setup: database, accounts, public URL, REST credentials, Event"
            " Streams, last deliveries, refused deliveries"
        ),
        description=(
            "Runs each check in turn and prints one line per check, ✔ or ✘ with what to do;"
            " exits 1 when any check fails."
        ),
    )
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_doctor)
