"""StripeBillingSink through the real `stripe` SDK against the fake Stripe server: outcomes and error translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.adapters.stripe.rules import meter_identifier
from gateway.adapters.stripe.sink import StripeBillingSink
from gateway.domain.errors import BillerRejected, BillerUnavailable
from gateway.domain.ports import BillingSink, Delivery, MeterEvent
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

EVENT = MeterEvent(identifier="evt_1", customer="cus_A", value=1_500, timestamp=1_800_000_000)


@pytest.fixture
async def sink(fake_stripe: FakeStripe) -> AsyncIterator[StripeBillingSink]:
    biller = StripeBillingSink(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=0.5)
    yield biller
    await biller.close()


def test_sink_is_a_billing_sink_named_stripe() -> None:
    biller: BillingSink = StripeBillingSink(FAKE_API_KEY)

    assert biller.name == "stripe"


async def test_send_returns_sent_and_stripe_holds_the_event(fake_stripe: FakeStripe, sink: StripeBillingSink) -> None:
    outcome = await sink.send(EVENT)

    assert outcome is Delivery.SENT
    assert fake_stripe.meter_events == [
        {
            "event_name": "ringside_spend",
            "identifier": "evt_1",
            "customer": "cus_A",
            "value": 1_500,
            "timestamp": 1_800_000_000,
        }
    ]
    assert fake_stripe.invalid_requests == []


async def test_send_uses_the_configured_event_name(fake_stripe: FakeStripe) -> None:
    biller = StripeBillingSink(FAKE_API_KEY, event_name="other_meter", api_base=fake_stripe.url)
    try:
        await biller.send(EVENT)
    finally:
        await biller.close()

    assert [e["event_name"] for e in fake_stripe.meter_events] == ["other_meter"]


async def test_identifier_longer_than_stripe_allows_is_sent_as_its_stable_digest(
    fake_stripe: FakeStripe, sink: StripeBillingSink
) -> None:
    long_id = "evt_" + "x" * 200

    await sink.send(MeterEvent(identifier=long_id, customer="cus_A", value=1, timestamp=1_800_000_000))

    assert [e["identifier"] for e in fake_stripe.meter_events] == [meter_identifier(long_id)]
    assert fake_stripe.invalid_requests == []


async def test_server_error_is_transient_even_when_stripe_says_not_to_retry(
    fake_stripe: FakeStripe, sink: StripeBillingSink
) -> None:
    # Stripe-Should-Retry: false on a 500 is about replaying that Idempotency-Key; our next attempt has a new one.
    fake_stripe.fail_next(1, status=503, should_retry=False, retry_after=2)

    with pytest.raises(BillerUnavailable) as unavailable:
        await sink.send(EVENT)

    assert unavailable.value.cause == "server_error"
    assert unavailable.value.retry_after_s == 2.0


async def test_conflict_raises_biller_unavailable(fake_stripe: FakeStripe, sink: StripeBillingSink) -> None:
    fake_stripe.fail_next(1, status=409)

    with pytest.raises(BillerUnavailable) as unavailable:
        await sink.send(EVENT)

    assert unavailable.value.cause == "conflict"


async def test_client_error_is_transient_when_stripe_advises_a_retry(
    fake_stripe: FakeStripe, sink: StripeBillingSink
) -> None:
    fake_stripe.fail_next(1, status=400, should_retry=True)

    with pytest.raises(BillerUnavailable) as unavailable:
        await sink.send(EVENT)

    assert type(unavailable.value) is BillerUnavailable
    assert unavailable.value.cause == "retry_advised"


async def test_retry_after_a_timeout_that_stripe_processed_is_already_sent(
    fake_stripe: FakeStripe, sink: StripeBillingSink
) -> None:
    # Stripe recorded the event but the answer came too late: the retry must be success, never a second event.
    fake_stripe.hang_next(1, seconds=0.8, then_process=True)
    with pytest.raises(BillerUnavailable):
        await sink.send(EVENT)
    await asyncio.to_thread(fake_stripe.wait_for_meter_events, 1)

    outcome = await sink.send(EVENT)

    assert outcome is Delivery.ALREADY_SENT
    assert len(fake_stripe.meter_events) == 1


async def test_each_attempt_carries_a_fresh_idempotency_key(fake_stripe: FakeStripe, sink: StripeBillingSink) -> None:
    fake_stripe.fail_next(1, status=500)
    with pytest.raises(BillerUnavailable):
        await sink.send(EVENT)

    await sink.send(EVENT)

    keys = [r.idempotency_key for r in fake_stripe.requests]
    assert len(keys) == 2  # one call per send: the SDK does not retry on its own
    assert keys[0] != keys[1]
    assert None not in keys


async def test_unknown_customer_raises_rejected_with_stripes_message(
    fake_stripe: FakeStripe, sink: StripeBillingSink
) -> None:
    fake_stripe.known_customers = {"cus_KNOWN"}

    with pytest.raises(BillerRejected) as rejected:
        await sink.send(EVENT)

    assert rejected.value.message == "No such customer: 'cus_A'"
    assert fake_stripe.meter_events == []


async def test_wrong_base_url_raises_unavailable_not_found(fake_stripe: FakeStripe) -> None:
    biller = StripeBillingSink(FAKE_API_KEY, api_base=fake_stripe.url + "/not-stripe")
    try:
        with pytest.raises(BillerUnavailable) as unavailable:
            await biller.send(EVENT)
    finally:
        await biller.close()

    assert unavailable.value.cause == "not_found"


async def test_value_beyond_fifteen_digits_is_rejected_without_a_call(
    fake_stripe: FakeStripe, sink: StripeBillingSink
) -> None:
    with pytest.raises(BillerRejected):
        await sink.send(MeterEvent(identifier="evt_big", customer="cus_A", value=10**15, timestamp=1_800_000_000))

    assert fake_stripe.requests == []


async def test_errors_raised_are_the_gateways_own(fake_stripe: FakeStripe, sink: StripeBillingSink) -> None:
    fake_stripe.fail_next(1, status=402)

    with pytest.raises(BillerRejected) as rejected:
        await sink.send(EVENT)

    assert type(rejected.value).__module__ == "gateway.domain.errors"
