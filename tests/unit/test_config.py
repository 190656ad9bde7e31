"""Settings that cannot work are refused at start, naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sink.config import Settings


@pytest.mark.parametrize(
    "url", ["https://[x/events", "https://sink.example.com:99999/events", "sink.example.com/events"]
)
def test_a_public_url_that_cannot_be_signed_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="public_url"):
        Settings(public_url=url)


@pytest.mark.parametrize(
    "url", ["https://sink.example.com/events", "https://sink.example.com:8443/events", ""]
)
def test_a_webhook_url_or_none_is_accepted(url: str) -> None:
    assert Settings(public_url=url).public_url == (url or None)
