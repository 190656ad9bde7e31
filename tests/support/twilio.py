"""Signing deliveries as Twilio does, with the twilio package as the independent oracle."""

from __future__ import annotations

import hashlib
from typing import Any

from twilio.request_validator import RequestValidator

TOKEN = "test-auth-token-0123456789abcdef"
OTHER_TOKEN = "rotated-out-token-fedcba9876543210"


def signed_url(base_url: str, body: bytes) -> str:
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}bodySHA256={hashlib.sha256(body).hexdigest()}"


def sign(url: str, token: str = TOKEN, algorithm: str | None = None) -> str:
    signature: str = RequestValidator(token).compute_signature(url, {}, algorithm)
    return signature


def signed_request(
    base_url: str, body: bytes, token: str = TOKEN, **headers: str
) -> tuple[str, dict[str, Any]]:
    """(full URL, headers) for POSTing body to base_url as Twilio would."""
    url = signed_url(base_url, body)
    all_headers = {"X-Twilio-Signature": sign(url, token), "Content-Type": "application/json"}
    all_headers.update(headers)
    return url, all_headers
