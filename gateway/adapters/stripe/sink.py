"""The Stripe biller: one meter event per ledger entry, each a plain POST that the SDK's error classes describe.

Invariants:
- One `send` is exactly one HTTP call. The adapter never retries (the dispatcher retries with backoff and jitter,
  and paces calls per customer).
- Every call carries a fresh `Idempotency-Key` (wire.py makes one per call, as the SDK does). We never reuse one:
  Stripe replays a key's first result, a 500 included, for 24 hours, so a key reused across our retries would turn
  one 500 into a day of 500s (Stripe docs: api/idempotent_requests). End-to-end dedupe is the event's `identifier`.
- Errors are translated by gateway/adapters/stripe/errors.py: a duplicate identifier is success (ALREADY_SENT), a
  refusal that can never succeed is BillerRejected (the entry is parked), anything else is BillerUnavailable /
  BillerRateLimited (the entry stays pending and is retried).
"""

from __future__ import annotations

import asyncio

import stripe

from gateway.adapters.stripe import errors
from gateway.adapters.stripe.meter import CUSTOMER_KEY, DEFAULT_EVENT_NAME, VALUE_KEY, meter_value
from gateway.adapters.stripe.rules import meter_identifier
from gateway.adapters.stripe.wire import StripeWire
from gateway.domain.ports import BillingSink, Delivery, MeterEvent


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
        self._key = api_key
        # STRIPE_API_BASE points the "api" host, where v1 meter events live, at a local server or stripe-mock.
        self._wire = StripeWire(api_base=api_base)
        self._url = f"{self._wire.api_base}/v1/billing/meter_events"

    async def send(self, event: MeterEvent) -> Delivery:
        """Record `event` in Stripe. ALREADY_SENT when Stripe already holds its identifier (that is success)."""
        value = meter_value(event)
        fields = {
            "event_name": self._event_name,
            f"payload[{CUSTOMER_KEY}]": event.customer,
            f"payload[{VALUE_KEY}]": value,
            # Idempotent on an identifier that already fits, so applying it here is always safe.
            "identifier": meter_identifier(event.identifier),
            "timestamp": str(event.timestamp),
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                # A plain POST, not the SDK: a fraction of its CPU per call at v1's rates (see wire.py).
                await self._wire.post_form(self._url, self._key, fields)
        except stripe.StripeError as exc:
            return errors.meter_event_outcome(exc)
        except TimeoutError as exc:
            raise errors.timed_out(self._timeout_s) from exc
        except Exception as exc:  # the boundary: whatever else goes wrong, keep the entry and retry later
            raise errors.unexpected(exc) from exc
        return Delivery.SENT

    async def close(self) -> None:
        """Close the connection pool."""
        await self._wire.close()
