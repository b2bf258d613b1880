"""The BatchBillingSink contract for local billers: a batch is recorded whole, one outcome per event, in order.

A local biller that takes batches joins with its fixture name below (the SQLite and Redis ledger billers do; the Stripe
stream adapter is tested against the fake Stripe in tests/adapters/test_stripe_stream.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gateway.domain.ports import BatchBillingSink, Delivery, MeterEvent

if TYPE_CHECKING:
    from tests.contract.conftest import LocalBiller


@pytest.fixture(params=["sqlite_biller", "redis_biller", "postgres_biller", "lago_biller"])
def biller(request: pytest.FixtureRequest) -> LocalBiller:
    local: LocalBiller = request.getfixturevalue(request.param)
    assert isinstance(local.sink, BatchBillingSink)
    return local


def meter_event(identifier: str, value: int = 10) -> MeterEvent:
    return MeterEvent(identifier=identifier, customer="cus_A", value=value, timestamp=1_799_999_990)


async def test_send_batch_records_every_event_and_answers_each_in_order(biller: LocalBiller) -> None:
    assert isinstance(biller.sink, BatchBillingSink)
    batch = [meter_event(f"evt_{n}", n) for n in range(5)]

    outcomes = await biller.sink.send_batch(batch)

    assert outcomes == [Delivery.SENT] * 5
    assert await biller.events() == batch


async def test_send_batch_answers_already_sent_for_known_identifiers_and_keeps_the_first(biller: LocalBiller) -> None:
    assert isinstance(biller.sink, BatchBillingSink)
    await biller.sink.send(meter_event("evt_KNOWN", 1))

    outcomes = await biller.sink.send_batch([meter_event("evt_NEW", 2), meter_event("evt_KNOWN", 3)])

    assert outcomes == [Delivery.SENT, Delivery.ALREADY_SENT]
    assert await biller.events() == [meter_event("evt_KNOWN", 1), meter_event("evt_NEW", 2)]


async def test_a_batch_takes_max_batch_events(biller: LocalBiller) -> None:
    assert isinstance(biller.sink, BatchBillingSink)
    batch = [meter_event(f"evt_{n}") for n in range(biller.sink.max_batch)]

    outcomes = await biller.sink.send_batch(batch)

    assert len(outcomes) == biller.sink.max_batch
    assert len(await biller.events()) == biller.sink.max_batch
