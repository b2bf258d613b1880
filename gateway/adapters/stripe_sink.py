"""The Stripe biller: one meter event per ledger entry, through the official SDK (CONTRACT 2).

Invariants:
- One `send` is exactly one HTTP call. The adapter never retries (the dispatcher retries with backoff and jitter,
  and paces calls per customer), so the SDK runs with `max_network_retries=0`.
- Every call carries a fresh `Idempotency-Key` (the SDK makes one per call). We never pass our own: Stripe replays
  a key's first result, a 500 included, for 24 hours, so a key reused across our retries would turn one 500 into a
  day of 500s [docs api/idempotent_requests]. End-to-end dedupe is the event's `identifier` instead.
- Errors are translated here and nothing named `stripe.*` leaves this module: a duplicate identifier is success
  (ALREADY_SENT), a refusal that can never succeed is BillerRejected (the entry is parked), anything else is
  BillerUnavailable / BillerRateLimited (the entry stays pending and is retried).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx
import stripe

from gateway.adapters.stripe_rules import meter_identifier
from gateway.domain.errors import BillerRateLimited, BillerRejected, BillerUnavailable
from gateway.domain.ports import BillingSink, Delivery, MeterEvent

DEFAULT_EVENT_NAME = "ringside_spend"
# Meter event values are whole numbers of at most 15 significant digits (STRIPE-NOTES, changelog 2026-04-22.dahlia).
MAX_VALUE_DIGITS = 15
# Stripe's answer to a second event with a known identifier: "An event already exists with identifier <id>." It is
# a 400 with Stripe-Should-Retry: false and means the event is already recorded (STRIPE-NOTES; langfuse#16292).
_ALREADY_EXISTS = re.compile(r"already exists with identifier", re.IGNORECASE)


class StripeBillingSink(BillingSink):
    """Sends MeterEvents to `POST /v1/billing/meter_events`.

    `send` returns SENT or ALREADY_SENT, or raises BillerRejected / BillerUnavailable / BillerRateLimited, per the
    BillingSink port. Building one is cheap and does no I/O; `close` releases its HTTP connection pool.
    """

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        event_name: str = DEFAULT_EVENT_NAME,
        api_base: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._event_name = event_name
        self._timeout_s = timeout_s
        # httpx applies `timeout` to each phase (connect, write, read, pool); `send` also bounds the whole call.
        self._http = stripe.HTTPXClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            # STRIPE_API_BASE points both hosts at a local server or stripe-mock; v1 meter events use "api".
            base_addresses={"api": api_base, "meter_events": api_base} if api_base else None,
            # The SDK's own retries would reuse one Idempotency-Key and stack under the dispatcher's (STRIPE-NOTES).
            max_network_retries=0,
            http_client=self._http,
        )

    async def send(self, event: MeterEvent) -> Delivery:
        """Record `event` in Stripe. ALREADY_SENT when Stripe already holds its identifier (that is success)."""
        value = str(event.value)
        if event.value < 0 or len(value.lstrip("0")) > MAX_VALUE_DIGITS:
            raise BillerRejected(f"meter event value {value} is not a whole number of at most 15 digits")
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.v1.billing.meter_events.create_async(
                    {
                        "event_name": self._event_name,
                        "payload": {"stripe_customer_id": event.customer, "value": value},
                        # Idempotent on an identifier that already fits, so applying it here is always safe.
                        "identifier": meter_identifier(event.identifier),
                        "timestamp": event.timestamp,
                    }
                )
        except stripe.StripeError as exc:
            return _translate(exc)
        except TimeoutError as exc:
            raise BillerUnavailable(f"Stripe did not answer within {self._timeout_s:g}s", cause="timeout") from exc
        except Exception as exc:  # the boundary: whatever else goes wrong, keep the entry and retry later
            raise BillerUnavailable(f"unexpected error calling Stripe: {type(exc).__name__}", cause="unknown") from exc
        return Delivery.SENT

    async def close(self) -> None:
        """Close the SDK's httpx.AsyncClient (HTTPXClient.close_async -> AsyncClient.aclose)."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # unannotated in stripe 16.1


def _translate(exc: stripe.StripeError) -> Delivery:
    """Map an SDK error to the port's outcome: ALREADY_SENT, or raise a Biller* error. Never lets `exc` escape."""
    status = exc.http_status
    headers = exc.headers or {}
    message = exc.user_message or type(exc).__name__
    should_retry = _header(headers, "Stripe-Should-Retry")
    retry_after = _retry_after(_header(headers, "Retry-After"))
    described = f"Stripe {status}: {message}" if status else message

    if isinstance(exc, stripe.APIConnectionError):
        # The SDK wraps every transport failure in APIConnectionError and chains the httpx error as __cause__.
        cause = "timeout" if isinstance(exc.__cause__, httpx.TimeoutException) else "connection"
        raise BillerUnavailable(f"cannot reach Stripe ({cause})", cause=cause) from exc
    if status == 400 and _ALREADY_EXISTS.search(message):
        return Delivery.ALREADY_SENT
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        # Stripe's SDK never retries a 429; we back off with jitter (STRIPE-NOTES, docs rate-limits).
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
        # POST /v1/billing/meter_events answers 404 only for a wrong URL (a misconfigured STRIPE_API_BASE); a
        # missing customer is a 400. Again a deployment problem, not this event's: keep it pending.
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


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup: the SDK hands over httpx.Headers, but its type says dict."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value.strip()
    return None


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
