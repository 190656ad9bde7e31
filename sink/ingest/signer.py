"""What the account that signed a delivery means for its events. Pure: no I/O.

Each Twilio account signs its deliveries with its own Auth Token, so once a signature holds
the sink knows which account sent them (the one the URL ``/events/{AccountSid}`` names, or
the only account holding the token that matched). Two rules follow:

- **The account must match.** An event whose ``data.account_sid`` names another account
  is refused (``account_mismatch``): no account writes another's rows.
- **Twilio's test event.** Event Streams' test event carries the Account SID as its ``id``
  for every test, and only ``{"test_id": ...}`` as its data. Its dedup key takes the
  ``test_id`` (``<id>/<test_id>``), so each test is recorded once, and its data is stored
  with the account it came from (``account_sid``), as every Studio event's data has it.
"""

from __future__ import annotations

from typing import Any, Final

from sink.errors import shown
from sink.twilio import TEST_EVENT_TYPE, is_sid

ACCOUNT_MISMATCH: Final = "account_mismatch"
TEST_ID_MAX: Final = 200  # a UUID from Twilio; a longer one keeps the event's id as it is


def mismatch(data: Any, signer: str | None) -> str | None:
    """Why the event is refused (naming both accounts), or None when its data names no
    account, names the signer, or the signer is not known."""
    if signer is None or not isinstance(data, dict):
        return None
    claimed = data.get("account_sid")
    if not isinstance(claimed, str) or claimed == signer:
        return None
    return (
        f"data.account_sid {shown(claimed)!r} is not {signer}, the account that signed the"
        f" delivery. Each account signs with its own Auth Token: send {shown(claimed)}'s"
        " events to its own URL (/events/<its Account SID>) with its tokens in"
        " SINK_ACCOUNTS_FILE"
    )


def dedup_id(event_type: str, event_id: str, data: Any) -> str:
    """The id an event is stored (and deduplicated) under: its own, except for Twilio's
    test event with a usable ``test_id``: ``<id>/<test_id>``. An id that already ends so
    (a stored test event read again) is left as it is."""
    if event_type != TEST_EVENT_TYPE or not isinstance(data, dict):
        return event_id
    test = data.get("test_id")
    if not isinstance(test, str) or not 0 < len(test) <= TEST_ID_MAX:
        return event_id
    suffix = f"/{test}"
    return event_id if event_id.endswith(suffix) else f"{event_id}{suffix}"


def with_account(event_type: str, data: Any, event_id: str, signer: str | None) -> Any:
    """A test event's data with its account: as it came when it names one, else the
    signer, else its id (Twilio's test event id is the Account SID). Other events' data
    as it came."""
    if event_type != TEST_EVENT_TYPE or not isinstance(data, dict) or "account_sid" in data:
        return data
    account = signer if signer is not None else event_id if is_sid(event_id, "AC") else None
    return data if account is None else {**data, "account_sid": account}


def event_account(data: Any, signer: str | None) -> str | None:
    """The account an accepted event belongs to: the one its data names, else the signer."""
    if isinstance(data, dict):
        claimed = data.get("account_sid")
        if is_sid(claimed, "AC"):
            return str(claimed)
    return signer
