"""Lago behind the BillingSink port: one usage event per ledger entry, or up to 100 per batch request.

Lago bills usage by *subscription*: the gateway's billing id for a Ringside customer (`MeterEvent.customer`) is a
Lago subscription's `external_id`, and each ledger entry becomes one event (Lago docs: api-reference/events/usage):

    POST /api/v1/events
    {"event": {"transaction_id": <Ringside event id>, "external_subscription_id": <billing id>,
               "code": LAGO_METRIC_CODE, "timestamp": <unix seconds>, "properties": {LAGO_UNITS_PROPERTY: <units>}}}

`external_customer_id` is never sent: Lago's docs mark it deprecated on events and its API drops it, so an event
that named only a customer would be stored and never billed. docs/billers.md ("Lago: what the adapter relies on")
says why this calls the HTTP API rather than the official client.

Invariants:
- One `send` is exactly one HTTP request; nothing here sleeps or retries a failed request.
- Exactly once: the `transaction_id` is the dispatcher's stable identifier for the ledger entry. Lago keeps one
  event per (organization, external_subscription_id, transaction_id) and answers a second one with `422`
  `{"error_details": {"transaction_id": ["value_already_exist"]}}`: that is ALREADY_SENT, so a crash between Lago's
  acceptance and `mark_sent` costs one extra call, never a double charge.
- Errors are translated by gateway/adapters/lago/errors.py; nothing named `httpx.*` leaves this package.
- A 2xx means Lago stored the event, not that it will bill it: Lago checks the metric code and the aggregation
  property after ingestion and reports invalid events through its `events.errors` webhook. Keep LAGO_METRIC_CODE /
  LAGO_UNITS_PROPERTY equal to the metric's, and the customer store's billing ids equal to live subscriptions'.
- A batch (`POST /api/v1/events/batch`, at most 100 events) is all or nothing at Lago: one known transaction_id
  refuses it with `422` and `error_details` keyed by position. The known positions are ALREADY_SENT and the others
  go again in one more batch request, until Lago takes the rest; each round removes at least one event, so it ends.
  A batch refused for any other reason is BillerRejected as a whole (the dispatcher then resends its events one per
  call, so only the faulty one is parked); a transient failure of any round fails the whole call.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gateway.adapters.lago.client import DEFAULT_API_URL, LagoClient, call
from gateway.adapters.lago.errors import error_body, known_positions, names_known_transaction, send_error
from gateway.domain.errors import BillerRejected
from gateway.domain.ports import BatchBillingSink, Delivery, MeterEvent

DEFAULT_UNITS_PROPERTY = "units"
# POST /api/v1/events/batch: "Each API call may include up to 100 events" (Lago changelog, batch endpoint;
# Events::CreateBatchService::MAX_LENGTH).
MAX_BATCH = 100


class LagoBillingSink(BatchBillingSink):
    """Sends MeterEvents to `POST /api/v1/events` (`send`) or `POST /api/v1/events/batch` (`send_batch`).

    `send` returns SENT, or ALREADY_SENT when Lago already holds the transaction id for that subscription, or raises
    BillerRejected / BillerUnavailable / BillerRateLimited per the BillingSink port.
    `send_batch` returns one of those Deliveries per event, in order, or raises for the whole call.
    """

    name = "lago"
    max_batch = MAX_BATCH

    def __init__(
        self,
        api_key: str,
        *,
        metric_code: str,
        api_url: str = DEFAULT_API_URL,
        units_property: str = DEFAULT_UNITS_PROPERTY,
        timeout_s: float = 10.0,
    ) -> None:
        if not metric_code:
            raise ValueError("a Lago billable metric code is required")
        if not units_property:
            raise ValueError("a Lago units property name is required")
        self._metric_code = metric_code
        self._units_property = units_property
        self._lago = LagoClient(api_key, api_url, timeout_s)

    async def send(self, event: MeterEvent) -> Delivery:
        """Record `event` in Lago. ALREADY_SENT when Lago already holds its transaction id (that is success)."""
        body = {"event": self._lago_event(event)}
        response = await call(self._lago, "POST", "events", content=msgspec.json.encode(body))
        if response.is_success:
            return Delivery.SENT
        if response.status_code == 422 and names_known_transaction(error_body(response).error_details):
            return Delivery.ALREADY_SENT
        raise send_error(response)

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record 1 to `max_batch` events, all or none per request; known positions are ALREADY_SENT, see the module."""
        if not 1 <= len(events) <= self.max_batch:
            raise ValueError(f"a Lago batch carries 1 to {self.max_batch} events, not {len(events)}")
        bodies = [self._lago_event(event) for event in events]
        outcomes: list[Delivery | None] = [None] * len(events)
        pending = list(range(len(events)))
        while pending:
            content = msgspec.json.encode({"events": [bodies[index] for index in pending]})
            response = await call(self._lago, "POST", "events/batch", content=content)
            if response.is_success:
                for index in pending:
                    outcomes[index] = Delivery.SENT
                break
            known = known_positions(response, len(pending))
            if not known:
                raise send_error(response)
            for position in known:
                outcomes[pending[position]] = Delivery.ALREADY_SENT
            pending = [index for position, index in enumerate(pending) if position not in known]
        # Every position was settled: the loop ends only when none is pending.
        return [outcome for outcome in outcomes if outcome is not None]

    def _lago_event(self, event: MeterEvent) -> dict[str, object]:
        """The event as Lago's API takes it; BillerRejected for one that Lago must never be sent."""
        if not event.identifier:
            # Lago would answer `value_is_missing_or_already_exists`, which must never read as "already sent".
            raise BillerRejected("a meter event without an identifier cannot be sent to Lago")
        if event.value < 0:
            raise BillerRejected(f"meter event value {event.value} is negative")
        return {
            "transaction_id": event.identifier,
            "external_subscription_id": event.customer,
            "code": self._metric_code,
            # Unix seconds: Lago reads a numeric timestamp as seconds (`Time.zone.at(timestamp.to_f)`).
            "timestamp": event.timestamp,
            # An integer, so a `sum` metric on this field adds exact units (Lago parses JSON integers exactly).
            "properties": {self._units_property: event.value},
        }

    async def close(self) -> None:
        """Close the httpx client's connection pool."""
        await self._lago.close()
