"""The Event Streams REST API (Events v1), as far as setting up a webhook sink needs it.

Paths, form parameters and answers follow Twilio's spec (``twilio_events_v1.yaml``):
``/v1/Sinks`` (``SinkType``, ``SinkConfiguration`` as JSON, ``Description``),
``/v1/Sinks/{Sid}/Test``, ``/v1/Sinks/{Sid}/Validate`` (``TestId``),
``/v1/Subscriptions`` (``SinkSid``, ``Types`` repeated, each a JSON object),
``/v1/Subscriptions/{Sid}/SubscribedEvents[/{Type}]`` (``Type``, ``SchemaVersion``),
``/v1/Types/{Type}`` and ``/v1/Schemas/{Id}/Versions``. Lists are paged by
``meta.next_page_url``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote

import aiohttp

from sink.accounts.model import Account, RestCredential
from sink.connect.client import CredentialsRefused, RestClient, RetryPolicy, account_name
from sink.connect.plan import SinkState, SubscriptionState, webhook_configuration

PAGE_SIZE = "100"
SINK_DESCRIPTION = "studio-sink"
SUBSCRIPTION_DESCRIPTION = "studio-sink: Studio flow events"


def _sink(item: dict[str, object]) -> SinkState:
    configuration = item.get("sink_configuration")
    if isinstance(configuration, str):  # "encoded as JSON", says the spec: either form
        try:
            configuration = json.loads(configuration)
        except ValueError:
            configuration = None
    return SinkState(
        sid=str(item.get("sid") or ""),
        description=str(item.get("description") or ""),
        sink_type=str(item.get("sink_type") or ""),
        status=str(item.get("status") or ""),
        configuration=configuration if isinstance(configuration, dict) else {},
    )


class EventsApi:
    """One account's Event Streams configuration, through one working credential."""

    def __init__(self, client: RestClient) -> None:
        self.client = client

    @property
    def credential(self) -> RestCredential:
        return self.client.credential

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        base_url: str,
        account: Account,
        credentials: Iterable[RestCredential],
        *,
        policy: RetryPolicy | None = None,
    ) -> tuple[EventsApi, list[SinkState]]:
        """The API with the first credential Twilio accepts, and the account's sinks (the
        call that tries each). ``CredentialsRefused`` naming every credential when none
        is accepted, or when the account has none."""
        refused: list[CredentialsRefused] = []
        for credential in credentials:
            api = cls(
                RestClient(session, base_url, account, credential, api="Events API", policy=policy)
            )
            try:
                return api, await api.sinks()
            except CredentialsRefused as exc:
                refused.append(exc)
        if not refused:
            raise CredentialsRefused(
                f"account {account_name(account)} has no REST credentials: add api_key_sid and"
                f" api_key_secret (or auth_tokens) to [accounts.{account.sid}] in"
                " SINK_ACCOUNTS_FILE, or set SINK_TWILIO_API_KEY_SID / SINK_TWILIO_API_KEY_SECRET"
            )
        if len(refused) == 1:
            raise refused[0]
        raise CredentialsRefused(" ".join(str(exc) for exc in refused), status=refused[-1].status)

    async def sinks(self) -> list[SinkState]:
        found = self.client.pages("/v1/Sinks", "sinks", {"PageSize": PAGE_SIZE})
        return [_sink(item) async for item in found]

    async def create_sink(self, destination: str) -> SinkState:
        configuration = json.dumps(webhook_configuration(destination), separators=(",", ":"))
        created = await self.client.post(
            "/v1/Sinks",
            [
                ("Description", SINK_DESCRIPTION),
                ("SinkType", "webhook"),
                ("SinkConfiguration", configuration),
            ],
        )
        return _sink(created)

    async def test_sink(self, sink_sid: str) -> None:
        await self.client.post(f"/v1/Sinks/{sink_sid}/Test")

    async def validate_sink(self, sink_sid: str, test_id: str) -> str:
        answer = await self.client.post(f"/v1/Sinks/{sink_sid}/Validate", [("TestId", test_id)])
        return str(answer.get("result") or "")

    async def fetch_sink(self, sink_sid: str) -> SinkState:
        return _sink(await self.client.get(f"/v1/Sinks/{sink_sid}"))

    async def subscriptions(self, sink_sid: str) -> list[SubscriptionState]:
        params = {"SinkSid": sink_sid, "PageSize": PAGE_SIZE}
        found = []
        async for item in self.client.pages("/v1/Subscriptions", "subscriptions", params):
            sid = str(item.get("sid") or "")
            if item.get("sink_sid") not in (None, sink_sid) or not sid:
                continue
            types = {}
            path = f"/v1/Subscriptions/{sid}/SubscribedEvents"
            async for event in self.client.pages(path, "types", {"PageSize": PAGE_SIZE}):
                version = event.get("schema_version")
                if isinstance(event.get("type"), str):
                    types[str(event["type"])] = version if isinstance(version, int) else 0
            found.append(SubscriptionState(sid, str(item.get("description") or ""), types))
        return found

    async def current_versions(self, event_types: Iterable[str]) -> dict[str, int]:
        """Each type's latest schema version, as the API tells: the type's ``schema_id``,
        then the highest ``schema_version`` among that schema's versions."""
        latest: dict[str, int] = {}
        by_schema: dict[str, int] = {}
        for event_type in event_types:
            found = await self.client.get(f"/v1/Types/{quote(event_type, safe='')}")
            schema_id = str(found.get("schema_id") or "")
            if schema_id not in by_schema:
                path = f"/v1/Schemas/{quote(schema_id, safe='')}/Versions"
                versions = [
                    v["schema_version"]
                    async for v in self.client.pages(path, "schema_versions", {"PageSize": "50"})
                    if isinstance(v.get("schema_version"), int)
                ]
                by_schema[schema_id] = max(versions, default=1)
            latest[event_type] = by_schema[schema_id]
        return latest

    async def create_subscription(self, sink_sid: str, versions: dict[str, int]) -> str:
        types = [
            ("Types", json.dumps({"type": name, "schema_version": version}))
            for name, version in versions.items()
        ]
        created = await self.client.post(
            "/v1/Subscriptions",
            [("Description", SUBSCRIPTION_DESCRIPTION), ("SinkSid", sink_sid), *types],
        )
        return str(created.get("sid") or "")

    async def add_type(self, subscription_sid: str, event_type: str, version: int) -> None:
        await self.client.post(
            f"/v1/Subscriptions/{subscription_sid}/SubscribedEvents",
            [("Type", event_type), ("SchemaVersion", str(version))],
        )

    async def update_type(self, subscription_sid: str, event_type: str, version: int) -> None:
        await self.client.post(
            f"/v1/Subscriptions/{subscription_sid}/SubscribedEvents/{quote(event_type, safe='')}",
            [("SchemaVersion", str(version))],
        )
