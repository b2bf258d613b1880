"""The one place where Stripe's SDK errors and its `Retry-After` become the gateway's errors.

Nothing named `stripe.*` leaves the Stripe adapters: each call site catches `stripe.StripeError` and hands it here.
A refusal that can never succeed is BillerRejected (a meter event is parked); anything else is BillerUnavailable or
BillerRateLimited (the entry stays pending and the dispatcher retries it with backoff).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NoReturn

import httpx
import stripe

from gateway.adapters.http_retry import delta_seconds, retry_after_seconds
from gateway.domain.errors import (
    BillerMisconfigured,
    BillerRateLimited,
    BillerRejected,
    BillerUnavailable,
    GatewayError,
    NoBillingAccount,
)
from gateway.domain.ports import Delivery

# Stripe's answer to a second event with a known identifier: "An event already exists with identifier <id>." It is
# a 400 with Stripe-Should-Retry: false and means the event is already recorded.
_ALREADY_EXISTS = re.compile(r"already exists with identifier", re.IGNORECASE)


def timed_out(timeout_s: float) -> BillerUnavailable:
    return BillerUnavailable(f"Stripe did not answer within {timeout_s:g}s", cause="timeout")


def unexpected(exc: BaseException) -> BillerUnavailable:
    """The boundary's last resort: whatever else went wrong keeps the entry and is retried later."""
    return BillerUnavailable(f"unexpected error calling Stripe: {type(exc).__name__}", cause="unknown")


def meter_event_outcome(exc: stripe.StripeError) -> Delivery:
    """A failed meter event call as the port's outcome: ALREADY_SENT, or raise a Biller* error from `exc`."""
    status = exc.http_status
    headers = exc.headers or {}
    message = exc.user_message or type(exc).__name__
    should_retry = header(headers, "Stripe-Should-Retry")
    retry_after = retry_after_seconds(header(headers, "Retry-After"))
    described = _described(exc)

    if isinstance(exc, stripe.APIConnectionError):
        raise _unreachable(exc) from exc
    if status == 400 and _ALREADY_EXISTS.search(message):
        return Delivery.ALREADY_SENT
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        # Stripe's SDK never retries a 429; the dispatcher backs off with jitter (Stripe docs: rate-limits).
        raise BillerRateLimited(described, retry_after_s=retry_after) from exc
    if status is not None and status >= 500:
        # Even with Stripe-Should-Retry: false: that header speaks of replaying the same Idempotency-Key, and each
        # of our attempts carries a fresh one, so a later attempt is a new request that may well succeed.
        raise BillerUnavailable(described, cause="server_error", retry_after_s=retry_after) from exc
    if status == 409:
        # Conflicts (e.g. lock_timeout) are transient; the SDK itself treats 409 as retryable.
        raise BillerUnavailable(described, cause="conflict", retry_after_s=retry_after) from exc
    if status in (401, 403):
        # A bad, revoked or under-privileged API key is the operator's problem and fails every event alike.
        # Parking would move the whole backlog aside; waiting keeps it pending until the key is fixed.
        raise BillerUnavailable(described, cause="auth", retry_after_s=retry_after) from exc
    if status == 404:
        # The meter event endpoints answer 404 only for a wrong URL (a misconfigured STRIPE_API_BASE); a missing
        # customer is a 400. Again a deployment problem, not this event's: keep it pending.
        raise BillerUnavailable(described, cause="not_found", retry_after_s=retry_after) from exc
    if should_retry == "true":
        # Stripe explicitly advises a retry (e.g. a lock timeout reported as a 4xx).
        raise BillerUnavailable(described, cause="retry_advised", retry_after_s=retry_after) from exc
    if isinstance(exc, stripe.IdempotencyError):
        # Impossible with a fresh key per call; if it happens anyway, a retry (with a new key) is the remedy.
        raise BillerUnavailable(described, cause="idempotency", retry_after_s=retry_after) from exc
    if status is not None and 400 <= status < 500:
        raise BillerRejected(message) from exc
    raise BillerUnavailable(described, cause="unknown", retry_after_s=retry_after) from exc


