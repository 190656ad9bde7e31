"""Doing one backfill item: fetch from the Studio REST API, merge into Postgres.

``ItemWorker.run(item)`` returns when the item's data is stored and raises the client's
errors otherwise (``StudioGone``, ``StudioUnavailable``, ``StudioApiError``),
``UnknownFlow``, ``UnstorableContext``, ``WaitForCredentials`` (the account has no REST
credentials that work: Twilio refused every one, or there are none) or ``AccountUnknown``;
the runner (``sink.backfill``) turns those into queue states. Each item is fetched as its
account (``sink.backfill.accounts``): the stored execution's or flow's account, else the one
the item or its request names. REST resources are read in both spec
shapes (seed v1.27.0 and current): only ``sid`` is required; every other field is optional.

Contexts are stored with each NUL (U+0000) and lone UTF-16 surrogate replaced by U+FFFD
(``sink.jsontext.storable``): Postgres cannot store those characters, and an SMS can carry
them. A context Postgres still refuses is left out and named in ``UnstorableContext``, raised
after everything else of the execution is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import asyncpg

from sink import jsontext
from sink.backfill import account_rows
from sink.backfill import queue as q
from sink.backfill.accounts import Caller, Callers, WaitForCredentials
from sink.backfill.client import StudioClient, StudioCredentialsError, StudioGone
from sink.db.pool import is_bad_data
from sink.ingest.redact import KEEP, Policy
from sink.twilio import is_sid, optional_int, optional_text, optional_time

log = logging.getLogger(__name__)

LISTING_BATCH: Final = 1000  # executions merged and queued per statement
STEP_CONTEXT_CHUNK: Final = 100  # step contexts fetched concurrently, then written together


class UnknownFlow(Exception):
    """An execution SID whose flow is not stored: the REST API cannot be asked without it."""


class UnstorableContext(Exception):
    """Postgres refused fetched contexts for their content; the rest is stored."""

    def __init__(self, execution_sid: str, refused: Sequence[tuple[str, str]]) -> None:
        shown = "; ".join(f"{sid}: {reason}" for sid, reason in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        super().__init__(
            f"execution {execution_sid}: {len(refused)} context(s) not stored ({shown}{more});"
            " the rest of the execution is stored. Fetching again would be refused the same"
            " way: those contexts stay NULL"
        )


def execution_row(body: dict[str, Any], flow_sid: str) -> q.ExecutionRow | None:
    sid = body.get("sid")
    if not is_sid(sid, "FN"):
        return None
    return q.ExecutionRow(
        execution_sid=str(sid),
        flow_sid=flow_sid,
        account_sid=optional_text(body, "account_sid"),
        status="ended" if body.get("status") == "ended" else "active",
        contact_channel_address=optional_text(body, "contact_channel_address"),
        flow_revision=optional_int(body, "flow_version"),
        initiated_by=optional_text(body, "initiated_by"),
        date_created=optional_time(body, "date_created"),
        date_updated=optional_time(body, "date_updated"),
    )


def step_row(body: dict[str, Any], execution_sid: str, flow_sid: str) -> q.StepRow | None:
    sid = body.get("sid", body.get("step_sid"))
    if not is_sid(sid, "FT"):
        return None
    return q.StepRow(
        step_sid=str(sid),
        execution_sid=execution_sid,
        flow_sid=flow_sid,
        account_sid=optional_text(body, "account_sid"),
        name=optional_text(body, "name"),
        transitioned_from=optional_text(body, "transitioned_from"),
        transitioned_to=optional_text(body, "transitioned_to"),
        parent_step_sid=optional_text(body, "parent_step_sid"),
        widget_type=optional_text(body, "type"),
        date_created=optional_time(body, "date_created"),
        date_updated=optional_time(body, "date_updated"),
    )


def flow_row(body: dict[str, Any], flow_sid: str) -> q.FlowRow:
    valid = body.get("valid")
    return q.FlowRow(
        flow_sid=flow_sid,
        account_sid=optional_text(body, "account_sid"),
        friendly_name=optional_text(body, "friendly_name"),
        status=optional_text(body, "status"),
        revision=optional_int(body, "revision"),
        definition=body.get("definition"),
        commit_message=optional_text(body, "commit_message"),
        valid=valid if isinstance(valid, bool) else None,
        date_created=optional_time(body, "date_created"),
        date_updated=optional_time(body, "date_updated"),
    )


class ItemWorker:
    """Runs items against the Studio clients of their accounts and one pool; shared by a
    process's workers."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        callers: Callers,
        *,
        on_queued: Callable[[], None] | None = None,
        privacy: Policy = KEEP,
    ) -> None:
        self._privacy = privacy  # contacts and contexts redacted before they are stored
        self._pool = pool
        self._callers = callers
        self._on_queued = on_queued
        self._flows_lock = asyncio.Lock()
        self._flows_seen: set[tuple[str, int | None]] = set()

    async def run(self, item: q.Item) -> None:
        if item.kind == "flows" and item.flow_sid is None and item.account_sid is None:
            accounts = self._callers.fan_out()
            if accounts:  # every flow of several accounts: an item for each
                await self._fan_out(item, accounts)
                return
        caller = self._callers.caller(await self._account_of(item))
        try:
            await self._run_as(item, caller.client)
        except StudioCredentialsError as exc:
            await self._refused(caller, exc)
        except StudioGone:
            await self._worked(caller)  # a 404 is an answer: the credentials work
            raise
        await self._worked(caller)

    async def _run_as(self, item: q.Item, client: StudioClient) -> None:
        if item.kind == "flow_range":
            await self._flow_range(item, client)
        elif item.kind == "flows":
            await self._flows(item.flow_sid, client)
        else:
            await self._execution(item, client)

    # -- whose item, and its credentials ---------------------------------------------

    async def _account_of(self, item: q.Item) -> str | None:
        """The account to call as: what the stored rows say (the execution's, else the
        flow's: Twilio said so), else the one the item or its request names; None when
        nothing says."""
        execution = item.execution_sid if item.kind == "execution" else None
        async with self._pool.acquire() as conn:
            found = await account_rows.item_accounts(
                conn, execution, item.flow_sid, item.request_id
            )
        return found.execution or found.flow or item.account_sid or found.request

    async def _refused(self, caller: Caller, exc: StudioCredentialsError) -> None:
        """Every credential refused: the account is marked invalid and its items wait."""
        account = caller.account_sid
        self._callers.refused(account)
        reason = (
            f"{exc}. Account {account or '(the API key)'}: credentials_status 'invalid';"
            " its items wait until the accounts are reloaded (SIGHUP) or the sink restarts"
            " with credentials that work"
        )
        if account is not None:
            async with self._pool.acquire() as conn:
                parked = await account_rows.credentials_refused(conn, account, reason)
            log.error(
                "account %s: Twilio refused every REST credential; %d queued items wait: %s",
                account,
                parked,
                exc,
            )
        raise WaitForCredentials(account, reason) from None

    async def _worked(self, caller: Caller) -> None:
        """Twilio answered: ``sink.accounts`` says 'ok' (refreshed now and then)."""
        if self._callers.worked(caller.account_sid) and caller.account_sid is not None:
            async with self._pool.acquire() as conn:
                await account_rows.credentials_worked(conn, caller.account_sid)

    async def _fan_out(self, item: q.Item, accounts: list[str]) -> None:
        async with self._pool.acquire() as conn:
            await account_rows.fan_out_flows(conn, item.request_id, accounts)
        log.info(
            "backfill request %d: every flow of %d accounts, one item each",
            item.request_id,
            len(accounts),
        )
        if self._on_queued is not None:
            self._on_queued()

    # -- a flow and a time range ----------------------------------------------------

    async def _flow_range(self, item: q.Item, client: StudioClient) -> None:
        assert item.flow_sid is not None
        flow = item.flow_sid
        rows: list[q.ExecutionRow] = []
        listed = 0
        async for body in client.iter_executions(flow, date_from=item.since, date_to=item.until):
            row = execution_row(body, flow)
            if row is not None:
                rows.append(row)
            if len(rows) >= LISTING_BATCH:
                listed += await self._queue_listed(item.request_id, flow, rows)
                rows = []
        listed += await self._queue_listed(item.request_id, flow, rows)
        log.info("backfill request %d: listing queued %d executions", item.request_id, listed)

    async def _queue_listed(
        self, request_id: int, flow: str, rows: Sequence[q.ExecutionRow]
    ) -> int:
        if not rows:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            await q.merge_executions(conn, self._privacy.rows(rows))
            added = await q.enqueue_listed(conn, request_id, flow, [r.execution_sid for r in rows])
        if added and self._on_queued is not None:
            self._on_queued()
        return added

    # -- one execution --------------------------------------------------------------

    async def _execution(self, item: q.Item, client: StudioClient) -> None:
        sid = item.execution_sid
        assert sid is not None
        flow = item.flow_sid
        if flow is None:
            async with self._pool.acquire() as conn:
                flow = await q.flow_of(conn, sid)
        if flow is None:
            raise UnknownFlow(
                f"execution {sid} is not stored, so its flow is unknown and the REST API"
                " cannot be asked for it; backfill its flow and time range instead"
                " (studio.request_backfill('FW...', since, until))"
            )
        try:
            refused = await self._execution_and_context(item, sid, flow, client)
            await self._steps(sid, flow, client)
        except StudioGone:
            async with self._pool.acquire() as conn:
                await q.mark_execution_gone(conn, sid)
            raise
        refused += await self._step_contexts(sid, flow, client)
        if refused:
            raise UnstorableContext(sid, refused)

    async def _execution_and_context(
        self, item: q.Item, sid: str, flow: str, client: StudioClient
    ) -> list[tuple[str, str]]:
        """Stores the execution and its context; the context, if Postgres refused it."""
        row: q.ExecutionRow | None = None
        if item.listed:
            context = await client.fetch_execution_context(flow, sid)
        else:
            answers: list[Any] = await asyncio.gather(
                client.fetch_execution(flow, sid),
                client.fetch_execution_context(flow, sid),
                return_exceptions=True,
            )
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
            row, context = execution_row(answers[0], flow), answers[1]
        needs: q.FlowNeeds | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            if row is not None:
                await q.merge_executions(conn, self._privacy.rows([row]))
            try:
                needs = await q.set_execution_context(
                    conn, sid, self._privacy.context(context.get("context"))
                )
            except asyncpg.PostgresError as exc:
                if not is_bad_data(exc):
                    raise
                return [(sid, q.refusal(exc))]
            except jsontext.JsonError as exc:
                return [(sid, f"its context cannot be stored: {exc}")]
        if needs is not None:
            await self._ensure_flow(flow, needs, client)
        return []

    async def _steps(self, sid: str, flow: str, client: StudioClient) -> None:
        rows: list[q.StepRow] = []
        async for body in client.iter_steps(flow, sid):
            row = step_row(body, sid, flow)
            if row is not None:
                rows.append(row)
            if len(rows) >= LISTING_BATCH:
                await self._merge_steps(rows)
                rows = []
        await self._merge_steps(rows)

    async def _merge_steps(self, rows: Sequence[q.StepRow]) -> None:
        if rows:
            async with self._pool.acquire() as conn:
                await q.merge_steps(conn, rows)

    async def _step_contexts(
        self, sid: str, flow: str, client: StudioClient
    ) -> list[tuple[str, str]]:
        """Fetches and stores the contexts not stored yet; those Postgres refused."""
        async with self._pool.acquire() as conn:
            pending = await q.steps_without_context(conn, sid)
        refused: list[tuple[str, str]] = []
        for start in range(0, len(pending), STEP_CONTEXT_CHUNK):
            chunk = pending[start : start + STEP_CONTEXT_CHUNK]
            answers = await asyncio.gather(
                *(client.fetch_step_context(flow, sid, step) for step in chunk),
                return_exceptions=True,
            )
            found: list[tuple[str, Any]] = []
            gone: list[str] = []
            failure: BaseException | None = None
            for step, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, StudioGone):
                    gone.append(step)
                elif isinstance(answer, BaseException):
                    failure = failure or answer
                else:
                    found.append((step, self._privacy.context(answer.get("context"))))
            async with self._pool.acquire() as conn, conn.transaction():
                refused += await q.set_step_contexts(conn, found)
                await q.mark_steps_gone(conn, gone)
            if failure is not None:
                raise failure
        return refused

    # -- flows ------------------------------------------------------------------------

    async def _ensure_flow(self, flow: str, needs: q.FlowNeeds, client: StudioClient) -> None:
        """Fetch the flow and the execution's revision when they are not stored yet."""
        if needs.flow_known and (needs.revision is None or needs.revision_known):
            return
        async with self._flows_lock:
            if not needs.flow_known and (flow, None) not in self._flows_seen:
                try:
                    body = await client.fetch_flow(flow)
                except StudioGone:
                    log.info("flow %s is gone from the Studio API; not stored", flow)
                else:
                    async with self._pool.acquire() as conn:
                        await q.store_flow(conn, flow_row(body, flow))
                self._flows_seen.add((flow, None))
            revision = needs.revision
            if revision is None or needs.revision_known or (flow, revision) in self._flows_seen:
                return
            try:
                body = await client.fetch_flow_revision(flow, revision)
            except StudioGone:
                log.info("flow %s revision %d is gone from the Studio API", flow, revision)
            else:
                row = flow_row(body, flow)
                if row.revision is not None:
                    async with self._pool.acquire() as conn:
                        await q.store_revision(conn, row)
            self._flows_seen.add((flow, revision))

    async def _flows(self, flow_sid: str | None, client: StudioClient) -> None:
        """The flow (or every flow listed), its latest revision, and the revisions ran."""
        if flow_sid is not None:
            await self._store_flow(await client.fetch_flow(flow_sid), client)
            return
        stored = 0
        async for body in client.iter_flows():
            stored += await self._store_flow(body, client)
        log.info("flows backfill: %d flows stored", stored)

    async def _store_flow(self, body: dict[str, Any], client: StudioClient) -> int:
        sid = body.get("sid")
        if not is_sid(sid, "FW"):
            return 0
        flow = str(sid)
        row = flow_row(body, flow)
        async with self._pool.acquire() as conn:
            await q.store_flow(conn, row)
            if row.revision is not None and row.definition is not None:
                await q.store_revision(conn, row)
            missing = await q.missing_revisions(conn, flow)
        for revision in missing:
            try:
                answer = await client.fetch_flow_revision(flow, revision)
            except StudioGone:
                log.info("flow %s revision %d is gone from the Studio API", flow, revision)
                continue
            revision_row = flow_row(answer, flow)
            if revision_row.revision is not None:
                async with self._pool.acquire() as conn:
                    await q.store_revision(conn, revision_row)
        return 1
