"""The ``studio-sink`` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import pkgutil
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from sink import logs
from sink.accounts.load import load_accounts
from sink.app import create_app
from sink.config import Settings, load_settings
from sink.db import embedded, migrate
from sink.db.embedded import resolve_dsn
from sink.db.pool import connect, redact_url
from sink.db.route import direct_route, find_route
from sink.errors import ConfigError, SinkError
from sink.ingest import redact
from sink.web.keys import ACCOUNTS, HEALTH
from sink.workers.count import worker_count
from sink.workers.role import WorkerRole
from sink.workers.supervisor import Supervisor

log = logging.getLogger("sink")

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _warn_unverified() -> None:
    banner = "!" * 78
    for line in (
        banner,
        "SINK_VERIFY_SIGNATURE=false: ANYONE who can reach this port can write events.",
        "Use this for a local trial only; set SINK_TWILIO_AUTH_TOKEN for real use.",
        banner,
    ):
        log.warning(line)


def check_serve_settings(settings: Settings) -> None:
    redact.policy(settings)  # SINK_CONTACT_MODE=hash without SINK_PII_KEY: ConfigError
    accounts = load_accounts(settings)  # a refused accounts file stops the start here
    if (
        settings.verify_signature
        and not accounts.every_signing_key
        and not (settings.twilio_shared_keys)
    ):
        raise ConfigError(
            "SINK_TWILIO_AUTH_TOKEN is not set, so no delivery could be verified. Set it to"
            " your account's Auth Token (comma-separate several during a rotation), or list"
            " your accounts in SINK_ACCOUNTS_FILE, or set SINK_VERIFY_SIGNATURE=false for a"
            " local trial."
        )


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    role = WorkerRole.from_environment()  # set when the supervisor of --workers N started us
    check_serve_settings(settings)
    if role is None:
        if not settings.verify_signature:
            _warn_unverified()
        if settings.embedded:
            log.info("no SINK_DATABASE_URL: using the embedded Postgres in %s", settings.data_dir)
        workers = worker_count(settings.workers)
        if workers > 1:
            return await Supervisor(settings, workers).run()
    dsn = role.dsn if role is not None and role.dsn else await resolve_dsn(settings)
    app = create_app(settings, dsn=dsn)
    if role is not None:
        role.setup(app)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_grace
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        backlog=2048,
        reuse_address=True,
        reuse_port=True if role is not None else None,  # the workers share the port
    )
    await site.start()
    _log_listening(settings, dsn, role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[ACCOUNTS].reload)  # re-read the accounts file
    duties = None if role is None else asyncio.create_task(role.duties(app, stop))
    await stop.wait()
    if duties is not None:
        duties.cancel()
    log.info(
        "stopping: not ready, refusing new deliveries (503) for %.1f s, then draining (up to"
        " %.0f s)",
        settings.shutdown_delay,
        settings.shutdown_grace,
    )
    app[HEALTH].draining = True
    await asyncio.sleep(settings.shutdown_delay)
    await runner.cleanup()
    log.info("stopped")
    return 0


def _log_listening(settings: Settings, dsn: str, role: WorkerRole | None) -> None:
    if role is None:
        log.info(
            "studio-sink listening on http://%s:%d/events (database %s)",
            settings.host,
            settings.port,
            redact_url(dsn),
        )
        return
    log.info(
        "worker %d (pid %d) listening on http://%s:%d/events",
        role.index,
        os.getpid(),
        settings.host,
        settings.port,
    )
    role.report_listening()


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    if settings.database_url is None:
        route = direct_route(await embedded.prepare(settings.data_dir))
    else:
        route = await find_route(settings, settings.database_url.get_secret_value())
    if route.session_dsn is None:
        raise ConfigError(
            "SINK_DATABASE_URL goes through a transaction pooler (PgBouncer), and migrations"
            " hold a session advisory lock while they run, which a pooler cannot keep. Set"
            " SINK_DATABASE_DIRECT_URL to a direct connection to Postgres (bypassing the"
            " pooler) and run `studio-sink migrate` again."
        )
    # each host of a multi-host URL in turn, with its own timeout, as the sink connects
    conn = await connect(route.session_dsn, host_timeout=settings.db_connect_timeout)
    try:
        applied = await migrate.migrate(conn)
    finally:
        await conn.close()
    if applied:
        for migration in applied:
            print(f"applied {migration.filename}")
    else:
        print("schema is current; nothing to apply")
    return 0


async def cmd_db_url(args: argparse.Namespace, settings: Settings) -> int:
    if settings.database_url:
        print(settings.database_url.get_secret_value())
        return 0
    dsn = await embedded.prepare(settings.data_dir, keep_running=True)
    print(dsn)
    print(
        f"(embedded Postgres in {settings.data_dir.resolve()} is running;"
        " `studio-sink db-stop` stops it)",
        file=sys.stderr,
    )
    return 0


async def cmd_db_stop(args: argparse.Namespace, settings: Settings) -> int:
    if settings.database_url:
        print("SINK_DATABASE_URL is set: there is no embedded Postgres to stop", file=sys.stderr)
        return 1
    stopped = await asyncio.to_thread(embedded.stop, settings.data_dir)
    print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio-sink",
        description="Twilio Event Streams webhook sink for Studio flow data, on Postgres.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook receiver")
    serve.add_argument("--host", help="interface to listen on (SINK_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (SINK_PORT, default 8080)")
    serve.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    serve.add_argument("--log-format", choices=["json", "text"], help="SINK_LOG_FORMAT")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="SINK_LOG_LEVEL"
    )
    serve.add_argument(
        "--workers",
        help="processes sharing the port (SINK_WORKERS, default 1; auto: one per usable CPU,"
        " at most 8)",
    )
    serve.set_defaults(handler=cmd_serve)

    for name, handler, text in (
        ("migrate", cmd_migrate, "apply pending database migrations, then exit"),
        ("db-url", cmd_db_url, "print the database URL in use (starts the embedded one)"),
        ("db-stop", cmd_db_stop, "stop the embedded Postgres"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
        command.set_defaults(handler=handler)
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list[Any]:
    import sink.commands

    names = sorted(
        m.name for m in pkgutil.iter_modules(sink.commands.__path__) if not m.name.startswith("_")
    )
    return [importlib.import_module(f"sink.commands.{name}") for name in names]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("host", "port", "data_dir", "log_format", "log_level", "workers")
    return {name: getattr(args, name, None) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(**_overrides(args))
    except ValidationError as exc:
        problems = "; ".join(
            f"SINK_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        print(f"studio-sink: invalid settings: {problems}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_format)
    handler: Command = args.handler
    try:
        return _run(handler(args, settings))
    except SinkError as exc:
        print(f"studio-sink: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"studio-sink: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
