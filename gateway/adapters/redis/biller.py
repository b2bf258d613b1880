"""The local ledger biller in Redis: meter events recorded, not sent, shared by every replica."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from gateway.adapters.redis import scripts
from gateway.adapters.redis.codec import decode_meter_event, encode, raw
from gateway.adapters.redis.errors import store_errors
from gateway.adapters.redis.keys import DEFAULT_PREFIX, Keys
from gateway.domain.errors import BillerUnavailable, StoreUnavailable
from gateway.domain.ports import BatchBillingSink, BillerTotals, Delivery, MeterEvent
from gateway.domain.reconcile import hour_floor


class RedisBiller(BatchBillingSink, BillerTotals):
    """The local ledger biller in Redis: records meter events instead of sending them.

    Invariant: one event per identifier, like Stripe's de-duplication of `identifier`; a second send returns
    ALREADY_SENT and keeps the first. A Redis failure is a transient biller failure (BillerUnavailable), so the
    dispatcher retries the entry rather than parking it. It takes batches like Stripe's v2 stream (up to
    `max_batch` events in one script), so that it costs the dispatcher one round trip per batch, not per event.
    """

    name = "ledger"
    max_batch = 100

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = Keys(prefix)
        self._send_many = scripts.register(client, "send_many")

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record every event in one step; SENT or ALREADY_SENT for each, in order, or nothing at all."""
        keys = self._keys
        try:
            with store_errors():
                stored = await self._send_many(
                    keys=[keys.meter_events, *(keys.meter_event(event.identifier) for event in events)],
                    args=[
                        keys.meter_hours(""),
                        *(
                            value
                            for event in events
                            for value in (encode(event), event.customer, hour_floor(event.timestamp), event.value)
                        ),
                    ],
                )
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc
        return [Delivery.SENT if flag else Delivery.ALREADY_SENT for flag in stored]

    async def send(self, event: MeterEvent) -> Delivery:
        return (await self.send_batch([event]))[0]

    async def hourly_units(self, billing_customer: str, start: int, end: int) -> dict[int, int]:
        """The units recorded for `billing_customer` per hour of the event timestamp, over [start, end)."""
        try:
            with store_errors():
                held = await self._client.hgetall(self._keys.meter_hours(billing_customer))
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc
        hours = {int(hour): int(units) for hour, units in held.items()}
        return {hour: units for hour, units in hours.items() if start <= hour < end}

    async def events(self) -> list[MeterEvent]:
        """Every recorded meter event, in the order they were first sent."""
        with store_errors():
            blobs = await self._client.lrange(self._keys.meter_events, 0, -1)
        return [decode_meter_event(raw(blob)) for blob in blobs]

    async def close(self) -> None:
        # The client belongs to the container (it is shared with the ledger), which closes it.
        return None
