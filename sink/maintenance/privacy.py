"""Privacy jobs: erase a contact or an execution everywhere, expire old contexts, purge the
raw bytes of old rejected events (docs/privacy.md).

An erasure runs in one transaction: tombstones first (``sink.erased_executions``, which the
triggers of migration 0010 consult so that nothing stores the execution again), then the
deletes, then the audit row in ``sink.erasures``. A dry run does the same and rolls back, so
its counts are exact. Expiry and purge run in short batches that skip locked rows, so they
never wait for ingest nor make it wait.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from sink import jsontext
from sink.config import Settings
from sink.db.pool import Conn
from sink.db.queries import query
from sink.ingest.redact import Policy, contact_key, is_redacted, text_forms

log = logging.getLogger(__name__)

BATCH_ROWS: Final = 2000


class _DryRun(Exception):
    """Raised inside a dry run's transaction to roll it back."""


@dataclass(slots=True)
class ErasureReport:
    """What an erasure removed (or, with ``dry_run``, would remove), per table."""

    dry_run: bool
    erasure_id: int | None = None
    removed: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{table}: {verb} {n}" for table, n in self.removed.items()]
        if self.erasure_id is not None:
            out.append(f"recorded as erasure {self.erasure_id} in studio.erasures")
        return out


@dataclass(frozen=True, slots=True)
class _Subject:
    kind: str  # 'contact' | 'execution'
    contact_hmac: str | None
    execution_sids: list[str]
    stored_forms: list[str]  # exact values a contact column may hold
    text_forms: list[str]  # substrings that betray the subject in raw text


async def forget_contact(
    conn: Conn, address: str, policy: Policy, *, requested_by: str, dry_run: bool = False
) -> ErasureReport:
    """Erase every execution of ``address`` (stored plain, hashed or masked) and every copy
    of the address: raw events, steps, contexts, rejected events, backfill items."""
    stored = policy.stored_forms(address)
    texts = [*text_forms(address), *stored[1:]]
    hmac_of = contact_key(address, policy.key) if policy.key else None

    async def subject() -> _Subject:
        rows = await conn.fetch(query("executions_of_contact"), stored)
        sids = sorted(r["execution_sid"] for r in rows)
        return _Subject("contact", hmac_of, sids, stored, texts)

    return await _erase(conn, subject, requested_by=requested_by, dry_run=dry_run)


async def forget_execution(
    conn: Conn, execution_sid: str, policy: Policy, *, requested_by: str, dry_run: bool = False
) -> ErasureReport:
    """Erase one execution: its typed rows, contexts, raw events, backfill items, and the
    rejected events that name it. Other executions of the same contact stay."""

    async def subject() -> _Subject:
        contact = await conn.fetchval(query("contact_of_execution"), execution_sid)
        hmac_of = None
        if contact is not None and contact.startswith("h:") and is_redacted(contact):
            hmac_of = contact
        elif contact is not None and policy.key and not is_redacted(contact):
            hmac_of = contact_key(contact, policy.key)
        return _Subject("execution", hmac_of, [execution_sid], [], [execution_sid])

    return await _erase(conn, subject, requested_by=requested_by, dry_run=dry_run)


async def _erase(
    conn: Conn,
    subject_of: Callable[[], Awaitable[_Subject]],
    *,
    requested_by: str,
    dry_run: bool,
) -> ErasureReport:
    report = ErasureReport(dry_run=dry_run)
    try:
        async with conn.transaction():
            subject = await subject_of()
            erasure_id = await conn.fetchval(
                query("insert_erasure"),
                requested_by,
                subject.kind,
                subject.contact_hmac,
                subject.execution_sids[0] if subject.kind == "execution" else None,
            )
            await conn.execute(query("insert_tombstones"), subject.execution_sids, erasure_id)
            report.removed = await _delete(conn, subject)
            await conn.execute(
                query("set_erasure_counts"), erasure_id, jsontext.dumps(report.removed)
            )
            if dry_run:
                raise _DryRun
            report.erasure_id = erasure_id
    except _DryRun:
        pass
    if not dry_run:
        log.info(
            "erasure %s (%s, by %s): %s",
            report.erasure_id,
            subject.kind,
            requested_by,
            ", ".join(f"{t} {n}" for t, n in report.removed.items()),
        )
    return report


