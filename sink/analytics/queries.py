"""Typed readers of the flow analytics contract (``docs/analytics.md``).

Each function runs one named query of ``sql/queries/analytics.sql`` against the consumer
objects in schema ``studio`` and returns frozen dataclasses. Times are ``timestamptz``;
``since`` is rounded down and ``until`` up to whole UTC hours by the SQL (the rollup's
bucket). Subflow steps are never mixed into a flow's graph: ``subflow_stats`` has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sink.db.pool import Conn
from sink.db.queries import query
from sink.jsontext import loads


@dataclass(frozen=True, slots=True)
class TransitionStat:
    """One edge of the flow graph: (transitioned_from → transitioned_to) in one revision."""

    flow_revision: int | None
    transitioned_from: str | None
    transitioned_to: str | None
    events: list[str]  # the event names seen on this edge (e.g. ["match"]), sorted
    transitions: int
    executions: int  # distinct executions whose first such transition is in the range
    median_seconds: float | None  # time spent in transitioned_from before the transition
    p90_seconds: float | None


@dataclass(frozen=True, slots=True)
class WidgetStat:
    """One widget of one revision."""

    flow_revision: int | None
    widget: str
    widget_type: str | None  # from the revision's definition; None when not fetched
    entered: int  # distinct executions that were in the widget
    exits: dict[str, int]  # destination widget (or "Ended") -> transitions
    ended_here: int  # executions that finished in this widget
    drop_off_share: float | None  # ended_here / entered
    median_seconds: float | None  # time in the widget before leaving it
    p90_seconds: float | None


@dataclass(frozen=True, slots=True)
class SubflowStat:
    """An edge inside a subflow, counted under the parent flow's widget that ran it."""

    subflow_widget: str
    transitioned_from: str | None
    transitioned_to: str | None
    events: list[str]
    transitions: int
    executions: int
    median_seconds: float | None
    p90_seconds: float | None


@dataclass(frozen=True, slots=True)
class FunnelStep:
    step: int  # 1-based position in the widget list
    widget: str
    executions: int  # executions that reached this widget after all the previous ones
    conversion: float | None  # executions / the previous step's executions (1.0 for step 1)


@dataclass(frozen=True, slots=True)
class FlowOutcome:
    """A flow's executions of one revision that started on one UTC day."""

    flow_sid: str
    flow_revision: int | None
    day: date
    executions: int
    ended: int
    active: int
    stuck: int  # active, and nothing happened for longer than studio.stuck_after
    completion_rate: float | None  # ended / executions
    by_ended_reason: dict[str, int]


@dataclass(frozen=True, slots=True)
class FlowOverview:
    """One line of the flows list: every flow seen in executions."""

    flow_sid: str
    friendly_name: str | None  # from the fetched flow; None before a backfill fetched it
    executions_24h: int
    executions_7d: int
    completion_rate_7d: float | None  # ended / started, executions of the last 7 days
    stuck_share_7d: float | None  # stuck / started, executions of the last 7 days
    last_execution_at: datetime | None


def _json(value: Any) -> Any:
    return loads(value) if isinstance(value, str | bytes) else value


async def transition_stats(
    conn: Conn, flow_sid: str, since: datetime, until: datetime, revision: int | None = None
) -> list[TransitionStat]:
    """``studio.transition_stats``: every edge, by revision (all revisions when None)."""
    rows = await conn.fetch(query("analytics_transition_stats"), flow_sid, since, until, revision)
    return [
        TransitionStat(
            r["flow_revision"],
            r["transitioned_from"],
            r["transitioned_to"],
            list(r["events"]),
            r["transitions"],
            r["executions"],
            r["median_seconds"],
            r["p90_seconds"],
        )
        for r in rows
    ]


async def widget_stats(
    conn: Conn, flow_sid: str, since: datetime, until: datetime, revision: int | None = None
) -> list[WidgetStat]:
    """``studio.widget_stats``: every widget, by revision (all revisions when None)."""
    rows = await conn.fetch(query("analytics_widget_stats"), flow_sid, since, until, revision)
    return [
        WidgetStat(
            r["flow_revision"],
            r["widget"],
            r["widget_type"],
            r["entered"],
            {str(k): int(v) for k, v in _json(r["exits"]).items()},
            r["ended_here"],
            r["drop_off_share"],
            r["median_seconds"],
            r["p90_seconds"],
        )
        for r in rows
    ]


async def subflow_stats(
    conn: Conn, flow_sid: str, since: datetime, until: datetime
) -> list[SubflowStat]:
    """``studio.subflow_stats``: the edges of subflows run by this flow's widgets."""
    rows = await conn.fetch(query("analytics_subflow_stats"), flow_sid, since, until)
    return [
        SubflowStat(
            r["subflow_widget"],
            r["transitioned_from"],
            r["transitioned_to"],
            list(r["events"]),
            r["transitions"],
            r["executions"],
            r["median_seconds"],
            r["p90_seconds"],
        )
        for r in rows
    ]


async def flow_funnel(
    conn: Conn, flow_sid: str, widgets: list[str], since: datetime, until: datetime
) -> list[FunnelStep]:
    """``studio.flow_funnel``: executions started in the range reaching each widget in order."""
    rows = await conn.fetch(query("analytics_flow_funnel"), flow_sid, widgets, since, until)
    return [FunnelStep(r["step"], r["widget"], r["executions"], r["conversion"]) for r in rows]


async def flow_outcomes(conn: Conn, flow_sid: str, since: date, until: date) -> list[FlowOutcome]:
    """``studio.flow_outcomes`` for one flow, days in [since, until), oldest first."""
    rows = await conn.fetch(query("analytics_flow_outcomes"), flow_sid, since, until)
    return [
        FlowOutcome(
            r["flow_sid"],
            r["flow_revision"],
            r["day"],
            r["executions"],
            r["ended"],
            r["active"],
            r["stuck"],
            r["completion_rate"],
            {str(k): int(v) for k, v in _json(r["by_ended_reason"]).items()},
        )
        for r in rows
    ]


async def flows_overview(conn: Conn) -> list[FlowOverview]:
    """Every flow seen, busiest in the last 7 days first (``studio.flows_overview``)."""
    rows = await conn.fetch(query("analytics_flows_overview"))
    return [
        FlowOverview(
            r["flow_sid"],
            r["friendly_name"],
            r["executions_24h"],
            r["executions_7d"],
            r["completion_rate_7d"],
            r["stuck_share_7d"],
            r["last_execution_at"],
        )
        for r in rows
    ]
