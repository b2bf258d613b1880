"""One Stripe SDK client on one httpx connection pool, as every adapter of this package opens it."""

from __future__ import annotations

import stripe


class StripeConnection:
    """An async `StripeClient` and the httpx pool under it; `close` releases the pool.

    The SDK's own retries stay off: they would reuse one Idempotency-Key and stack under the dispatcher's.
    STRIPE_API_BASE (`api_base`) points the "api" host, and with `meter_events` the v2 stream's host too, at a local
    server or stripe-mock. httpx applies `timeout_s` to each phase of a call (connect, write, read, pool).
    """

    def __init__(self, api_key: str, *, api_base: str | None, timeout_s: float, meter_events: bool = False) -> None:
        self._api_base = api_base
        self._meter_events = meter_events
        self.http = stripe.HTTPXClient(timeout=timeout_s)
        self.client = self.client_for(api_key)

    def client_for(self, api_key: str) -> stripe.StripeClient:
        """Another client on the same pool, authenticated with `api_key` (the v2 stream's session token)."""
        base = self._api_base
        return stripe.StripeClient(
            api_key,
            base_addresses=(
                None if not base else {"api": base, "meter_events": base} if self._meter_events else {"api": base}
            ),
            max_network_retries=0,
            http_client=self.http,
        )

    async def close(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]  # unannotated in stripe 16.1
