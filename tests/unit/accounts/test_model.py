"""Which tokens verify a delivery, which credentials call the REST APIs, and the labels."""

from __future__ import annotations

from pydantic import SecretStr

from sink.accounts.load import load_accounts
from sink.accounts.model import OTHER_ACCOUNT, Account, Accounts
from sink.config import Settings

A = "AC" + "a" * 32
B = "AC" + "b" * 32
KEY = "SK" + "c" * 32


def account(sid: str, *tokens: str, **extra: object) -> Account:
    return Account(
        sid=sid, label=f"label-{sid[-1]}", auth_tokens=tuple(map(SecretStr, tokens)), **extra
    )  # type: ignore[arg-type]


def test_the_path_form_uses_that_accounts_tokens_alone() -> None:
    accounts = Accounts.of(
        [account(A, "a1", "a2"), account(B, "b1")], unbound_tokens=[SecretStr("u")]
    )
    assert accounts.signing_keys(A) == (b"a1", b"a2")
    assert accounts.signing_keys(B) == (b"b1",)
    assert accounts.signing_keys("AC" + "f" * 32) == ()
    assert set(accounts.signing_keys(None)) == {b"a1", b"a2", b"b1", b"u"}


def test_rest_credentials_prefer_the_api_key_then_each_token_in_order() -> None:
    accounts = Accounts.of(
        [account(A, "a1", "a2", api_key_sid=KEY, api_key_secret=SecretStr("k")), account(B, "b1")]
    )
    names = [
        (c.username, c.password.get_secret_value(), c.name) for c in accounts.rest_credentials(A)
    ]
    assert names == [
        (KEY, "k", f"API key {KEY}"),
        (A, "a1", "auth token 1 of 2"),
        (A, "a2", "auth token 2 of 2"),
    ]
    assert [c.name for c in accounts.rest_credentials(B)] == ["auth token"]
    assert accounts.rest_credentials("AC" + "f" * 32) == ()


def test_metric_labels_are_bounded_to_configured_accounts() -> None:
    accounts = Accounts.of([account(A, "a1")])
    assert accounts.metric_label(A) == "label-a"
    assert accounts.metric_label("AC" + "f" * 32) == OTHER_ACCOUNT
    assert accounts.metric_label(None) == OTHER_ACCOUNT


def test_rate_limit_is_the_accounts_own_or_the_default() -> None:
    accounts = Accounts.of([account(A, "a1", backfill_rate_limit=2.0), account(B, "b1")])
    assert (accounts.rate_limit(A, 10), accounts.rate_limit(B, 10)) == (2.0, 10)


def test_the_one_account_settings_keep_working() -> None:
    settings = Settings(
        twilio_account_sid=A,
        twilio_auth_token="t1,t2",  # type: ignore[arg-type]
        twilio_api_key_sid=KEY,
        twilio_api_key_secret=SecretStr("k"),
        _env_file=None,  # type: ignore[call-arg]
    )
    accounts = load_accounts(settings)
    assert accounts.signing_keys(A) == (b"t1", b"t2")
    assert [c.username for c in accounts.rest_credentials(A)] == [KEY, A, A]


def test_tokens_without_an_account_sid_verify_the_plain_form() -> None:
    settings = Settings(
        twilio_auth_token="t1",  # type: ignore[arg-type]
        twilio_api_key_sid=KEY,
        twilio_api_key_secret=SecretStr("k"),
    )
    accounts = load_accounts(settings)
    assert len(accounts) == 0
    assert accounts.signing_keys(None) == (b"t1",)
    # an API key without an Account SID serves whatever account an item belongs to
    assert [c.username for c in accounts.rest_credentials(B)] == [KEY]
