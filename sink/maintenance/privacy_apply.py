"""``studio-sink privacy apply``: rewrite what is stored as the current privacy settings
store new data (docs/privacy.md). Batch by batch, each its own short transaction, with
progress; idempotent, so an interrupted run is simply run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sink import jsontext
from sink.db.pool import Conn
from sink.db.queries import query
from sink.ingest.arrays import _raw_text as raw_text
from sink.ingest.redact import KEEP, Policy
from sink.maintenance.privacy import BATCH_ROWS


@dataclass(slots=True)
class ApplyReport:
    contacts: int = 0
    execution_contexts: int = 0
    step_contexts: int = 0
    events: int = 0
    rejected_events: int = 0
    quarantined_removed: int = 0

    def lines(self) -> list[str]:
        return [
            f"rewritten: {self.contacts} execution contacts, {self.execution_contexts}"
            f" execution contexts, {self.step_contexts} step contexts, {self.events} raw"
            f" events, {self.rejected_events} rejected events",
            f"removed: {self.quarantined_removed} quarantined deliveries naming a contact"
            " (a rewritten body would no longer match its signature, so it could never be"
            " retried)",
        ]


Progress = Callable[[str, int], object]


async def apply(
    conn: Conn, policy: Policy, *, batch_rows: int = BATCH_ROWS, progress: Progress | None = None
) -> ApplyReport:
    """Rewrite stored data as ``policy`` stores new data: contacts hashed or masked, context
    paths redacted, raw events and rejected bytes redacted. Idempotent; batch by batch,
    each batch its own short transaction; ``progress(table, rows_read)`` after each."""
    report = ApplyReport()
    tick = progress or (lambda table, n: None)
    if policy.mode != "keep":
        report.contacts = await _apply_contacts(conn, policy, batch_rows, tick)
    if policy.active:
        executions = (
            "execution contexts",
            query("execution_contexts_batch"),
            query("rewrite_execution_contexts"),
        )
        steps = ("step contexts", query("step_contexts_batch"), query("rewrite_step_contexts"))
        report.execution_contexts = await _apply_contexts(
            conn, policy, executions, batch_rows, tick
        )
        report.step_contexts = await _apply_contexts(conn, policy, steps, batch_rows, tick)
    if policy.mode != "keep":
        report.events = await _apply_events(conn, policy, batch_rows, tick)
        report.rejected_events = await _apply_rejected(conn, policy, batch_rows, tick)
        report.quarantined_removed = await _remove_quarantined(conn, policy, batch_rows, tick)
    return report


async def _apply_contacts(conn: Conn, policy: Policy, batch_rows: int, tick: Progress) -> int:
    after, total = "", 0
    while rows := await conn.fetch(query("plain_contacts_batch"), after, batch_rows):
        sids = [r["execution_sid"] for r in rows]
        contacts = [policy.contact(r["contact_channel_address"]) for r in rows]
        await conn.execute(query("set_contacts"), sids, contacts)
        total += len(rows)
        after = sids[-1]
        tick("executions", len(rows))
    return total


async def _apply_contexts(
    conn: Conn, policy: Policy, names: tuple[str, str, str], batch_rows: int, tick: Progress
) -> int:
    """Contexts rewritten; ``names``: (progress label, batch query, rewrite query)."""
    label, select, rewrite = names
    after, total = "", 0
    while rows := await conn.fetch(select, after, batch_rows):
        changed: list[tuple[str, str]] = []
        for row in rows:
            redacted = jsontext.dumps(policy.context(jsontext.loads(row["context"])))
            if redacted != jsontext.dumps(jsontext.loads(row["context"])):
                changed.append((row["sid"], redacted))
        if changed:
            sids, texts = zip(*changed, strict=True)
            await conn.execute(rewrite, list(sids), list(texts))
        total += len(changed)
        after = rows[-1]["sid"]
        tick(label, len(rows))
    return total


def _redacted_json(policy: Policy, text: str | None) -> str | None:
    if text is None:
        return None
    return jsontext.dumps(policy.json_value(jsontext.loads(text)))


async def _apply_events(conn: Conn, policy: Policy, batch_rows: int, tick: Progress) -> int:
    after: tuple[Any, Any, Any] = (None, None, None)
    total = 0
    while rows := await conn.fetch(query("events_batch"), *after, batch_rows):
        changed: list[list[Any]] = []
        for row in rows:
            data = _redacted_json(policy, row["data"])
            extensions = _redacted_json(policy, row["extensions"])
            if data != _redacted_json(KEEP, row["data"]) or extensions != _redacted_json(
                KEEP, row["extensions"]
            ):
                changed.append(
                    [row["received_at"], row["source"], row["event_id"], data, extensions]
                )
        if changed:
            await conn.execute(query("rewrite_events"), *map(list, zip(*changed, strict=True)))
        total += len(changed)
        last = rows[-1]
        after = (last["received_at"], last["source"], last["event_id"])
        tick("events", len(rows))
    return total


async def _apply_rejected(conn: Conn, policy: Policy, batch_rows: int, tick: Progress) -> int:
    after, total = 0, 0
    while rows := await conn.fetch(query("rejected_batch"), after, batch_rows):
        ids, raws, texts = [], [], []
        for row in rows:
            raw = policy.raw(bytes(row["raw"]))
            if raw != bytes(row["raw"]):
                ids.append(row["rejected_id"])
                raws.append(raw)
                texts.append(raw_text(raw))
        if ids:
            await conn.execute(query("rewrite_rejected"), ids, raws, texts)
        total += len(ids)
        after = rows[-1]["rejected_id"]
        tick("rejected events", len(rows))
    return total


async def _remove_quarantined(conn: Conn, policy: Policy, batch_rows: int, tick: Progress) -> int:
    """Quarantined bodies are raw and signed: they cannot be redacted and stay retryable."""
    after, total = 0, 0
    while rows := await conn.fetch(query("quarantined_batch"), after, batch_rows):
        ids = [r["quarantine_id"] for r in rows if policy.raw(bytes(r["body"])) != r["body"]]
        if ids:
            total += await conn.fetchval(query("remove_quarantined"), ids)
        after = rows[-1]["quarantine_id"]
        tick("quarantined deliveries", len(rows))
    return total
