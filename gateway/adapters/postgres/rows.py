"""How entries and parked records are laid out in their tables, and read back as domain values.

Decimals (costs, carries) are stored as text, never as a float, so that every digit survives; units are bigint.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from gateway.domain.ledger import Entry, Parked, ParkReason, State

ENTRY_COLUMNS = (
    "event_id, event_type, billing_customer, ringside_customer, cost_usd, units, timestamp, state, created_at,"
    " attempts, next_attempt_at, last_error, sent_at"
)
# The entry columns as arrays, for one INSERT ... SELECT FROM unnest(...) of many entries.
ENTRY_ARRAYS = (
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[],"
    " $9::float8[], $10::integer[], $11::float8[], $12::text[], $13::float8[]"
)
PARKED_COLUMNS = "key, reason, message, body, signed_at, parked_at, event_type, ringside_customer"


def entry_from(row: asyncpg.Record) -> Entry:
    return Entry(
        event_id=row["event_id"],
        event_type=row["event_type"],
        billing_customer=row["billing_customer"],
        ringside_customer=row["ringside_customer"],
        cost_usd=Decimal(row["cost_usd"]),
        units=int(row["units"]),
        timestamp=int(row["timestamp"]),
        state=State(row["state"]),
        created_at=float(row["created_at"]),
        attempts=int(row["attempts"]),
        next_attempt_at=float(row["next_attempt_at"]),
        last_error=row["last_error"],
        sent_at=None if row["sent_at"] is None else float(row["sent_at"]),
    )


def entry_columns(entries: list[Entry]) -> list[list[object]]:
    """The entries as one list per column, in ENTRY_COLUMNS order (the arguments of ENTRY_ARRAYS)."""
    return [
        [e.event_id for e in entries],
        [e.event_type for e in entries],
        [e.billing_customer for e in entries],
        [e.ringside_customer for e in entries],
        [str(e.cost_usd) for e in entries],
        [e.units for e in entries],
        [e.timestamp for e in entries],
        [e.state.value for e in entries],
        [e.created_at for e in entries],
        [e.attempts for e in entries],
        [e.next_attempt_at for e in entries],
        [e.last_error for e in entries],
        [e.sent_at for e in entries],
    ]


def parked_from(row: asyncpg.Record) -> Parked:
    return Parked(
        key=row["key"],
        reason=ParkReason(row["reason"]),
        message=row["message"],
        body=bytes(row["body"]),
        signed_at=int(row["signed_at"]),
        parked_at=float(row["parked_at"]),
        event_type=row["event_type"],
        ringside_customer=row["ringside_customer"],
    )


def parked_args(parked: Parked) -> tuple[object, ...]:
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
