"""sink/signature.py against twilio-python's RequestValidator as the independent oracle."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from sink.config import Settings
from sink.ingest import signature
from sink.web.verify import signed_url
from tests.support.twilio import OTHER_TOKEN, TOKEN, sign

BODY = b'[{"specversion":"1.0","id":"EZ1","source":"/x","type":"t"}]'
NEW_TOKEN = "new-auth-token-aaaaaaaaaaaaaaaa"
SHARED_KEY = "shared-key-secret-bbbbbbbbbbbbbbbb"


def with_hash(url: str, body: bytes = BODY) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}bodySHA256={hashlib.sha256(body).hexdigest()}"


def check(
    url: str,
    sig: str | None,
    *,
    body: bytes = BODY,
    tokens: tuple[str, ...] = (TOKEN,),
    shared: tuple[str, ...] = (),
    settings_header: str | None = None,
    received_url: str | None = None,
) -> signature.SignatureCheck:
    return signature.verify(
        urls=[received_url or url],
        body=body,
        signature=sig,
        settings_header=settings_header,
        auth_tokens=[t.encode() for t in tokens],
        shared_keys=[k.encode() for k in shared],
    )


def oracle(url: str, sig: str, body: bytes = BODY, token: str = TOKEN, algo: Any = None) -> bool:
    valid: bool = RequestValidator(token).validate(url, body.decode(), sig, algo)
    return valid


def test_valid_signature_agrees_with_twilio() -> None:
    url = with_hash("https://sink.example.com/events")
    sig = sign(url)
    assert oracle(url, sig)
    assert check(url, sig) == signature.VALID
    assert signature.compute_signature(url, TOKEN.encode()) == sig


def test_rotated_token_list_accepts_each_configured_token() -> None:
    url = with_hash("https://sink.example.com/events")
    for token in (TOKEN, NEW_TOKEN):
        assert check(url, sign(url, token), tokens=(NEW_TOKEN, TOKEN)).ok
    refused = check(url, sign(url, OTHER_TOKEN), tokens=(NEW_TOKEN, TOKEN))
    assert not oracle(url, sign(url, OTHER_TOKEN))
    assert refused.reason == "bad_signature"


@pytest.mark.parametrize(
    ("signed", "received"),
    [
        ("https://sink.example.com:443/events", "https://sink.example.com/events"),
        ("https://sink.example.com/events", "https://sink.example.com:443/events"),
        ("http://sink.example.com:80/events", "http://sink.example.com/events"),
        ("http://sink.example.com/events", "http://sink.example.com:80/events"),
    ],
)
def test_port_variants_like_twilio(signed: str, received: str) -> None:
    signed_full, received_full = with_hash(signed), with_hash(received)
    sig = sign(signed_full)
    assert oracle(received_full, sig)
    assert check(signed_full, sig, received_url=received_full).ok


def test_a_non_default_port_must_match() -> None:
    signed_full = with_hash("https://sink.example.com:8443/events")
    sig = sign(signed_full)
    received = with_hash("https://sink.example.com/events")
    assert not oracle(received, sig)
    assert check(signed_full, sig, received_url=received).reason == "bad_signature"


def test_sha256_shared_key_scheme() -> None:
    url = with_hash("https://sink.example.com/events")
    header = "key=KS0123,algorithm=HMAC_SHA256"
    sig = sign(url, SHARED_KEY, "HMAC_SHA256")
    assert oracle(url, sig, token=SHARED_KEY, algo="HMAC_SHA256")
    assert check(url, sig, shared=(SHARED_KEY,), settings_header=header).ok
    # the same signature is not accepted as a legacy one, nor with the Auth Token as key
    assert not check(url, sig, shared=(SHARED_KEY,)).ok
    wrong = sign(url, TOKEN, "HMAC_SHA256")
    assert check(url, wrong, shared=(SHARED_KEY,), settings_header=header).reason == (
        "bad_signature"
    )
    unconfigured = check(url, sig, settings_header=header)
    assert unconfigured.reason == "no_key_configured"
    assert "no key is configured" in unconfigured.explanation


def test_unknown_algorithm_is_refused_with_its_reason() -> None:
    url = with_hash("https://sink.example.com/events")
    result = check(url, sign(url), shared=(SHARED_KEY,), settings_header="key=K,algorithm=HMAC_MD5")
    assert result == signature.SignatureCheck(False, "unsupported_algorithm")
    assert "unknown algorithm" in result.explanation
    assert not oracle(url, sign(url), algo="HMAC_MD5")


@pytest.mark.parametrize(
    ("header", "algorithm"),
    [
        (None, "HMAC_SHA1"),
        ("", "HMAC_SHA1"),
        ("key=K1,algorithm=HMAC_SHA256", "HMAC_SHA256"),
        (" algorithm = hmac_sha256 , key=K1", "HMAC_SHA256"),
        ("key=K1", "HMAC_SHA1"),
    ],
)
def test_algorithm_from_settings(header: str | None, algorithm: str) -> None:
    assert signature.algorithm_from_settings(header) == algorithm


def test_refusal_reasons() -> None:
    url = with_hash("https://sink.example.com/events")
    sig = sign(url)
    assert check(url, None).reason == "missing_signature"
    assert check(url, "").reason == "missing_signature"
    bare = "https://sink.example.com/events"
    assert check(bare, sign(bare)).reason == "missing_body_hash"
    twice = with_hash(url)
    assert check(twice, sign(twice)).reason == "duplicate_body_hash"
    assert check(url, sig, body=BODY + b" ").reason == "body_hash_mismatch"
    assert not oracle(url, sig, body=BODY + b" ")
    other_case = url.replace("bodySHA256", "BodySha256")
    assert check(other_case, sign(other_case)).reason == "missing_body_hash"
    assert check(url, sign(url), tokens=()).reason == "no_key_configured"
    for reason in signature.REASONS:
        assert signature.SignatureCheck(False, reason).explanation


def _request(path: str, headers: dict[str, str] | None = None) -> Any:
    return make_mocked_request("POST", path, headers={"Host": "10.0.0.5:8080", **(headers or {})})


def test_public_url_replaces_what_the_proxy_changed() -> None:
    settings_ = Settings(public_url="https://hooks.example.com/studio/events")
    request = _request("/events?bodySHA256=abc")
    assert (
        signed_url(request, settings_) == "https://hooks.example.com/studio/events?bodySHA256=abc"
    )
    public = with_hash("https://hooks.example.com/studio/events")
    query = public.split("?", 1)[1]
    rebuilt = signed_url(_request(f"/events?{query}"), settings_)
    assert rebuilt == public
    assert oracle(rebuilt, sign(public))


@pytest.mark.parametrize("trust", [True, False])
def test_forwarded_headers_only_when_trusted(trust: bool) -> None:
    settings_ = Settings(trust_forwarded=trust)
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com, proxy"}
    url = signed_url(_request("/events?bodySHA256=abc", headers), settings_)
    if trust:
        assert url == "https://hooks.example.com/events?bodySHA256=abc"
    else:
        assert url == "http://10.0.0.5:8080/events?bodySHA256=abc"
    public = with_hash("https://hooks.example.com/events")
    query = public.split("?", 1)[1]
    received = signed_url(_request(f"/events?{query}", headers), settings_)
    assert check(public, sign(public), received_url=received).ok is trust


def test_url_variants() -> None:
    assert signature.url_variants("https://a.example/x?q=1") == [
        "https://a.example/x?q=1",
        "https://a.example:443/x?q=1",
    ]
    assert signature.url_variants("http://u:p@[::1]:8080/x") == [
        "http://u:p@[::1]:8080/x",
        "http://u:p@[::1]/x",
    ]
    assert signature.url_variants("ftp://a.example/x") == ["ftp://a.example/x"]


_URL_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~/", max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    host=st.from_regex(r"[a-z]{1,10}\.example\.com", fullmatch=True),
    port=st.sampled_from(["", ":443", ":8443"]),
    path=_URL_TEXT,
    body=st.text(max_size=200),
    token=st.text(min_size=1, max_size=40),
    sign_with=st.sampled_from(["same", "other"]),
    tamper=st.booleans(),
)
def test_agrees_with_twilio_on_random_requests(
    host: str, port: str, path: str, body: str, token: str, sign_with: str, tamper: bool
) -> None:
    raw = body.encode("utf-8")
    url = with_hash(f"https://{host}{port}/{path}", raw)
    key = token if sign_with == "same" else token + "x"
    sig = RequestValidator(key).compute_signature(url, {})
    received = raw + b"!" if tamper else raw
    expected = RequestValidator(token).validate(url, received.decode(), sig)
    got = signature.verify(
        urls=[url],
        body=received,
        signature=sig,
        settings_header=None,
        auth_tokens=[token.encode()],
    )
    assert got.ok is expected
