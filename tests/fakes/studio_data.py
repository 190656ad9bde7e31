"""In-memory state of the fake Studio v2 API: data, switchable faults, a request log.

Plain Python, no aiohttp: ``tests/fakes/studio_api.py`` serves it. Resource fields
follow ``shared/specs/twilio_studio_v2.yaml``; ``legacy_shape=True`` serves the seed
spec's (v1.27.0) shape instead (no initiated_by/flow_version/contact_sid on
executions, no parent_step_sid/type on steps).

Several Twilio accounts: the fake starts with one (``account_sid``, ``credentials``);
``add_account`` adds more. Each account accepts its own credentials (``accept`` changes
them: a token rotation, a revoked key), and each flow (with its executions and steps)
belongs to one account: only that account's credentials are served it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(2019, 5, 10, 20, 51, 29, tzinfo=UTC)


def _second(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


@dataclass
class FlowRevision:
    revision: int
    friendly_name: str
    definition: dict[str, Any]
    status: str = "published"
    commit_message: str | None = None
    valid: bool = True
    errors: list[Any] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)
    date_created: datetime = EPOCH
    date_updated: datetime | None = None


@dataclass
class Flow:
    sid: str
    account_sid: str
    author_sid: str
    revisions: list[FlowRevision]

    @property
    def latest(self) -> FlowRevision:
        return self.revisions[-1]

    def revision(self, ref: str) -> FlowRevision | None:
        if ref == "LatestRevision":
            return self.latest
        if ref == "LatestPublished":
            published = [r for r in self.revisions if r.status == "published"]
            return published[-1] if published else None
        return next((r for r in self.revisions if str(r.revision) == ref), None)


@dataclass
class Execution:
    sid: str
    account_sid: str
    flow_sid: str
    contact_channel_address: str | None
    status: str
    context: dict[str, Any]
    date_created: datetime
    date_updated: datetime | None
    flow_version: int | None = 1
    initiated_by: str | None = None
    contact_sid: str | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Step:
    sid: str
    account_sid: str
    flow_sid: str
    execution_sid: str
    name: str | None
    context: dict[str, Any]
    transitioned_from: str | None
    transitioned_to: str | None
    date_created: datetime
    date_updated: datetime | None = None
    parent_step_sid: str | None = None
    type: str | None = None


@dataclass
class Fault:
    """One injected error answer, consumed by the next matching request."""

    status: int
    retry_after: str | None = None
    endpoint: str | None = None  # route label; None matches every endpoint


@dataclass
class RequestRecord:
    endpoint: str | None  # route label, e.g. "executions"; None if no route matched
    method: str
    path: str
    query_string: str  # raw, as received (still percent-encoded)
    started: float  # time.monotonic()
    finished: float = 0.0
    status: int = 0
    account_sid: str | None = None  # whose credentials the request carried; None: nobody's
    username: str | None = None  # the basic-auth user it carried (an SID, never a secret)
    wrong_account: bool = False  # valid credentials of an account the resource is not of


@dataclass
class Account:
    """One Twilio account of the fake: the basic-auth pairs it accepts right now."""

    sid: str
    accepted: set[tuple[str, str]] = field(default_factory=set)


class FakeStudio:
    """A Twilio account's Studio data plus the knobs tests turn.

    Knobs: ``latency`` (seconds per request), ``inject(status, count, ...)``,
    ``mark_gone(sid)`` / ``expire_execution(sid)``, ``credentials`` (what the first
    account accepts), ``add_account`` and ``accept`` (several accounts, rotations).
    Counters: ``log`` (one ``RequestRecord`` per request), ``max_in_flight``,
    ``count(...)``, ``max_in_window(...)``.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        username: str | None = None,
        password: str = "fake-auth-token",
        legacy_shape: bool = False,
        account_sid: str | None = None,
    ) -> None:
        self._random = random.Random(seed)
        self.account_sid = account_sid or self.new_sid("AC")
        self.accounts: dict[str, Account] = {}
        self.add_account(self.account_sid, (username or self.account_sid, password))
        self.legacy_shape = legacy_shape
        self.flows: dict[str, Flow] = {}
        self.executions: dict[str, Execution] = {}
        self.steps: dict[str, Step] = {}
        self.gone: set[str] = set()
        self.latency = 0.0
        self.faults: deque[Fault] = deque()
        self.log: list[RequestRecord] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.on_request: Callable[[RequestRecord], None] | None = None  # before it is answered

    # -- accounts ----------------------------------------------------------------

    @property
    def credentials(self) -> tuple[str, str]:
        """A pair the first account accepts (the only one unless ``accept`` gave more)."""
        return min(self.accounts[self.account_sid].accepted)

    @credentials.setter
    def credentials(self, pair: tuple[str, str]) -> None:
        self.accept(self.account_sid, pair)

    def add_account(self, sid: str | None = None, *pairs: tuple[str, str]) -> Account:
        """A further account accepting ``pairs`` (username, password) for its resources."""
        account = Account(sid or self.new_sid("AC"), set(pairs))
        self.accounts[account.sid] = account
        return account

    def accept(self, account_sid: str, *pairs: tuple[str, str]) -> None:
        """From now on the account accepts exactly ``pairs``, as Twilio does after a token
        is created (old and new), promoted (the new alone) or a key revoked."""
        self.accounts[account_sid].accepted = set(pairs)

    def account_of(self, username: str, password: str) -> str | None:
        """The account those credentials authenticate, if any."""
        for account in self.accounts.values():
            if (username, password) in account.accepted:
                return account.sid
        return None

    # -- data --------------------------------------------------------------------

    def new_sid(self, prefix: str) -> str:
        return f"{prefix}{self._random.getrandbits(128):032x}"

    def add_flow(
        self,
        *,
        friendly_name: str = "Test Flow",
        definition: dict[str, Any] | None = None,
        status: str = "published",
        date_created: datetime = EPOCH,
        account_sid: str | None = None,
    ) -> Flow:
        account = account_sid or self.account_sid
        flow = Flow(self.new_sid("FW"), account, self.new_sid("US"), [])
        self.flows[flow.sid] = flow
        self.add_revision(flow, definition, status=status, friendly_name=friendly_name)
        flow.revisions[0].date_created = _second(date_created)
        return flow

    def add_revision(
        self,
        flow: Flow,
        definition: dict[str, Any] | None = None,
        *,
        status: str = "published",
        friendly_name: str | None = None,
        commit_message: str | None = None,
    ) -> FlowRevision:
        rev = FlowRevision(
            revision=len(flow.revisions) + 1,
            friendly_name=friendly_name or flow.latest.friendly_name,
            definition=definition or {"description": "A New Flow", "initial_state": "Trigger"},
            status=status,
            commit_message=commit_message,
            date_created=_second(datetime.now(UTC)) if flow.revisions else EPOCH,
        )
        flow.revisions.append(rev)
        return rev

    def add_execution(
        self,
        flow: Flow,
        *,
        date_created: datetime = EPOCH,
        status: str = "ended",
        context: dict[str, Any] | None = None,
        contact_channel_address: str | None = "+14155550100",
        sid: str | None = None,
    ) -> Execution:
        created = _second(date_created)
        execution = Execution(
            sid=sid or self.new_sid("FN"),
            account_sid=flow.account_sid,
            flow_sid=flow.sid,
            contact_channel_address=contact_channel_address,
            status=status,
            context=context if context is not None else {"flow": {"flow_sid": flow.sid}},
            date_created=created,
            date_updated=created if status == "active" else created + timedelta(seconds=5),
            flow_version=flow.latest.revision,
            initiated_by=self.new_sid("CA"),
            contact_sid=self.new_sid("FC"),
        )
        self.executions[execution.sid] = execution
        return execution

    def add_step(
        self,
        execution: Execution,
        *,
        name: str = "incomingRequest",
        transitioned_from: str = "Trigger",
        transitioned_to: str = "Ended",
        widget_type: str | None = "trigger",
        context: dict[str, Any] | None = None,
        date_created: datetime | None = None,
        parent_step_sid: str | None = None,
    ) -> Step:
        created = _second(date_created or execution.date_created + timedelta(seconds=1))
        step = Step(
            sid=self.new_sid("FT"),
            account_sid=execution.account_sid,
            flow_sid=execution.flow_sid,
            execution_sid=execution.sid,
            name=name,
            context=context if context is not None else {"widgets": {}},
            transitioned_from=transitioned_from,
            transitioned_to=transitioned_to,
            date_created=created,
            parent_step_sid=parent_step_sid,
            type=widget_type,
        )
        execution.steps.append(step)
        self.steps[step.sid] = step
        return step

    def populate(
        self,
        executions: int,
        steps: int = 0,
        *,
        flow: Flow | None = None,
        start: datetime = EPOCH,
        spacing: timedelta = timedelta(seconds=1),
    ) -> list[Execution]:
        """N executions (created ``spacing`` apart from ``start``) with M steps each."""
        flow = flow or self.add_flow()
        made = []
        for i in range(executions):
            execution = self.add_execution(flow, date_created=start + i * spacing)
            execution.context["trigger"] = {"request": {"n": i}}
            widgets = ["Trigger", *(f"widget_{j}" for j in range(1, steps)), "Ended"]
            for j in range(steps):
                self.add_step(
                    execution,
                    name="incomingRequest" if j == 0 else "next",
                    transitioned_from=widgets[j],
                    transitioned_to=widgets[j + 1],
                    widget_type="trigger" if j == 0 else "set-variables",
                    context={"widgets": {widgets[j]: {"n": j}}},
                )
            made.append(execution)
        return made

    def expire_execution(self, sid: str) -> None:
        """Forget an execution and its steps (Twilio's retention ran out): 404 from now on."""
        execution = self.executions.pop(sid)
        for step in execution.steps:
            self.steps.pop(step.sid, None)

    def mark_gone(self, sid: str) -> None:
        """Any request whose path names ``sid`` answers 404, whatever the data says."""
        self.gone.add(sid)

    # -- faults ------------------------------------------------------------------

    def inject(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | float | None = None,
        endpoint: str | None = None,
    ) -> None:
        """The next ``count`` matching requests answer ``status`` (e.g. 429, 503)."""
        header = None if retry_after is None else str(retry_after)
        self.faults.extend(Fault(status, header, endpoint) for _ in range(count))

    def take_fault(self, endpoint: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint is None or fault.endpoint == endpoint:
                self.faults.remove(fault)
                return fault
        return None

    # -- counters ----------------------------------------------------------------

    def count(
        self,
        endpoint: str | None = None,
        status: int | None = None,
        *,
        account_sid: str | None = None,
        username: str | None = None,
    ) -> int:
        return sum(
            1
            for r in self.log
            if (endpoint is None or r.endpoint == endpoint)
            and (status is None or r.status == status)
            and (account_sid is None or r.account_sid == account_sid)
            and (username is None or r.username == username)
        )

    def wrong_account_calls(self) -> int:
        """Requests refused (401) because valid credentials of one account asked for
        another account's resource: what a sink calling with the right account never does."""
        return sum(1 for r in self.log if r.wrong_account)

    def max_in_window(self, seconds: float = 1.0, endpoint: str | None = None) -> int:
        """Most requests that arrived within any ``seconds``-long window."""
        times = sorted(r.started for r in self.log if endpoint is None or r.endpoint == endpoint)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= seconds:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def reset_log(self) -> None:
        self.log.clear()
        self.max_in_flight = self.in_flight
