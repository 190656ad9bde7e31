"""The receiver's check with many accounts (``sink.web.verify``): the path form tries that
account's tokens alone, the plain form every token, and a valid check names the signer."""

from __future__ import annotations

import hashlib

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr

from sink.accounts.model import Account, Accounts
from sink.config import Settings
from sink.ingest import signature
from sink.maintenance.quarantine import KeptRequest
from sink.web.verify import account_in_path, check_signature, signed_url
from tests.support.twilio import sign

A = "AC" + "a" * 32
B = "AC" + "b" * 32
BODY = b"[]"
QUERY = f"bodySHA256={hashlib.sha256(BODY).hexdigest()}"
HOST = "sink.example.com"


def accounts(*, shared: bool = False, unbound: tuple[str, ...] = ()) -> Accounts:
    return Accounts.of(
        [
            Account(sid=A, label="acme", auth_tokens=(SecretStr("tok-a"), SecretStr("tok-a2"))),
            Account(sid=B, label="beta", auth_tokens=(SecretStr("tok-a" if shared else "tok-b"),)),
        ],
        unbound_tokens=[SecretStr(t) for t in unbound],
    )


def request(path: str, token: str, *, signed_as: str | None = None) -> KeptRequest:
    """A delivery to ``path`` signed with ``token`` for the URL Twilio was given."""
    url = f"https://{HOST}{signed_as or path}?{QUERY}"
    headers = CIMultiDictProxy(CIMultiDict({signature.SIGNATURE_HEADER: sign(url, token)}))
    return KeptRequest("https", HOST, f"{path}?{QUERY}", headers)


SETTINGS = Settings(twilio_auth_token="")


def test_the_path_form_takes_that_accounts_tokens_only() -> None:
    check = check_signature(request(f"/events/{A}", "tok-a2"), BODY, SETTINGS, accounts())
    assert (check.ok, check.account, check.key) == (True, A, 1)
    refused = check_signature(request(f"/events/{A}", "tok-b"), BODY, SETTINGS, accounts())
    assert (refused.ok, refused.reason) == (False, "bad_signature")
    assert f"auth token of account {A}" in refused.explanation
    # the same token on the plain form: B's, and B signed
    plain = check_signature(request("/events", "tok-b"), BODY, SETTINGS, accounts())
    assert (plain.ok, plain.account) == (True, B)


def test_a_token_that_is_no_single_accounts_names_no_signer() -> None:
    for listed, token in ((accounts(shared=True), "tok-a"), (accounts(unbound=("old",)), "old")):
        check = check_signature(request("/events", token), BODY, SETTINGS, listed)
        assert (check.ok, check.account) == (True, None)
    shared = check_signature(
        request(f"/events/{B}", "tok-a"), BODY, SETTINGS, accounts(shared=True)
    )
    assert (shared.ok, shared.account) == (True, B)  # the URL says which


@pytest.mark.parametrize(
    ("segment", "says"),
    [
        ("AC" + "c" * 32, "add [accounts.AC" + "c" * 32 + "]"),
        ("not-a-sid", "'not-a-sid', which is not an Account SID"),
        ("AC%20" + "c" * 31, "'AC " + "c" * 31 + "'"),
    ],
)
def test_an_account_not_configured_is_named_with_the_fix(segment: str, says: str) -> None:
    check = check_signature(request(f"/events/{segment}", "tok-a"), BODY, SETTINGS, accounts())
    assert (check.ok, check.reason) == (False, "unknown_account")
    assert says in check.explanation


def test_a_long_account_segment_is_shortened_in_the_message() -> None:
    check = check_signature(request(f"/events/{'x' * 500}", "tok-a"), BODY, SETTINGS, accounts())
    assert check.reason == "unknown_account" and len(check.explanation) < 300


def test_without_verification_nothing_is_checked_and_no_signer_is_named() -> None:
    settings = Settings(twilio_auth_token="", verify_signature=False)
    check = check_signature(request(f"/events/{B}", "nobody"), BODY, settings, accounts())
    assert check == signature.VALID and check.account is None


def test_public_url_is_the_plain_forms_and_the_path_form_adds_its_account() -> None:
    settings = Settings(public_url="https://hooks.example.com/studio/events")
    kept = request(f"/events/{A}", "tok-a")
    assert signed_url(kept, settings) == f"https://hooks.example.com/studio/events/{A}?{QUERY}"
    already = Settings(public_url=f"https://hooks.example.com/studio/events/{A}")
    assert signed_url(kept, already) == f"https://hooks.example.com/studio/events/{A}?{QUERY}"
    plain = request("/events", "tok-a")
    assert signed_url(plain, settings) == f"https://hooks.example.com/studio/events?{QUERY}"
    twilio_url = f"/studio/events/{A}"
    signed = request(f"/events/{A}", "tok-a", signed_as=twilio_url)
    public = Settings(public_url=f"https://{HOST}/studio/events", twilio_auth_token="")
    assert check_signature(signed, BODY, public, accounts()).ok


@pytest.mark.parametrize(
    ("raw_path", "account"),
    [
        ("/events", None),
        ("/events?bodySHA256=x", None),
        (f"/events/{A}?bodySHA256=x", A),
        ("/events/", None),
        (f"/events/{A}/more", None),
        ("/eventsAC", None),
        ("/events/AC%41", "ACA"),
    ],
)
def test_the_account_in_the_path(raw_path: str, account: str | None) -> None:
    assert account_in_path(raw_path) == account


def test_verify_says_which_key_signed() -> None:
    url = f"https://{HOST}/events?{QUERY}"
    keys = [b"k0", b"k1", b"k2"]
    for n, key in enumerate(keys):
        check = signature.verify(
            urls=[url],
            body=BODY,
            signature=sign(url, key.decode()),
            settings_header=None,
            auth_tokens=keys,
        )
        assert check == signature.VALID and check.key == n
