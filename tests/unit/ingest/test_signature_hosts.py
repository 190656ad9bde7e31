"""Review defect 4: a URL whose host[:port] does not parse is refused as ``bad_host``."""

from __future__ import annotations

import hashlib

import pytest
from aiohttp.test_utils import make_mocked_request

from sink.accounts.load import load_accounts
from sink.config import Settings
from sink.ingest import signature
from sink.web.verify import check_signature
from tests.support.twilio import TOKEN, sign

BODY = b"[]"
HASH = hashlib.sha256(BODY).hexdigest()
BAD_HOSTS = ["a:b", "[x", "a:99999", "[::1", "x]", "a:-1", "a:1:2", "a: 1", "sink\udcff"]


def verify(*urls: str, sig: str = "c2lnbmF0dXJl") -> signature.SignatureCheck:
    return signature.verify(
        urls=list(urls),
        body=BODY,
        signature=sig,
        settings_header=None,
        auth_tokens=[TOKEN.encode()],
    )


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_unparsable_host_is_bad_host(host: str) -> None:
    url = f"http://{host}/events?bodySHA256={HASH}"
    assert not signature.is_checkable(url)
    check = verify(url)
    assert (check.ok, check.reason) == (False, "bad_host")
    assert "SINK_PUBLIC_URL" in check.explanation


@pytest.mark.parametrize(
    "host", ["sink.example.com", "sink.example.com:8443", "[::1]:8080", "10.0.0.5", "a:"]
)
def test_parsable_hosts_are_checked_as_before(host: str) -> None:
    url = f"https://{host}/events?bodySHA256={HASH}"
    assert signature.is_checkable(url)
    assert verify(url, sig=sign(url)).ok
    assert verify(url).reason == "bad_signature"


def test_a_bad_candidate_does_not_hide_a_good_one() -> None:
    good = f"https://sink.example.com/events?bodySHA256={HASH}"
    assert verify(f"http://a:b/events?bodySHA256={HASH}", good, sig=sign(good)).ok


def test_no_signature_is_still_missing_signature_whatever_the_host() -> None:
    check = signature.verify(
        urls=["http://[x/events"],
        body=BODY,
        signature=None,
        settings_header=None,
        auth_tokens=[TOKEN.encode()],
    )
    assert check.reason == "missing_signature"


@pytest.mark.parametrize("host", ["a:b", "[x", "a:99999"])
def test_receiver_check_signature_answers_bad_host(host: str) -> None:
    """The receiver's own path: Host as aiohttp hands it on, no SINK_PUBLIC_URL."""
    request = make_mocked_request(
        "POST",
        f"/events?bodySHA256={HASH}",
        headers={"Host": host, "X-Twilio-Signature": "c2lnbmF0dXJl"},
    )
    settings = Settings(twilio_auth_token=TOKEN)
    accounts = load_accounts(settings)
    assert check_signature(request, BODY, settings, accounts).reason == "bad_host"
