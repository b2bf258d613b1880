"""The one place where Lago's answers become the gateway's errors (sink and portal alike).

Transient (the entry stays pending): 5xx, 429 (BillerRateLimited, honouring `Retry-After` or Lago's
`X-RateLimit-Reset`), 401/403 (a bad or revoked key is the operator's problem and would otherwise park the whole
backlog), 408/409, and answers only a misconfiguration can cause (a wrong LAGO_API_URL, an unknown
LAGO_METRIC_CODE). Permanent (the entry is parked with Lago's message): any other 4xx. A known transaction id is
not an error at all: it is ALREADY_SENT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from gateway.adapters.http_retry import delta_seconds, retry_after_seconds
from gateway.domain.errors import (
    BillerRateLimited,
    BillerRejected,
    BillerUnavailable,
    GatewayError,
    NoBillingAccount,
)

# Lago's answer to a known transaction_id: `Events::CreateService` rescues RecordNotUnique as
# `value_already_exist`; older releases validated up front with `value_is_missing_or_already_exists` (our
# transaction_id is never missing, so it can only mean "already exists" here).
_ALREADY_EXISTS = frozenset({"value_already_exist", "value_is_missing_or_already_exists"})
# 404 codes that name the billing id as unknown: the mapping points nowhere (Lago's `not_found_error(resource:)`
# renders `<resource>_not_found`). Older Lago releases answered events for an unknown subscription this way too.
_UNKNOWN_BILLING_ID = frozenset({"subscription_not_found", "customer_not_found"})
_MAX_MESSAGE_CHARS = 500


class LagoErrorBody(msgspec.Struct):
    """Lago's error body (`ApiErrors` concern): `{"status", "error", "code"?, "error_details"?}`."""

    status: Any = None
    error: Any = None
    code: str | None = None
    error_details: Any = None


def send_error(response: httpx.Response) -> BillerRejected | BillerUnavailable:
    """The port's error for a non-2xx answer to events that are not (all) already known (see the module docstring)."""
    error = error_body(response)
    status = response.status_code
    transient = _transient(response, error)
    if transient is not None:
        return transient
    described = _describe(response, error)
    if status == 404:
        if error.code in _UNKNOWN_BILLING_ID:
            # The mapped billing id names no subscription: this event's problem, like Stripe's unknown customer.
            return BillerRejected(described)
        # No such route (a wrong LAGO_API_URL) or no such metric (a wrong LAGO_METRIC_CODE): every event would
        # fail alike, so they wait for the operator instead of being parked one by one.
        cause = "config" if error.code == "billable_metric_not_found" else "not_found"
        return BillerUnavailable(described, cause=cause)
    if 400 <= status < 500:
        return BillerRejected(described)
    return BillerUnavailable(described, cause="unknown")


def known_positions(response: httpx.Response, size: int) -> set[int]:
    """The positions a refused batch names as already known, when that is ALL it says; otherwise none.

    Lago's batch 422 keys `error_details` by position (`{"0": {"transaction_id": ["value_already_exist"]}}`). A
    position with any other error, or details of another shape (`{"events": ["too_many_events"]}`), means the batch
    was refused for something else: then no position is taken as known, and the batch is an error as a whole.
    """
    if response.status_code != 422:
        return set()
    details = error_body(response).error_details
    if not isinstance(details, Mapping) or not details:
        return set()
    known: set[int] = set()
    for key, errors in details.items():
        position = int(key) if isinstance(key, str) and key.isdigit() else -1
        if not 0 <= position < size or not isinstance(errors, Mapping) or set(errors) != {"transaction_id"}:
            return set()
        if not names_known_transaction(errors):
            return set()
        known.add(position)
    return known


def portal_error(response: httpx.Response) -> GatewayError:
    """Map a non-2xx answer to a portal call to the BillingPortal port's errors."""
    error = error_body(response)
    transient = _transient(response, error)
    if transient is not None:
        return transient
    if response.status_code == 404 and error.code in _UNKNOWN_BILLING_ID:
        return NoBillingAccount("the billing account linked to this customer does not exist at the biller")
    described = _describe(response, error)
    if 400 <= response.status_code < 500:
        return BillerRejected(described)
    return BillerUnavailable(described, cause="unknown")


def _transient(response: httpx.Response, error: LagoErrorBody) -> BillerUnavailable | None:
    """The answers that say "not now" for any call, or None."""
    status = response.status_code
    described = _describe(response, error)
    if status == 429:
        # Lago limits per organization (500 events/s by default) and says when the window resets in
        # `X-RateLimit-Reset` (seconds) [docs api-reference/rate-limits]; a proxy in front may send Retry-After.
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = delta_seconds(response.headers.get("X-RateLimit-Reset"))
        return BillerRateLimited(described, retry_after_s=retry_after)
    if status >= 500:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return BillerUnavailable(described, cause="server_error", retry_after_s=retry_after)
    if status in (401, 403):
        # A missing, wrong or revoked API key, or a plan without the feature: the operator's problem, and it fails
        # every call alike. Parking would move the whole backlog aside; waiting keeps it pending until fixed.
        return BillerUnavailable(described, cause="auth")
    if status in (408, 409):
        return BillerUnavailable(described, cause="timeout" if status == 408 else "conflict")
    return None


def error_body(response: httpx.Response) -> LagoErrorBody:
    """Lago's error body, or an empty one when the body is not Lago's JSON (a proxy's HTML page, nothing)."""
    try:
        return msgspec.json.decode(response.content, type=LagoErrorBody)
    except msgspec.MsgspecError:
        return LagoErrorBody()


def names_known_transaction(details: Any) -> bool:
    """True when `error_details` says the transaction_id is already taken (Lago: `value_already_exist`)."""
    if not isinstance(details, Mapping):
        return False
    codes = details.get("transaction_id")
    return isinstance(codes, list) and any(code in _ALREADY_EXISTS for code in codes)


def _describe(response: httpx.Response, error: LagoErrorBody) -> str:
    """`Lago 422 validation_errors: properties: value_is_not_valid_number`, short enough for a parked record."""
    what = error.code or error.error or response.reason_phrase or "error"
    text = f"Lago {response.status_code} {what}"
    if isinstance(error.error_details, Mapping) and error.error_details:
        details = "; ".join(
            f"{field}: {', '.join(map(str, codes)) if isinstance(codes, list) else codes}"
            for field, codes in error.error_details.items()
        )
        text = f"{text}: {details}"
    return text[:_MAX_MESSAGE_CHARS]
