"""How ledger entries and parked records are laid out in their tables, and read back as domain values.

Decimals (costs, carries) are stored as TEXT, never REAL, so that every digit survives; units are INTEGER.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from gateway.domain.ledger import Entry, Parked, ParkReason, State

Row = Sequence[Any]

ENTRY_COLUMNS = (
    "event_id, event_type, billing_customer, ringside_customer, cost_usd, units, timestamp, state, created_at,"
    " attempts, next_attempt_at, last_error, sent_at"
)
PARKED_COLUMNS = "key, reason, message, body, signed_at, parked_at, event_type, ringside_customer"


# A dict lookup rather than the enum's call, State(...), which is slower: lease_due builds an entry per leased row.
_STATES = {state.value: state for state in State}


def entry_from(row: Row) -> Entry:
    return Entry(
        event_id=str(row[0]),
        event_type=str(row[1]),
        billing_customer=str(row[2]),
        ringside_customer=row[3],
        cost_usd=Decimal(row[4]),
        units=int(row[5]),
        timestamp=int(row[6]),
        state=_STATES[row[7]],
        created_at=float(row[8]),
        attempts=int(row[9]),
        next_attempt_at=float(row[10]),
        last_error=row[11],
        sent_at=None if row[12] is None else float(row[12]),
    )


def entry_row(entry: Entry) -> tuple[object, ...]:
    return (
        entry.event_id,
        entry.event_type,
        entry.billing_customer,
        entry.ringside_customer,
        str(entry.cost_usd),
        entry.units,
        entry.timestamp,
        entry.state.value,
        entry.created_at,
        entry.attempts,
        entry.next_attempt_at,
        entry.last_error,
        entry.sent_at,
    )


def parked_from(row: Row) -> Parked:
    return Parked(
        key=str(row[0]),
        reason=ParkReason(row[1]),
        message=str(row[2]),
        body=bytes(row[3]),
        signed_at=int(row[4]),
        parked_at=float(row[5]),
        event_type=row[6],
        ringside_customer=row[7],
    )


def parked_row(parked: Parked) -> tuple[object, ...]:
    return (
        parked.key,
        parked.reason.value,
        parked.message,
        bytes(parked.body),
        parked.signed_at,
        parked.parked_at,
        parked.event_type,
        parked.ringside_customer,
    )
