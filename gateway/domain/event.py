"""Ringside's event envelope, parsed tolerantly (docs/design.md, "Event").

Ringside documents `{"id", "type", "data"}` and no example payload, so every field we do not need is ignored and
the few we need are looked up in each place the docs allow. Money is decoded straight from the JSON text into
`Decimal` (msgspec keeps every digit), never through a float.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import msgspec

MAX_EVENT_ID_CHARS = 255


class _Customer(msgspec.Struct):
    id: str | None = None
    metadata: dict[str, Any] | None = None


class _Data(msgspec.Struct):
    cost_usd: Decimal | None = None
    billable_amount_usd: Decimal | None = None
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
    cost = data.cost_usd if data.cost_usd is not None else data.billable_amount_usd
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


def _invalid(body: bytes, message: str) -> InvalidEvent:
    """Salvage the id (and type) of an event whose other fields are wrong, so that it is parked under its id."""
    try:
        partial = _decode_id_only(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return InvalidEvent(body_key(body), message)
    event_id = _valid_id(partial.id)
    event_type = partial.type if isinstance(partial.type, str) else None
    return InvalidEvent(event_id or body_key(body), message, event_type)
