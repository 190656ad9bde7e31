"""CloudEvents parsing for Event Streams deliveries. Pure: no I/O.

Accepts a JSON array of structured CloudEvents (what Twilio sends), a single structured
event, and binary mode (``ce-*`` headers). Unlike the cloudevents SDK, it never invents an
``id`` or ``time``: an event that lacks a required attribute is rejected with that reason,
and every rejected element is returned with its raw bytes so nothing is silently dropped.
Given the account that signed the delivery (``account``), it applies ``signer``'s rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote

from sink import jsontext
from sink.ingest import signer
from sink.ingest.studio_facts import StudioDataError, StudioFacts, studio_facts
from sink.twilio import parse_timestamp

REQUIRED: Final = ("specversion", "id", "source", "type")
STRING_OPTIONAL: Final = ("dataschema", "datacontenttype", "subject")
KNOWN: Final = frozenset((*REQUIRED, *STRING_OPTIONAL, "time", "data", "data_base64"))


@dataclass(slots=True)
class Event:
    """One valid CloudEvent, ready to store."""

    event_id: str
    source: str
    type: str
    specversion: str
    time: datetime | None
    dataschema: str | None
    datacontenttype: str | None
    subject: str | None
    data_json: str | None
    extensions_json: str | None
    studio: StudioFacts | None = None
    account_sid: str | None = None  # the account it belongs to, when known (metrics)


@dataclass(slots=True)
class Rejection:
    """Something that arrived signed but could not be accepted, kept with its reason."""

    reason: str  # bounded code, usable as a metric label
    detail: str  # for people: what is wrong and what would fix it
    raw: bytes
    event_type: str | None = None
    event_id: str | None = None
    source: str | None = None


@dataclass(slots=True)
class Delivery:
    events: list[Event] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # True when the body as a whole is unusable (answer 400, keep it in rejected_events)
    fatal: bool = False


class ElementError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _decode_data(value: Any, contenttype: str | None) -> Any:
    """``data`` may arrive as a JSON-encoded string: decode it when it is JSON."""
    if isinstance(value, str) and _is_json_type(contenttype):
        stripped = value.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                return jsontext.loads(value)
            except jsontext.JsonError:
                return value
    return value


def _is_json_type(contenttype: str | None) -> bool:
    if contenttype is None:
        return True
    media = contenttype.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def build_event(element: Any, *, check_storable: bool, account: str | None = None) -> Event:
    """Validate one structured CloudEvent (a decoded JSON object); ``account``: the one
    that signed its delivery, which its data must not contradict."""
    if not isinstance(element, dict):
        raise ElementError(
            "not_an_object",
            f"a CloudEvent must be a JSON object, got {type(element).__name__}",
        )
    _check_required(element)
    _check_specversion(element)
    _check_string_optional(element)
    time = _event_time(element)
    if check_storable:
        _check_storable(element)
    return _event(element, time, account)


def _check_required(element: dict[str, Any]) -> None:
    """Every required attribute present (never invented) and a non-empty string."""
    for name in REQUIRED:
        value = element.get(name)
        if value is None:
            raise ElementError(
                "missing_attribute",
                f"CloudEvent lacks required attribute '{name}'; it is kept here rather than"
                " given an invented value",
            )
        if not isinstance(value, str) or not value:
            raise ElementError(
                "invalid_attribute", f"attribute '{name}' must be a non-empty string"
            )


def _check_specversion(element: dict[str, Any]) -> None:
    if element["specversion"] != "1.0":
        raise ElementError(
            "unsupported_specversion",
            f"specversion {element['specversion'][:20]!r} is not supported (only 1.0)",
        )


def _check_string_optional(element: dict[str, Any]) -> None:
    for name in STRING_OPTIONAL:
        value = element.get(name)
        if value is not None and not isinstance(value, str):
            raise ElementError("invalid_attribute", f"attribute '{name}' must be a string")


def _event_time(element: dict[str, Any]) -> datetime | None:
    """The optional ``time`` attribute, an RFC 3339 timestamp."""
    raw_time = element.get("time")
    if raw_time is None:
        return None
    if not isinstance(raw_time, str):
        raise ElementError("invalid_attribute", "attribute 'time' must be a string")
    try:
        return parse_timestamp(raw_time, assume_utc=False)
    except ValueError:
        raise ElementError(
            "invalid_attribute",
            f"attribute 'time' {raw_time[:40]!r} is not an RFC 3339 timestamp",
        ) from None


def _check_storable(element: dict[str, Any]) -> None:
    problem = jsontext.storable_problem(element)
    if problem:
        raise ElementError("unstorable_value", f"the event {problem}")


def _event(element: dict[str, Any], time: datetime | None, account: str | None) -> Event:
    """The validated element as an Event: its data, its extensions and its Studio facts."""
    contenttype = element.get("datacontenttype")
    event_type: str = element["type"]
    data = _decode_data(element.get("data"), contenttype)
    refusal = signer.mismatch(data, account)
    if refusal is not None:
        raise ElementError(signer.ACCOUNT_MISMATCH, refusal)
    data = signer.with_account(event_type, data, element["id"], account)
    extensions = _extensions(element)
    try:
        facts = studio_facts(event_type, data)
    except StudioDataError as exc:
        raise ElementError("invalid_studio_data", str(exc)) from None
    try:
        data_json = None if data is None else jsontext.dumps(data)
        extensions_json = jsontext.dumps(extensions) if extensions else None
    except jsontext.JsonError as exc:
        raise ElementError("unstorable_value", f"the event {exc}") from None
    return Event(
        event_id=signer.dedup_id(event_type, element["id"], data),
        source=element["source"],
        type=event_type,
        specversion=element["specversion"],
        time=time,
        dataschema=element.get("dataschema"),
        datacontenttype=contenttype,
        subject=element.get("subject"),
        data_json=data_json,
        extensions_json=extensions_json,
        studio=facts,
        account_sid=signer.event_account(data, account),
    )


def _extensions(element: dict[str, Any]) -> dict[str, Any]:
    """Attributes CloudEvents does not define, and ``data_base64`` (kept as it came)."""
    extensions = {k: v for k, v in element.items() if k not in KNOWN}
    if "data_base64" in element:
        extensions["data_base64"] = element["data_base64"]
    return extensions


def _reject_element(
    element: Any, error: ElementError, body: bytes, raw: bytes | None = None
) -> Rejection:
    """The element kept with its reason: ``raw`` (its own bytes) when known, else as JSON."""
    if raw is None:
        raw = _safe_dump(element, body)
    if isinstance(element, dict):
        return Rejection(
            reason=error.reason,
            detail=error.detail,
            raw=raw,
            event_type=_str_or_none(element.get("type")),
            event_id=_str_or_none(element.get("id")),
            source=_str_or_none(element.get("source")),
        )
    return Rejection(reason=error.reason, detail=error.detail, raw=raw)


def _str_or_none(value: Any) -> str | None:
    """The attribute for a rejected row's text column, if Postgres can store it."""
    if isinstance(value, str) and jsontext.storable_problem(value) is None:
        return value[:500]
    return None


