"""The flow pages: every flow seen, and one flow drawn as Studio's canvas with its traffic.

``/ui/flows`` lists the flows; ``/ui/flows/{FW...}`` draws a revision (``?revision=``) over a
time range (``?range=``) with ``sink.ui.canvas``; ``/ui/flows/{FW...}/widget.json?name=`` is
what the widget panel shows (fetched by app.js on a click); ``POST /ui/flows/{FW...}/fetch``
queues a backfill of the flow's definitions ("fetch the definition").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp_jinja2
import asyncpg
from aiohttp import web
from yarl import URL

from sink import jsontext
from sink.analytics import queries as analytics
from sink.twilio import is_sid
from sink.ui import accounts, queries
from sink.ui.canvas import Canvas, Transition, WidgetStats, draw
from sink.ui.login import page_context, redirect, requires_login
from sink.web.keys import POOL

RANGES: Final = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_RANGE: Final = "7d"
ALL_REVISIONS: Final = "all"
MAX_WIDGET_NAME: Final = 512


@requires_login
async def flows(request: web.Request) -> web.StreamResponse:
    async with request.app[POOL].acquire() as conn:
        choice = await accounts.load(conn, request)
        rows = await queries.flows(conn, choice.selected)
    return aiohttp_jinja2.render_template(
        "flows.html", request, page_context(request, title="Flows", rows=rows)
    )


def _flow_sid(request: web.Request) -> str:
    sid = request.match_info["flow_sid"]
    if not is_sid(sid, "FW"):
        raise web.HTTPNotFound(text=f"{sid[:40]!r} is not a Flow SID (FW + 32 hex digits)")
    return sid


def _range(request: web.Request) -> str:
    chosen = request.query.get("range", DEFAULT_RANGE)
    if chosen not in RANGES:
        raise web.HTTPBadRequest(
            text=f"range must be one of {', '.join(RANGES)} (got {chosen[:20]!r})"
        )
    return chosen


def _revision(request: web.Request, known: list[asyncpg.Record]) -> int | None:
    """The revision asked for (None: all), else the newest an execution ran, else the newest."""
    asked = request.query.get("revision", "")
    if asked == ALL_REVISIONS:
        return None
    if asked:
        if not asked.isdigit() or len(asked) > 9:
            raise web.HTTPBadRequest(
                text=f"revision must be a number or 'all' (got {asked[:20]!r})"
            )
        return int(asked)
    ran = [r["revision"] for r in known if r["ran"]] or [r["revision"] for r in known]
    return ran[0] if ran else None


def _window(flow_sid: str, range_name: str, revision: int | None) -> queries.FlowWindow:
    until = datetime.now(UTC)
    return queries.FlowWindow(flow_sid, until - RANGES[range_name], until, revision)


def _canvas(
    definition: Any,
    transitions: list[analytics.TransitionStat],
    widgets: list[analytics.WidgetStat],
) -> Canvas:
    observed = [
        Transition(
            source=t.transitioned_from or "",
            target=t.transitioned_to or "",
            events=tuple(e for e in t.events if e),
            count=t.transitions,
            median_seconds=t.median_seconds,
        )
        for t in transitions
    ]
    return draw(definition, observed, merge_widgets(widgets))


def merge_widgets(widgets: list[analytics.WidgetStat]) -> dict[str, WidgetStats]:
    """One entry per widget: with all revisions, the revisions' counts summed."""
    entered: dict[str, int] = {}
    ended: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for w in widgets:
        entered[w.widget] = entered.get(w.widget, 0) + w.entered
        ended[w.widget] = ended.get(w.widget, 0) + w.ended_here
        if w.widget_type:
            kinds[w.widget] = w.widget_type
    return {
        name: WidgetStats(
            entered=count,
            drop_off_share=ended[name] / count if count else None,
            widget_type=kinds.get(name),
        )
        for name, count in entered.items()
    }


