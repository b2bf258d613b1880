"""The local ledger biller's contract: it records meter events instead of sending them, once per identifier.

Like Stripe, which de-duplicates meter events by `identifier`, a second send of an identifier is ALREADY_SENT
(success) and keeps the first event. A new local biller joins with one fixture in conftest.py and one name below.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from gateway.domain.ports import Delivery, MeterEvent

if TYPE_CHECKING:
    from tests.contract.conftest import LocalBiller


@pytest.fixture(params=["memory_biller", "sqlite_biller", "redis_biller", "postgres_biller", "lago_biller"])
def biller(request: pytest.FixtureRequest) -> LocalBiller:
    local: LocalBiller = request.getfixturevalue(request.param)
    return local


def meter_event(identifier: str, *, customer: str = "cus_A", value: int = 1234) -> MeterEvent:
    return MeterEvent(identifier=identifier, customer=customer, value=value, timestamp=1_799_999_990)


async def test_send_returns_sent_and_records_event_when_identifier_is_new(biller: LocalBiller) -> None:
    event = meter_event("evt_NEW")

    assert await biller.sink.send(event) is Delivery.SENT

    assert await biller.events() == [event]


async def test_send_returns_already_sent_and_keeps_first_event_when_identifier_repeats(biller: LocalBiller) -> None:
    first = meter_event("evt_DUPLICATE", value=1)
    await biller.sink.send(first)

    again = await biller.sink.send(meter_event("evt_DUPLICATE", value=2))

    assert again is Delivery.ALREADY_SENT
    assert await biller.events() == [first]


async def test_events_are_read_back_in_send_order_when_several_are_sent(biller: LocalBiller) -> None:
    events = [
        meter_event("evt_B", customer="cus_B", value=0),
        meter_event("evt_A", customer="cus_A", value=999_999_999_999_999),
        meter_event("evt_C", customer="cus_A", value=7),
    ]
    for event in events:
        await biller.sink.send(event)

    assert await biller.events() == events


async def test_one_event_is_kept_when_sends_of_one_identifier_race(biller: LocalBiller) -> None:
    deliveries = await asyncio.gather(*(biller.sink.send(meter_event("evt_RACE", value=n)) for n in range(20)))

    assert deliveries.count(Delivery.SENT) == 1
    assert deliveries.count(Delivery.ALREADY_SENT) == 19
    assert len(await biller.events()) == 1


async def test_close_keeps_every_recorded_event_when_biller_is_idle(biller: LocalBiller) -> None:
    await biller.sink.send(meter_event("evt_BEFORE_CLOSE"))

    await biller.sink.close()

    assert await biller.events() == [meter_event("evt_BEFORE_CLOSE")]