def _like(forms: list[str]) -> list[str]:
    escaped = (f.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for f in forms)
    return [f"%{f}%" for f in escaped]


async def _delete(conn: Conn, subject: _Subject) -> dict[str, int]:
    sids = subject.execution_sids
    likes = _like(subject.text_forms) if subject.kind == "contact" else []
    removed = {
        "steps": await conn.fetchval(query("erase_steps"), sids),
        "executions": await conn.fetchval(query("erase_executions"), sids),
        "events": await conn.fetchval(query("erase_events"), sids, subject.stored_forms, likes),
        "backfill_items": await conn.fetchval(query("erase_backfill_items"), sids),
        "rejected_events": await conn.fetchval(
            query("erase_rejected"), [f.encode("utf-8") for f in subject.text_forms]
        ),
        "quarantine": await conn.fetchval(
            query("erase_quarantined"), [f.encode("utf-8") for f in subject.text_forms]
        ),
    }
    if likes:  # copies of the address in other executions' contexts (an HTTP widget's answer)
        removed["other_execution_contexts"] = await conn.fetchval(
            query("clear_execution_contexts_naming"), likes
        )
        removed["other_step_contexts"] = await conn.fetchval(
            query("clear_step_contexts_naming"), likes
        )
    return {table: int(n) for table, n in removed.items()}


# --- retention of contexts and rejected raw bytes ------------------------------------


@dataclass(slots=True)
class ExpiryReport:
    execution_contexts: int = 0
    step_contexts: int = 0
    rejected_raw: int = 0

    def lines(self) -> list[str]:
        return [
            f"contexts expired: {self.execution_contexts} execution, {self.step_contexts} step",
            f"rejected events' raw bytes purged: {self.rejected_raw}",
        ]

    @property
    def any(self) -> bool:
        return bool(self.execution_contexts or self.step_contexts or self.rejected_raw)


async def _batches(conn: Conn, sql: str, days: int, batch_rows: int) -> int:
    """Run ``sql`` (cutoff, limit) in short transactions until it finds no more."""
    cutoff = await conn.fetchval(query("typed_cutoff"), days)
    total = 0
    while True:
        n: int = await conn.fetchval(sql, cutoff, batch_rows)
        total += n
        if n < batch_rows:
            return total


async def expire(
    conn: Conn,
    *,
    context_retention_days: int | None,
    rejected_retention_days: int | None,
    batch_rows: int = BATCH_ROWS,
) -> ExpiryReport:
    """Null contexts older than ``context_retention_days`` (recording context_expired_at;
    typed rows stay) and empty rejected raw bytes older than ``rejected_retention_days``."""
    report = ExpiryReport()
    if context_retention_days is not None:
        days = context_retention_days
        report.execution_contexts = await _batches(
            conn, query("expire_execution_contexts"), days, batch_rows
        )
        report.step_contexts = await _batches(conn, query("expire_step_contexts"), days, batch_rows)
    if rejected_retention_days is not None:
        report.rejected_raw = await _batches(
            conn, query("purge_rejected_raw"), rejected_retention_days, batch_rows
        )
    return report


async def expire_for(conn: Conn, settings: Settings) -> ExpiryReport:
    """``expire`` with the retention settings (the maintenance schedule's call), logged."""
    report = await expire(
        conn,
        context_retention_days=settings.context_retention_days,
        rejected_retention_days=settings.rejected_retention_days,
    )
    if report.any:
        log.info("privacy: %s", "; ".join(report.lines()))
    return report
