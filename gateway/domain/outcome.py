"""What a delivery and a replay come to: the results the use cases return and the app turns into answers.

msgspec Structs, as the domain's other records: an Outcome is built for every delivery on the webhook path, where a
frozen Struct costs a fifth of a frozen dataclass, and `omit_defaults` keeps the unset fields out of the JSON the
CLI prints.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from gateway.domain.ledger import ParkReason


class Status(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    PARKED = "parked"


class Outcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """What happened to one delivery; the HTTP layer turns it into the contract's response."""

    status: Status
    event_id: str
    units: int | None = None
    reason: ParkReason | None = None
    message: str | None = None
    event_type: str | None = None
    customer: str | None = None


class ReplayStatus(StrEnum):
    BILLED = "billed"
    """Recorded as pending (or requeued): the dispatcher sends it to the biller."""
    STILL_PARKED = "still_parked"
    """Still not billable (no mapping yet, still invalid, too old, type still not listed); the record is kept."""
    DUPLICATE = "duplicate"
    """Its event id is already in the ledger (another record of it was billed); the parked record is kept."""
    IGNORED = "ignored"
    """Not a billable event type under the current settings; the parked record is kept."""
    NOT_PARKED = "not_parked"
    """Nothing is parked under this key: never parked, or already replayed."""


class ReplayResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one replay did. `reason` and `message` say why a record is still parked."""

    key: str
    status: ReplayStatus
    units: int | None = None
    customer: str | None = None
    reason: ParkReason | None = None
    message: str | None = None


def with_message(result: ReplayResult, message: str) -> ReplayResult:
    """The same replay result, saying `message` instead."""
    return msgspec.structs.replace(result, message=message)