def raise_stream_error(exc: stripe.StripeError) -> NoReturn:
    """A failed v2 session or stream call: the v2 endpoints answer with the same envelope and statuses as v1."""
    meter_event_outcome(exc)
    # It returns only for v1's "an event already exists", which neither the session nor the stream ever says.
    raise BillerUnavailable(f"unexpected answer from Stripe: {type(exc).__name__}", cause="unknown") from exc


def raise_session_error(exc: stripe.StripeError) -> NoReturn:
    """A failed `POST /v2/billing/meter_event_session`. Any 4xx but 409 and 429 refuses this deployment's key or
    account (Stripe says nothing of the events there), so it is a configuration fault, never a rejection of the
    events: BillerMisconfigured keeps them pending and pauses the dispatcher. Anything else: as a stream call."""
    status = exc.http_status
    if status is not None and 400 <= status < 500 and status not in (409, 429):
        cause = "auth" if status in (401, 403) else "session_refused"
        raise BillerMisconfigured(f"meter event session refused: {_described(exc)}", cause=cause) from exc
    raise_stream_error(exc)


def portal_error(exc: stripe.StripeError) -> GatewayError:
    """A failed portal call as the BillingPortal port's error (see gateway/adapters/stripe/portal.py)."""
    status = exc.http_status
    described = _described(exc)
    # Passed on to the user's client as it came, in delta-seconds only.
    retry_after = delta_seconds(header(exc.headers or {}, "Retry-After"))
    if isinstance(exc, stripe.APIConnectionError):
        return _unreachable(exc)
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return BillerRateLimited(described, retry_after_s=retry_after)
    if status is not None and (status >= 500 or status == 409):
        cause = "server_error" if status >= 500 else "conflict"
        return BillerUnavailable(described, cause=cause, retry_after_s=retry_after)
    if status in (401, 403):
        return BillerUnavailable(described, cause="auth")
    if exc.code == "resource_missing" and getattr(exc, "param", None) == "customer":
        return NoBillingAccount("the billing account linked to this customer does not exist at the biller")
    return BillerRejected(described)


def read_error(exc: stripe.StripeError) -> GatewayError:
    """A failed read (events, meter event summaries) as the gateway's error: BillerUnavailable for anything that may
    pass (connection, 5xx, 409, 429, a bad key, a wrong URL), BillerRejected for a request Stripe refuses as such."""
    status = exc.http_status
    described = _described(exc)
    retry_after = retry_after_seconds(header(exc.headers or {}, "Retry-After"))
    if isinstance(exc, stripe.APIConnectionError):
        return _unreachable(exc)
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return BillerRateLimited(described, retry_after_s=retry_after)
    if status is None or status >= 500 or status in (401, 403, 404, 409):
        cause = _READ_CAUSES.get(status or 0, "server_error")
        return BillerUnavailable(described, cause=cause, retry_after_s=retry_after)
    return BillerRejected(described)


_READ_CAUSES = {0: "unknown", 401: "auth", 403: "auth", 404: "not_found", 409: "conflict"}


def operator_message(exc: stripe.StripeError) -> str:
    """Stripe's message on one line, for an operator running a set-up command."""
    message = exc.user_message or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup: the SDK hands over httpx.Headers, but its type says dict."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value.strip()
    return None


def _described(exc: stripe.StripeError) -> str:
    message = exc.user_message or type(exc).__name__
    return f"Stripe {exc.http_status}: {message}" if exc.http_status else message


def _unreachable(exc: stripe.APIConnectionError) -> BillerUnavailable:
    # The SDK wraps every transport failure in APIConnectionError and chains the httpx error as __cause__.
    cause = "timeout" if isinstance(exc.__cause__, httpx.TimeoutException) else "connection"
    return BillerUnavailable(f"cannot reach Stripe ({cause})", cause=cause)