def _safe_dump(value: Any, body: bytes) -> bytes:
    """The element as JSON; the whole body when it cannot be written on its own."""
    try:
        return jsontext.dumps(value).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return body


def parse_structured(body: bytes, *, account: str | None = None) -> Delivery:
    """A JSON array of CloudEvents, or one CloudEvent object."""
    try:
        decoded = jsontext.loads(body)
    except jsontext.JsonError as exc:
        return _parse_elements(body, exc, account)
    check = jsontext.needs_storable_check(body)
    if isinstance(decoded, dict):
        elements: list[Any] = [decoded]
    elif isinstance(decoded, list):
        elements = decoded
    else:
        return _fatal(
            body,
            "not_cloudevents",
            "the body is JSON but neither a CloudEvent object nor an array of them",
        )
    return _build_all(elements, body, check=check, account=account)


def _parse_elements(body: bytes, error: jsontext.JsonError, account: str | None) -> Delivery:
    """A body orjson refused, parsed element by element, so that one element (a lone
    UTF-16 surrogate) does not cost the batch; ``not_json`` when it is no JSON array."""
    try:
        pairs = jsontext.array_elements(body)
    except jsontext.JsonError:
        return _fatal(body, "not_json", f"the body is not valid JSON: {error}")
    raws = [r for _, r in pairs]
    return _build_all([e for e, _ in pairs], body, check=True, account=account, raws=raws)


def _build_all(
    elements: list[Any],
    body: bytes,
    *,
    check: bool,
    account: str | None,
    raws: list[bytes] | None = None,
) -> Delivery:
    """Each element as an Event or a Rejection (with its own bytes from ``raws`` when
    given); fatal when there were elements and none is an Event."""
    delivery = Delivery()
    for n, element in enumerate(elements):
        try:
            delivery.events.append(build_event(element, check_storable=check, account=account))
        except ElementError as error:
            raw = None if raws is None else raws[n]
            delivery.rejected.append(_reject_element(element, error, body, raw))
    if elements and not delivery.events:
        delivery.fatal = True
    return delivery


def parse_binary(
    headers: Mapping[str, str], body: bytes, *, account: str | None = None
) -> Delivery:
    """Binary content mode: attributes in ``ce-*`` headers, the data in the body."""
    element: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            element[lower[3:]] = unquote(value)
    contenttype = headers.get("Content-Type") or headers.get("content-type")
    if contenttype:
        element["datacontenttype"] = contenttype
    if body:
        if _is_json_type(contenttype):
            try:
                element["data"] = jsontext.loads(body)
            except jsontext.JsonError as exc:
                return _fatal(body, "not_json", f"binary-mode data is not valid JSON: {exc}")
        else:
            try:
                element["data"] = body.decode("utf-8")
            except UnicodeDecodeError:
                return _fatal(body, "not_utf8", "binary-mode data is neither JSON nor UTF-8 text")
    delivery = Delivery()
    try:
        delivery.events.append(build_event(element, check_storable=True, account=account))
    except ElementError as error:
        rejection = _reject_element(element, error, body)
        delivery.rejected.append(rejection)
        delivery.fatal = True
    return delivery


def is_binary_mode(headers: Mapping[str, str]) -> bool:
    return any(name.lower() == "ce-specversion" for name in headers)


def parse_delivery(
    headers: Mapping[str, str], body: bytes, *, account: str | None = None
) -> Delivery:
    """The delivery's events and rejected elements; ``account``: the one that signed it
    (None when unknown: no account check)."""
    if is_binary_mode(headers):
        return parse_binary(headers, body, account=account)
    return parse_structured(body, account=account)


def _fatal(body: bytes, reason: str, detail: str) -> Delivery:
    return Delivery(rejected=[Rejection(reason=reason, detail=detail, raw=body)], fatal=True)
