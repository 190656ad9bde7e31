"""The UI's pages: overview, executions, one execution, flow revision, rejected events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp_jinja2
import asyncpg
from aiohttp import web
from yarl import URL

from sink.backfill.accounts import callable_accounts
from sink.ingest import redact
from sink.twilio import is_sid
from sink.ui import accounts, queries
from sink.ui.chart import per_minute_chart
from sink.ui.flows import add_flow_routes, backfill_redirect
from sink.ui.forms import parse_cursor, parse_filters
from sink.ui.login import login_form, login_submit, logout, page_context, redirect, requires_login
from sink.web.keys import ACCOUNTS, METRICS, POOL, SETTINGS

CHART_MINUTES: Final = 180
FINAL_BACKFILL_STATES: Final = frozenset({"done", "failed", "gone", "cancelled", "finished"})
NOTICES: Final = {
    "backfill_unavailable": (
        "Backfill is not available in this database yet (no studio.request_backfill)."
        " Upgrade studio-sink and run `studio-sink migrate`."
    ),
}


def _signature_failures(request: web.Request) -> int:
    total = 0.0
    for metric in request.app[METRICS].signature_failures.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return int(total)


@requires_login
async def overview(request: web.Request) -> web.StreamResponse:
    async with request.app[POOL].acquire() as conn:
        choice = await accounts.load(conn, request)
        data = await queries.overview(conn, CHART_MINUTES, choice.selected)
    chart = per_minute_chart(
        [(r["minute"], r["deliveries"], r["events"]) for r in data.pop("per_minute")],
        now=datetime.now(UTC),
        minutes=CHART_MINUTES,
    )
    return aiohttp_jinja2.render_template(
        "overview.html",
        request,
        page_context(
            request,
            title="Overview",
            chart=chart,
            chart_hours=CHART_MINUTES // 60,
            signature_failures=_signature_failures(request),
            test_events=accounts.latest_tests(choice, data.pop("test_events")),
            **data,
        ),
    )


@requires_login
async def executions(request: web.Request) -> web.StreamResponse:
    errors: list[str] = []
    filters = parse_filters(request.query, errors)
    # a contact is searched as it is stored: hashed or masked under SINK_CONTACT_MODE
    stored_contact = redact.policy(request.app[SETTINGS]).contact(filters.contact)
    after = parse_cursor(request.query, errors)
    async with request.app[POOL].acquire() as conn:
        choice = await accounts.load(conn, request)
        filters = dataclasses.replace(filters, contact=stored_contact, account_sid=choice.selected)
        rows = await queries.executions(conn, filters, after, queries.PAGE_SIZE + 1)
        flow_names = await queries.flow_names(conn, [r["flow_sid"] for r in rows if r["flow_sid"]])
    more = len(rows) > queries.PAGE_SIZE
    rows = rows[: queries.PAGE_SIZE]
    next_url = None
    if more:
        last = rows[-1]
        kept = {k: v for k, v in request.query.items() if k not in ("after_sid", "after_date")}
        date = last["date_created"]
        next_url = str(
            URL("/ui/executions").with_query(
                {
                    **kept,
                    "after_date": date.isoformat() if date else "",
                    "after_sid": last["execution_sid"],
                }
            )
        )
    return aiohttp_jinja2.render_template(
        "executions.html",
        request,
        page_context(
            request,
            title="Executions",
            rows=rows,
            flow_names=flow_names,
            form={
                k: request.query.get(k, "")
                for k in ("flow", "status", "ended_reason", "contact", "from", "until")
            },
            errors=errors,
            paged=after is not None,
            next_url=next_url,
            first_url=str(
                URL("/ui/executions").with_query(
                    {k: v for k, v in request.query.items() if k not in ("after_sid", "after_date")}
                )
            ),
        ),
    )


def _timeline(steps: list[asyncpg.Record], started: datetime | None) -> list[dict[str, Any]]:
    items = []
    previous = started
    for step in steps:
        when = step["date_created"]
        delta = when - previous if when is not None and previous is not None else None
        items.append({"step": step, "since_previous": delta})
        previous = when or previous
    return items


@requires_login
async def execution(request: web.Request) -> web.StreamResponse:
    sid = request.match_info["sid"]
    if not is_sid(sid, "FN"):
        raise web.HTTPNotFound(text=f"{sid[:40]!r} is not an execution SID (FN + 32 hex digits)")
    request_id = request.query.get("backfill", "")
    async with request.app[POOL].acquire() as conn:
        row = await queries.execution(conn, sid)
        if row is None:
            raise web.HTTPNotFound(text=f"execution {sid} is not in this sink's database")
        steps = await queries.steps(conn, sid)
        await accounts.load(conn, request)
        revision_known = row["flow_revision"] is not None and await queries.has_flow_revision(
            conn, row["flow_sid"], row["flow_revision"]
        )
        backfill = (
            await queries.backfill_request(conn, int(request_id)) if request_id.isdigit() else None
        )
    poll_url = None
    if backfill is not None and not _final(backfill):
        poll_url = f"/ui/backfill/{backfill['request_id']}.json"
    return aiohttp_jinja2.render_template(
        "execution.html",
        request,
        page_context(
            request,
            title=f"Execution {sid}",
            e=row,
            timeline=_timeline(steps, row["date_created"]),
            revision_known=revision_known,
            backfill=backfill,
            poll_url=poll_url,
            backfill_here=_backfill_here(request.app),
            notice=NOTICES.get(request.query.get("notice", "")),
        ),
    )


def _backfill_here(app: web.Application) -> bool:
    """True when this process runs backfill workers with Studio API credentials (of an
    account, or an API key set without an Account SID)."""
    accounts = app[ACCOUNTS].current
    has_credentials = bool(callable_accounts(accounts)) or accounts.fallback is not None
    return app[SETTINGS].backfill_workers > 0 and has_credentials


def _final(backfill: asyncpg.Record) -> bool:
    return backfill["finished_at"] is not None or backfill["status"] in FINAL_BACKFILL_STATES


@requires_login
async def backfill_now(request: web.Request) -> web.StreamResponse:
    sid = request.match_info["sid"]
    if not is_sid(sid, "FN"):
        raise web.HTTPNotFound(text="not an execution SID (FN + 32 hex digits)")
    async with request.app[POOL].acquire() as conn:
        request_id = await queries.request_backfill(conn, sid)
    return backfill_redirect(request, f"/ui/executions/{sid}", request_id)


@requires_login
async def backfill_status(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["request_id"]
    async with request.app[POOL].acquire() as conn:
        row = await queries.backfill_request(conn, int(raw)) if raw.isdigit() else None
    if row is None:
        return web.json_response(
            {"error": "not_found", "message": f"no backfill request {raw[:20]}"}, status=404
        )
    body = {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in dict(row).items()
    }
    body["final"] = _final(row)
    return web.json_response(body)


@requires_login
async def revision(request: web.Request) -> web.StreamResponse:
    flow_sid = request.match_info["flow_sid"]
    number = request.match_info["revision"]
    if not is_sid(flow_sid, "FW") or not number.isdigit():
        raise web.HTTPNotFound(text="expected /ui/flows/FW.../revisions/<number>")
    async with request.app[POOL].acquire() as conn:
        try:
            definition = await queries.flow_revision(conn, flow_sid, int(number))
        except asyncpg.UndefinedColumnError:
            definition = None
        await accounts.load(conn, request)
    return aiohttp_jinja2.render_template(
        "revision.html",
        request,
        page_context(
            request,
            title=f"Flow {flow_sid} revision {number}",
            flow_sid=flow_sid,
            revision=number,
            definition=definition,
        ),
        status=200 if definition is not None else 404,
    )


@requires_login
async def rejected(request: web.Request) -> web.StreamResponse:
    before_text = request.query.get("before", "")
    before = int(before_text) if before_text.isdigit() else None
    async with request.app[POOL].acquire() as conn:
        rows = await queries.rejected(conn, before, queries.PAGE_SIZE + 1)
        await accounts.load(conn, request)
    more = len(rows) > queries.PAGE_SIZE
    rows = rows[: queries.PAGE_SIZE]
    next_url = (
        accounts.with_account(
            str(URL("/ui/rejected").with_query(before=str(rows[-1]["rejected_id"]))),
            accounts.selected_account(request),
        )
        if more
        else None
    )
    return aiohttp_jinja2.render_template(
        "rejected.html",
        request,
        page_context(
            request,
            title="Rejected events",
            rows=rows,
            next_url=next_url,
            paged=before is not None,
            preview_bytes=queries.RAW_PREVIEW_BYTES,
        ),
    )


async def to_index(request: web.Request) -> web.StreamResponse:
    return redirect("/ui/")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/ui", to_index)
    router.add_get("/ui/", overview)
    router.add_get("/ui/login", login_form)
    router.add_post("/ui/login", login_submit)
    router.add_post("/ui/logout", logout)
    router.add_get("/ui/executions", executions)
    router.add_get("/ui/executions/{sid}", execution)
    router.add_post("/ui/executions/{sid}/backfill", backfill_now)
    router.add_get("/ui/backfill/{request_id}.json", backfill_status)
    router.add_get("/ui/flows/{flow_sid}/revisions/{revision}", revision)
    router.add_get("/ui/rejected", rejected)
    add_flow_routes(router)
