"""Ingest: a signed delivery in, a durable ledger record (or a parked one) out, before the acknowledgement.

Order matters (docs/design.md, "The wire contract"): verify the signature over the raw bytes before trusting any
of them; parse; decide; resolve the billing customer; record atomically with the claim on the event id. Ingest never
calls the biller.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.errors import GatewayError, StoreUnavailable
from gateway.domain.event import Event, InvalidEvent, parse_event, restamped
from gateway.domain.ledger import Claim, Parked, ParkReason
from gateway.domain.outcome import Outcome, Status
from gateway.domain.policy import Bill, BillingPolicy, Ignore, Park, assess
from gateway.domain.ports import Clock, CustomerStore, IngestLedger
from gateway.domain.signature import SignatureVerifier
from gateway.service.metrics import Metrics, NoMetrics

__all__ = ["Ingest", "Outcome", "Status"]  # Outcome and Status are the domain's, importable from here too


class Ingest:
    def __init__(
        self,
        verifier: SignatureVerifier,
        ledger: IngestLedger,
        customers: CustomerStore,
        clock: Clock,
        policy: BillingPolicy,
        on_recorded: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        stripe_ids_on_events: bool = True,
    ) -> None:
        """`stripe_ids_on_events`: take the billing customer from an event's `stripe_customer_id` metadata.

        Only a Stripe id can be found there, so it is False for a biller whose ids are something else (Lago's
        subscriptions): the customer store alone maps Ringside customers then, and an event is never billed to an
        id its biller cannot know.
        """
        self._verifier = verifier
        self._ledger = ledger
        self._customers = customers
        self._clock = clock
        self._policy = policy
        self._on_recorded = on_recorded
        self._metrics = metrics or NoMetrics()
        self._stripe_ids_on_events = stripe_ids_on_events

    async def deliver(self, signature: str | None, body: bytes) -> Outcome:
        """Handle one delivery. Raises SignatureError (nothing touched) or StoreUnavailable (nothing recorded).

        Every delivery is counted once, by its outcome: the response status, or `refused` / `unavailable` with the
        error's code.
        """
        try:
            now = self._clock.now()
            signed_at = self._verifier.verify(signature, body, now)
            outcome = await self.process(body, signed_at, now)
        except GatewayError as exc:
            self._metrics.delivery("unavailable" if isinstance(exc, StoreUnavailable) else "refused", exc.code)
            raise
        self._metrics.delivery(outcome.status.value, outcome.reason.value if outcome.reason else "")
        return outcome

    def screen(self, signature: str | None) -> None:
        """Refuse, before its body is read, a delivery whose signature header no body could make valid.

        Raises SignatureError (counted as refused); a delivery it lets through still goes through `deliver`.
        """
        try:
            self._verifier.screen(signature, self._clock.now())
        except GatewayError as exc:
            self._metrics.delivery("refused", exc.code)
            raise

    def refused(self, error: GatewayError) -> None:
        """Count a delivery refused before it could reach `deliver` (a body over the size limit or too slow)."""
        self._metrics.delivery("refused", error.code)

    async def process(
        self, body: bytes, signed_at: int, now: float, *, replaces: str | None = None, restamp: bool = False
    ) -> Outcome:
        """Run an authenticated body through the pipeline. `replaces` names a parked record being replayed;
        `restamp` bills the event at `now` instead of its own time (an operator's replay of a too_old event)."""
        try:
            event = parse_event(body)
        except InvalidEvent as exc:
            return await self._park(
                Parked(exc.key, ParkReason.INVALID_PAYLOAD, exc.message, body, signed_at, now, exc.event_type),
                replaying=replaces is not None,
            )
        if restamp:
            event = restamped(event, int(now))
        decision = assess(event, signed_at, now, self._policy)
        if isinstance(decision, Ignore):
            return Outcome(Status.IGNORED, event.id, event_type=event.type)
        replaying = replaces is not None
        if isinstance(decision, Park):
            return await self._park(
                _parked(event, body, signed_at, now, decision.reason, decision.message), replaying=replaying
            )
        customer = await self._resolve_customer(event.stripe_customer, event.ringside_customer)
        if customer is None:
            message = f"no billing customer is mapped to Ringside customer {event.ringside_customer!r}"
            return await self._park(
                _parked(event, body, signed_at, now, ParkReason.UNKNOWN_CUSTOMER, message), replaying=replaying
            )
        return await self._record(event.id, event.type, customer, event.ringside_customer, decision, now, replaces)

    async def _resolve_customer(self, on_event: str | None, ringside_customer: str | None) -> str | None:
        """The event's own Stripe id first (for a Stripe-id biller), then the store (docs/design.md, "Customer
        mapping")."""
        if on_event and self._stripe_ids_on_events:
            return on_event
        if ringside_customer:
            return await self._customers.get(ringside_customer)
        return None

    async def _record(
        self,
        event_id: str,
        event_type: str,
        customer: str,
        ringside_customer: str | None,
        bill: Bill,
        now: float,
        replaces: str | None,
    ) -> Outcome:
        claim = Claim(
            event_id=event_id,
            event_type=event_type,
            billing_customer=customer,
            ringside_customer=ringside_customer,
            cost_usd=bill.cost_usd,
            exact_units=bill.exact_units,
            timestamp=bill.timestamp,
        )
        recorded = await self._ledger.record(claim, self._policy.rounding, now, replaces=replaces)
        if not recorded.created:
            return Outcome(Status.DUPLICATE, event_id, event_type=event_type, customer=customer)
        self._on_recorded()
        units = recorded.entry.units if recorded.entry else None
        self._metrics.units_accepted(units or 0)
        return Outcome(Status.ACCEPTED, event_id, units=units, event_type=event_type, customer=customer)

    async def _park(self, parked: Parked, *, replaying: bool) -> Outcome:
        if replaying:
            # A replay that still cannot be billed leaves its parked record where it is.
            return Outcome(Status.PARKED, parked.key, reason=parked.reason, message=parked.message)
        if not await self._ledger.park(parked):
            return Outcome(Status.DUPLICATE, parked.key, event_type=parked.event_type)
        self._metrics.parked(parked.reason.value)
        return Outcome(
            Status.PARKED,
            parked.key,
            reason=parked.reason,
            message=parked.message,
            event_type=parked.event_type,
        )


def _parked(event: Event, body: bytes, signed_at: int, now: float, reason: ParkReason, message: str) -> Parked:
    """The parked record of a parsed event that cannot be billed as it is: the body kept whole for replay."""
    return Parked(event.id, reason, message, body, signed_at, now, event.type, event.ringside_customer)
