"""The biller's own word on what it dropped: its error reports, and what the ledger infers from one.

Stripe validates meter events after answering them. What it then drops it reports in a
`v1.billing.meter.error_report_triggered` (or `v1.billing.meter.no_meter_found`) event that names, per error code, a
total `error_count` and at most a few sample identifiers. The inference (docs/reconcile.md):
- an error about the customer (CUSTOMER_ERROR_CODES) loses every event sent to that customer inside the report's
  validation window, so every entry sent to a customer named by a sample inside that window is rejected;
- any other error is about one event, so only the samples are rejected; reconciliation finds the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

import msgspec

from gateway.domain.ledger import Entry

ERROR_REPORT = "v1.billing.meter.error_report_triggered"
NO_METER_FOUND = "v1.billing.meter.no_meter_found"
REPORT_TYPES = frozenset({ERROR_REPORT, NO_METER_FOUND})
# Errors about the customer rather than the event: every event for that customer fails alike.
CUSTOMER_ERROR_CODES = frozenset({"meter_event_customer_not_found", "meter_event_no_customer_defined"})


class Notification(msgspec.Struct, frozen=True):
    """A thin event from the biller: which event, of what type, created when (unix seconds)."""

    event_id: str
    event_type: str
    created: float


class SampleError(msgspec.Struct, frozen=True):
    identifier: str
    message: str


class ErrorType(msgspec.Struct, frozen=True):
    """One error code of a report: `error_count` counts every failure, `samples` names only a few of them."""

    code: str
    error_count: int
    samples: tuple[SampleError, ...] = ()


class ErrorReport(msgspec.Struct, frozen=True):
    """Meter events the biller accepted and then dropped, validated in [validation_start, validation_end]."""

    event_id: str
    event_type: str
    created: float
    validation_start: float
    validation_end: float
    error_count: int
    error_types: tuple[ErrorType, ...] = ()


class Rejection(msgspec.Struct, frozen=True):
    """A sent entry the biller dropped: it becomes parked `biller_rejected` with `message`."""

    event_id: str
    message: str


class Inference(msgspec.Struct, frozen=True):
    """What a report says about the ledger.

    `rejections` are unique by event id. `unmatched` are sample identifiers no sent entry carries (already parked,
    sent by someone else, or a correction). `unattributed` counts, per customer error code, failures the report
    counts beyond the entries rejected for it: customers no sample named, left to reconciliation.
    """

    rejections: tuple[Rejection, ...]
    unmatched: tuple[str, ...]
    unattributed: Mapping[str, int]


def rejection_message(code: str, message: str) -> str:
    """The parked record's message: Stripe's code first, so `parked list` can be read and grepped by code."""
    return f"{code}: {message}" if message else code


def infer(report: ErrorReport, by_identifier: Mapping[str, Entry], window: Sequence[Entry]) -> Inference:
    """The entries `report` says were lost.

    `by_identifier` maps the meter identifier of each entry a sample names to the entry; `window` holds the entries
    sent inside the report's validation window, at least those of the customers the customer errors' samples name.
    Per-event errors reject their samples; customer errors reject every entry in `window` sent to a customer one of
    their samples names.
    """
    rejections: dict[str, Rejection] = {}
    unmatched: list[str] = []
    unattributed: dict[str, int] = {}
    for error in report.error_types:
        for_code: set[str] = set()
        lost_customers: dict[str, str] = {}  # billing customer -> the message of its first sample
        for sample in error.samples:
            entry = by_identifier.get(sample.identifier)
            if entry is None:
                unmatched.append(sample.identifier)
                continue
            message = rejection_message(error.code, sample.message)
            rejections.setdefault(entry.event_id, Rejection(entry.event_id, message))
            for_code.add(entry.event_id)
            lost_customers.setdefault(entry.billing_customer, message)
        if error.code not in CUSTOMER_ERROR_CODES:
            continue
        for entry in window:
            message_for_customer = lost_customers.get(entry.billing_customer)
            if message_for_customer is not None:
                rejections.setdefault(entry.event_id, Rejection(entry.event_id, message_for_customer))
                for_code.add(entry.event_id)
        if error.error_count > len(for_code):
            unattributed[error.code] = error.error_count - len(for_code)
    return Inference(tuple(rejections.values()), tuple(unmatched), unattributed)


class Handled(StrEnum):
    APPLIED = "applied"
    """A report: its entries were parked."""
    DUPLICATE = "duplicate"
    """This report was applied before; nothing changed."""
    IGNORED = "ignored"
    """Not an error report."""


class HandleResult(msgspec.Struct, frozen=True):
    event_id: str
    status: Handled
    parked: int = 0
    unmatched: tuple[str, ...] = ()
    errors_by_code: dict[str, int] = {}
    unattributed: dict[str, int] = {}
