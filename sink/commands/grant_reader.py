"""``studio-sink grant-reader``: a Postgres role that reads only some accounts' rows.

Row-level security on the sink's tables, behind the ``studio`` views, shows a role the rows
of the accounts granted to it (docs/sql.md, "Per-tenant readers"). The work is done by SQL
functions of migration 0014 (``sink.grant_tenant_reader``, ``sink.revoke_tenant_reader``),
so a DBA can do the same from psql.
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from sink.commands._common import open_database
from sink.config import Settings
from sink.db.queries import query
from sink.twilio import is_sid, sid_rule

# what sink.grant_tenant_reader and sink.revoke_tenant_reader raise for a wrong request
_REFUSALS = (
    asyncpg.InvalidParameterValueError,  # 22023: a bad SID, a role that sees every account
    asyncpg.UndefinedObjectError,  # 42704: no such role
    asyncpg.FeatureNotSupportedError,  # 0A000: Postgres before 15
    asyncpg.InsufficientPrivilegeError,  # 42501: may not create roles
)


def _account_sid(text: str) -> str:
    if not is_sid(text, "AC"):
        raise argparse.ArgumentTypeError(f"not an Account SID: {sid_rule('AC')}")
    return text


def _refusal(exc: asyncpg.PostgresError) -> str:
    hint = getattr(exc, "hint", None)
    return f"studio-sink grant-reader: {exc}" + (f" ({hint})" if hint else "")


async def _grant(conn: asyncpg.Connection[Any], args: argparse.Namespace) -> None:
    outcome = await conn.fetchval(query("grant_reader"), args.role, args.account, args.login)
    created = "created (LOGIN)" if args.login else "created (NOLOGIN)"
    print(f"role {args.role}: {created if outcome == 'created' else 'existing role used'}")
    print(f"reads the rows of: {', '.join(sorted(set(args.account)))}")
    if outcome != "created" and args.login:
        print("note: --login only applies to a role this command creates; it was left as it is")
    for sid in await conn.fetch(query("unknown_accounts"), args.account):
        print(
            f"note: {sid[0]} is not among the sink's accounts (studio.accounts): check the"
            " SID, or add it to SINK_ACCOUNTS_FILE"
        )


async def _revoke(conn: asyncpg.Connection[Any], args: argparse.Namespace) -> None:
    kept = await conn.fetchval(query("revoke_reader"), args.role, args.account or None)
    what = ", ".join(sorted(set(args.account))) if args.account else "every account"
    print(f"role {args.role}: no longer reads {what}; reads {kept} account(s)")
    if kept == 0:
        print(f"role {args.role} now sees no rows; DROP ROLE {args.role} removes it entirely")


async def _list(conn: asyncpg.Connection[Any]) -> None:
    rows = await conn.fetch(query("list_readers"))
    if not rows:
        print("no per-tenant readers")
        return
    for row in rows:
        role = row["role_name"] or f"(dropped role, oid {row['role_oid']})"
        label = f" ({row['label']})" if row["label"] else ""
        print(f"{role}\t{row['account_sid']}{label}\tsince {row['granted_at']:%Y-%m-%d %H:%M}")


async def cmd_grant_reader(args: argparse.Namespace, settings: Settings) -> int:
    if not args.list and args.role is None:
        print("studio-sink grant-reader: name the ROLE (or use --list)")
        return 2
    if not (args.list or args.revoke or args.account):
        print("studio-sink grant-reader: name at least one account: --account AC...")
        return 2
    conn = await open_database(settings)
    try:
        if args.list:
            await _list(conn)
        elif args.revoke:
            await _revoke(conn, args)
        else:
            await _grant(conn, args)
    except _REFUSALS as exc:
        print(_refusal(exc))
        return 2
    finally:
        await conn.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "grant-reader",
        help="a Postgres role that reads only the given accounts' rows (per-tenant reader)",
        description=(
            "Creates ROLE (NOLOGIN unless --login), or uses the existing role, and lets it"
            " read through the studio views the rows of the given accounts only: row-level"
            " security on the sink's tables (PostgreSQL 15 or later). Run again with more"
            " --account to add accounts; --revoke takes them away (all of them without"
            " --account). A role without grants sees no rows. See docs/sql.md."
        ),
    )
    parser.add_argument("role", nargs="?", metavar="ROLE", help="the Postgres role")
    parser.add_argument(
        "--account",
        action="append",
        type=_account_sid,
        default=[],
        metavar="AC...",
        help="an Account SID the role may read (repeat for several)",
    )
    parser.add_argument(
        "--login", action="store_true", help="create the role with LOGIN (set its password then)"
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--revoke", action="store_true", help="take these accounts (all without --account) away"
    )
    action.add_argument("--list", action="store_true", help="list every role and its accounts")
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_grant_reader)
