"""Token rotation in the Studio client, and the choice of an item's account's client.

The client runs over real HTTP against the fake Studio API, whose accepted credentials the
tests change as Twilio does when a token is created, promoted or revoked.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from sink.accounts.model import Account, Accounts, RestCredential
from sink.accounts.watch import AccountsHolder
from sink.backfill.accounts import AccountClients, AccountUnknown, WaitForCredentials
from sink.backfill.client import StudioClient, StudioCredentialsError
from sink.backfill.credentials import AccountCredentials
from sink.config import Settings
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import FakeStudio

ACME, BETA = "AC" + "a" * 32, "AC" + "b" * 32
OLD, NEW = "old-auth-token", "new-auth-token"
KEY = "SK" + "0" * 32


@pytest.fixture
def fake() -> FakeStudio:
    return FakeStudio(account_sid=ACME, password=OLD)


@pytest.fixture
async def base_url(fake: FakeStudio, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(create_app(fake))
    return str(server.make_url("")).rstrip("/")


def account(sid: str, *tokens: str, backfill_rate_limit: float | None = None) -> Account:
    secrets = tuple(SecretStr(token) for token in tokens)
    return Account(sid, sid[-4:], secrets, backfill_rate_limit=backfill_rate_limit)


@pytest.fixture
async def rotating(base_url: str) -> AsyncIterator[tuple[StudioClient, list[Account]]]:
    """A client over ACME's credentials as configured now (``configured[0]``)."""
    configured = [account(ACME, OLD, NEW)]
    source = AccountCredentials(ACME, lambda: configured[0].rest_credentials())
    client = StudioClient(base_url, source, rate_per_second=1000.0, backoff_base=0.001)
    yield client, configured
    await client.close()


async def test_a_refused_token_is_followed_by_the_next_which_is_then_preferred(
    fake: FakeStudio,
    rotating: tuple[StudioClient, list[Account]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, _ = rotating
    flow = fake.add_flow()
    assert (await client.fetch_flow(flow.sid))["sid"] == flow.sid  # OLD works
    assert [r.status for r in fake.log] == [200]

    fake.accept(ACME, (ACME, NEW))  # Twilio promotes NEW: OLD is refused from now on
    fake.reset_log()
    with caplog.at_level(logging.WARNING):
        assert (await client.fetch_flow(flow.sid))["sid"] == flow.sid
    assert [r.status for r in fake.log] == [401, 200]  # the same call, with the next token
    assert "auth token 2 of 2 works" in caplog.text and NEW not in caplog.text

    fake.reset_log()
    await client.fetch_flow(flow.sid)
    await client.fetch_flow(flow.sid)
    assert [r.status for r in fake.log] == [200, 200]  # NEW first: no refused call any more


async def test_every_token_refused_names_each_and_shows_none(
    fake: FakeStudio, rotating: tuple[StudioClient, list[Account]]
) -> None:
    client, _ = rotating
    flow = fake.add_flow()
    fake.accept(ACME, (ACME, "revoked-both"))
    with pytest.raises(StudioCredentialsError) as refused:
        await client.fetch_flow(flow.sid)
    message = str(refused.value)
    assert "refused every credential" in message and refused.value.status == 401
    assert "auth token 1 of 2: HTTP 401; auth token 2 of 2: HTTP 401" in message
    assert OLD not in message and NEW not in message
    assert fake.count(status=401) == 2


async def test_a_reload_is_seen_at_the_next_call_and_a_token_removed_is_forgotten(
    fake: FakeStudio, rotating: tuple[StudioClient, list[Account]]
) -> None:
    client, configured = rotating
    flow = fake.add_flow()
    fake.accept(ACME, (ACME, NEW))
    await client.fetch_flow(flow.sid)  # NEW remembered
    configured[0] = account(ACME, "newest", OLD)  # NEW left the configuration
    fake.accept(ACME, (ACME, "newest"))
    fake.reset_log()
    await client.fetch_flow(flow.sid)
    assert [r.status for r in fake.log] == [200]  # the configured order again: newest first


# -- which account's client ------------------------------------------------------------------


def clients(*accounts: Account, fallback: RestCredential | None = None) -> AccountClients:
    settings = Settings(backfill_rate_limit=7.0)
    holder = AccountsHolder.fixed(settings, Accounts.of(accounts, fallback=fallback))
    return AccountClients(settings, holder)


async def test_the_account_of_an_item_picks_its_client_and_rate() -> None:
    several = clients(account(ACME, OLD), account(BETA, NEW, backfill_rate_limit=3.0))
    try:
        acme, beta = several.caller(ACME), several.caller(BETA)
        assert (acme.account_sid, beta.account_sid) == (ACME, BETA)
        assert acme.client is not beta.client and several.caller(ACME).client is acme.client
        assert (acme.client.rate_limiter.rate, beta.client.rate_limiter.rate) == (7.0, 3.0)
        with pytest.raises(AccountUnknown, match="--account AC"):
            several.caller(None)  # never a guess between two accounts
        assert several.fan_out() == [ACME, BETA]
        with pytest.raises(WaitForCredentials, match=f"account {'AC' + 'c' * 32} has no REST"):
            several.caller("AC" + "c" * 32)  # not configured, and no API key for any account
    finally:
        await several.close()

    one = clients(account(BETA, NEW))
    try:
        assert one.caller(None).account_sid == BETA and one.fan_out() == []
    finally:
        await one.close()

    key = RestCredential(KEY, SecretStr("key-secret"), f"API key {KEY}")
    keyed = clients(fallback=key)  # SINK_TWILIO_API_KEY_SID without an Account SID
    try:
        assert keyed.caller(None).account_sid is None
        assert keyed.caller(ACME).account_sid == ACME  # the key serves any account
    finally:
        await keyed.close()
    with pytest.raises(WaitForCredentials, match="no REST credentials are configured"):
        clients().caller(None)


async def test_an_account_whose_credentials_were_refused_waits_until_a_reload(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.toml"
    table = f'[accounts.{ACME}]\nlabel = "acme"\nauth_tokens = ["{{}}"]\n'
    path.write_text(table.format(OLD), "utf-8")
    holder = AccountsHolder(Settings(accounts_file=path))
    several = AccountClients(Settings(accounts_file=path), holder)
    try:
        several.caller(ACME)
        several.refused(ACME)
        with pytest.raises(WaitForCredentials, match="refused every REST credential"):
            several.caller(ACME)
        assert several.worked(ACME) is True  # 'ok' to be written: it was not yet
        assert several.worked(ACME) is False  # ... and not again at once
        several.refused(ACME)
        path.write_text(table.format(NEW), "utf-8")
        assert holder.reload()
        assert several.caller(ACME).account_sid == ACME  # new credentials: tried again
    finally:
        await several.close()
