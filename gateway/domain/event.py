"""Ringside's event envelope, parsed tolerantly (docs/design.md, "Event").

Ringside documents `{"id", "type", "data"}` and no example payload, so every field we do not need is ignored and
the few we need are looked up in each place the docs allow. Money is read straight from the JSON text into
`Decimal` (every digit kept), never through a float.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

import msgspec

MAX_EVENT_ID_CHARS = 255


class _Customer(msgspec.Struct):
    id: str | None = None
    metadata: dict[str, Any] | None = None


# A cost is a JSON number or a string of plain ASCII decimal digits (optional sign and exponent). Decimal() alone
# would also read "1_000", " 1 " and non-ASCII digits as numbers. NaN and Infinity get through to the policy, which
# parks them with a clearer message.
_DECIMAL_TEXT = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|snan|inf|infinity)",
    re.ASCII | re.IGNORECASE,
)


_ABSENT = msgspec.Raw()  # a Raw field cannot be optional (`Raw | None`); empty stands for absent


class _Data(msgspec.Struct):
    cost_usd: msgspec.Raw = _ABSENT
    billable_amount_usd: msgspec.Raw = _ABSENT
    customer_id: str | None = None
    customer: str | _Customer | None = None


class _Envelope(msgspec.Struct):
    id: str
    type: str
    created: int | None = None
    data: _Data | None = None


class _IdOnly(msgspec.Struct):
    id: Any = None
    type: Any = None


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_id_only = msgspec.json.Decoder(_IdOnly).decode
_decode_text = msgspec.json.Decoder(str).decode


class Event(msgspec.Struct, frozen=True):
    """What the gateway needs from one Ringside event."""

    id: str
    type: str
    created: int | None
    cost_usd: Decimal | None
    ringside_customer: str | None
    stripe_customer: str | None


class InvalidEvent(Exception):
    """The body is not an event we can bill. `key` is what the delivery is de-duplicated and parked under."""

    def __init__(self, key: str, message: str, event_type: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.event_type = event_type


def body_key(body: bytes) -> str:
    """A dedupe key for a body that carries no usable id: redeliveries of the same bytes share it."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _valid_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_EVENT_ID_CHARS and value.isprintable():
        return value
    return None


def parse_event(body: bytes) -> Event:
    """Decode a signed body, or raise InvalidEvent carrying the key to park it under and a clear reason."""
    try:
        envelope = _decode_envelope(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise _invalid(body, f"invalid event: {exc}") from None
    except RecursionError:
        # msgspec descends into nested arrays and objects (even ignored ones) on the C stack, guarded by Python's
        # recursion limit: a signed body nested ~1,000 deep is not an event, never a crash.
        raise InvalidEvent(body_key(body), "invalid event: JSON is nested too deeply") from None
    event_id = _valid_id(envelope.id)
    if event_id is None:
        raise InvalidEvent(
            body_key(body), f"event id must be 1 to {MAX_EVENT_ID_CHARS} printable characters", envelope.type
        )
    data = envelope.data or _Data()
    try:
        cost = _cost(data.cost_usd, "cost_usd")
        if cost is None:
            cost = _cost(data.billable_amount_usd, "billable_amount_usd")
    except ValueError as exc:
        raise InvalidEvent(event_id, f"invalid event: {exc}", envelope.type) from None
    ringside_customer = data.customer_id
    stripe_customer = None
    if isinstance(data.customer, str):
        ringside_customer = ringside_customer or data.customer
    elif data.customer is not None:
        ringside_customer = ringside_customer or data.customer.id
        candidate = (data.customer.metadata or {}).get("stripe_customer_id")
        stripe_customer = candidate if isinstance(candidate, str) and candidate else None
    return Event(
        id=event_id,
        type=envelope.type,
        created=envelope.created,
        cost_usd=cost,
        ringside_customer=ringside_customer or None,
        stripe_customer=stripe_customer,
    )


def _cost(raw: msgspec.Raw, field: str) -> Decimal | None:
    """The exact Decimal a cost field holds; None when absent or null; ValueError when it is not a decimal."""
    text = bytes(raw)
    if not text or text == b"null":
        return None
    # A JSON string is decoded (escapes included) before it is judged; any other JSON value is judged as written.
    value = _decode_text(text) if text.startswith(b'"') else text.decode()
    if not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError(f"cost must be a decimal in ASCII digits (optional sign and exponent) - at `$.data.{field}`")
    return Decimal(value)


def _invalid(body: bytes, message: str) -> InvalidEvent:
    """Salvage the id (and type) of an event whose other fields are wrong, so that it is parked under its id."""
    try:
        partial = _decode_id_only(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return InvalidEvent(body_key(body), message)
    event_id = _valid_id(partial.id)
    event_type = partial.type if isinstance(partial.type, str) else None
    return InvalidEvent(event_id or body_key(body), message, event_type)


def restamped(event: Event, created: int) -> Event:
    """The same event, stamped `created` (an operator's replay with --restamp bills it in the current period)."""
    return msgspec.structs.replace(event, created=created)