@requires_login
async def flow(request: web.Request) -> web.StreamResponse:
    sid = _flow_sid(request)
    range_name = _range(request)
    async with request.app[POOL].acquire() as conn:
        about = await queries.flow(conn, sid)
        known = await queries.flow_revisions(conn, sid)
        if not known and not about["executions_seen"] and about["fetched_at"] is None:
            raise web.HTTPNotFound(text=f"flow {sid} is not in this sink's database")
        revision = _revision(request, known)
        window = _window(sid, range_name, revision)
        stored = (
            await queries.flow_definition(conn, sid, revision) if revision is not None else None
        )
        definition = jsontext.loads(stored) if isinstance(stored, str) else stored
        transitions = await queries.transition_stats(conn, window)
        widgets = await queries.widget_stats(conn, window)
        await accounts.load(conn, request)
    canvas = _canvas(definition, transitions, widgets)
    backfill = request.query.get("backfill", "")
    return aiohttp_jinja2.render_template(
        "flow.html",
        request,
        page_context(
            request,
            title=f"Flow {about['friendly_name'] or sid}",
            flow=about,
            revisions=[r["revision"] for r in known],
            revision=revision,
            range_name=range_name,
            ranges=list(RANGES),
            canvas=canvas,
            has_definition=definition is not None,
            executions=sum(n.entered for n in canvas.nodes if n.name == "Trigger"),
            backfill_id=int(backfill) if backfill.isdigit() else None,
            unavailable=request.query.get("notice") == "backfill_unavailable",
            widget_url=str(
                URL(f"/ui/flows/{sid}/widget.json").with_query(
                    range=range_name, revision=str(revision) if revision is not None else "all"
                )
            ),
        ),
    )


@requires_login
async def widget(request: web.Request) -> web.StreamResponse:
    """One widget's stats and the 20 latest executions that ended there, as JSON."""
    sid = _flow_sid(request)
    name = request.query.get("name", "")
    if not name or len(name) > MAX_WIDGET_NAME:
        return web.json_response(
            {"error": "bad_request", "message": "give the widget's name as ?name=..."}, status=400
        )
    range_name = _range(request)
    async with request.app[POOL].acquire() as conn:
        revision = _revision(request, await queries.flow_revisions(conn, sid))
        window = _window(sid, range_name, revision)
        stats = [w for w in await queries.widget_stats(conn, window) if w.widget == name]
        ended = await queries.ended_at_widget(conn, window, name)
    merged = merge_widgets(stats).get(name, WidgetStats())
    exits: dict[str, int] = {}
    for w in stats:
        for target, count in w.exits.items():
            exits[target] = exits.get(target, 0) + count
    one = stats[0] if len(stats) == 1 else None  # medians of revisions do not combine
    return web.json_response(
        {
            "widget": name,
            "widget_type": merged.widget_type,
            "entered": merged.entered,
            "ended_here": sum(w.ended_here for w in stats),
            "drop_off_share": merged.drop_off_share,
            "median_seconds": one.median_seconds if one is not None else None,
            "p90_seconds": one.p90_seconds if one is not None else None,
            "exits": exits,
            "executions": [
                {
                    "execution_sid": r["execution_sid"],
                    "status": r["status"],
                    "ended_reason": r["ended_reason"],
                    "date_created": r["date_created"].isoformat() if r["date_created"] else None,
                }
                for r in ended
            ],
        }
    )


@requires_login
async def fetch_definition(request: web.Request) -> web.StreamResponse:
    sid = _flow_sid(request)
    async with request.app[POOL].acquire() as conn:
        request_id = await queries.request_flows_backfill(conn, sid)
    return backfill_redirect(request, f"/ui/flows/{sid}", request_id)


def backfill_redirect(request: web.Request, page: str, request_id: int | None) -> web.Response:
    """Back to the page after queuing: with the request's ID, or a notice that it cannot be
    (and the account the page was showing)."""
    if request_id is None:
        back = URL(page).with_query(notice="backfill_unavailable")
    else:
        back = URL(page).with_query(backfill=str(request_id))
    return redirect(accounts.with_account(str(back), accounts.selected_account(request)))


def add_flow_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/ui/flows", flows)
    router.add_get("/ui/flows/{flow_sid}", flow)
    router.add_get("/ui/flows/{flow_sid}/widget.json", widget)
    router.add_post("/ui/flows/{flow_sid}/fetch", fetch_definition)
