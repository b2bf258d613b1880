"""LagoBillingSink and LagoBillingPortal against the fake Lago server: the wire shape and error translation."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from gateway.adapters.clock import FrozenClock
from gateway.adapters.lago.portal import LagoBillingPortal
from gateway.adapters.lago.sink import LagoBillingSink
from gateway.adapters.memory import MemoryLedger
from gateway.domain.errors import (
    BillerRateLimited,
    BillerRejected,
    BillerUnavailable,
    NoBillingAccount,
    PortalFlowUnavailable,
)
from gateway.domain.ledger import Claim, State
from gateway.domain.portal import PortalFlow
from gateway.domain.ports import BillingPortal, BillingSink, Delivery, MeterEvent
from gateway.domain.units import Rounding
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.fakes.lago_server import BATCH, FAKE_LAGO_KEY, METRIC_CODE, PORTAL_URL, SUBSCRIPTION, FakeLago

EVENT = MeterEvent(identifier="evt_1", customer="sub_ACME", value=1_500, timestamp=1_800_000_000)
RETURN_URL = "https://app.example.com/account"


@pytest.fixture
async def sink(fake_lago: FakeLago) -> AsyncIterator[LagoBillingSink]:
    biller = LagoBillingSink(FAKE_LAGO_KEY, metric_code=METRIC_CODE, api_url=fake_lago.url, timeout_s=0.5)
    yield biller
    await biller.close()


@pytest.fixture
async def portal(fake_lago: FakeLago) -> AsyncIterator[LagoBillingPortal]:
    fake_lago.add_customer("cust_ACME", subscriptions=["sub_ACME"])
    biller = LagoBillingPortal(FAKE_LAGO_KEY, api_url=fake_lago.url, timeout_s=0.5)
    yield biller
    await biller.close()


def meter_event(identifier: str, customer: str = "sub_ACME", value: int = 10) -> MeterEvent:
    return MeterEvent(identifier=identifier, customer=customer, value=value, timestamp=1_800_000_000)


def refusal(details: dict[str, object]) -> dict[str, object]:
    """Lago's 422 body (ApiErrors#validation_errors)."""
    return {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors", "error_details": details}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the sink: what Lago receives ------------------------------------------------------------------------------------


def test_adapters_are_the_ports_named_lago() -> None:
    sink: BillingSink = LagoBillingSink("key", metric_code=METRIC_CODE)
    portal: BillingPortal = LagoBillingPortal("key")

    assert (sink.name, portal.name) == ("lago", "lago")


async def test_send_returns_sent_and_lago_holds_the_event_by_subscription(
    fake_lago: FakeLago, sink: LagoBillingSink
) -> None:
    outcome = await sink.send(EVENT)

    assert outcome is Delivery.SENT
    assert fake_lago.events == [
        {
            "transaction_id": "evt_1",
            "external_subscription_id": "sub_ACME",
            "code": METRIC_CODE,
            "timestamp": 1_800_000_000,
            "properties": {"units": 1_500},
        }
    ]
    [request] = fake_lago.requests
    assert "external_customer_id" not in request.body["event"]
    assert request.headers["authorization"] == f"Bearer {FAKE_LAGO_KEY}"
    assert fake_lago.invalid_requests == []


async def test_send_uses_the_configured_metric_code_and_units_property(fake_lago: FakeLago) -> None:
    fake_lago.metric_code, fake_lago.units_property = "tokens_spend", "micro_cents"
    biller = LagoBillingSink(
        FAKE_LAGO_KEY, metric_code="tokens_spend", units_property="micro_cents", api_url=fake_lago.url
    )
    try:
        await biller.send(EVENT)
    finally:
        await biller.close()

    [stored] = fake_lago.events
    assert (stored["code"], stored["properties"]) == ("tokens_spend", {"micro_cents": 1_500})
    assert fake_lago.invalid_requests == []


async def test_api_url_may_carry_the_api_v1_path(fake_lago: FakeLago) -> None:
    biller = LagoBillingSink(FAKE_LAGO_KEY, metric_code=METRIC_CODE, api_url=f"{fake_lago.url}/api/v1/")
    try:
        assert await biller.send(EVENT) is Delivery.SENT
    finally:
        await biller.close()

    assert len(fake_lago.events) == 1


async def test_older_lagos_already_exists_code_is_already_sent_too(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    details = {"transaction_id": ["value_is_missing_or_already_exists"]}
    fake_lago.fail_next(1, 422, body={"status": 422, "code": "validation_errors", "error_details": details})

    assert await sink.send(EVENT) is Delivery.ALREADY_SENT


async def test_a_call_lago_processed_after_we_gave_up_is_already_sent_on_retry(
    fake_lago: FakeLago, sink: LagoBillingSink
) -> None:
    fake_lago.hang_next(1, seconds=0.8, then_process=True)
    with pytest.raises(BillerUnavailable) as raised:
        await sink.send(EVENT)
    assert raised.value.cause == "timeout"
    await asyncio.to_thread(fake_lago.wait_for_events, 1)

    outcome = await sink.send(EVENT)

    assert outcome is Delivery.ALREADY_SENT
    assert len(fake_lago.events) == 1


# -- the sink: error translation -------------------------------------------------------------------------------------


async def test_rate_limit_honours_lagos_x_ratelimit_reset(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    fake_lago.fail_next(1, 429, rate_limit_reset=4)

    with pytest.raises(BillerRateLimited) as raised:
        await sink.send(EVENT)

    assert raised.value.retry_after_s == 4
    assert fake_lago.events == []


async def test_rate_limit_prefers_retry_after_when_both_are_sent(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    fake_lago.fail_next(1, 429, retry_after=2, rate_limit_reset=9)

    with pytest.raises(BillerRateLimited) as raised:
        await sink.send(EVENT)

    assert raised.value.retry_after_s == 2


async def test_other_validation_errors_are_rejected_with_lagos_details(
    fake_lago: FakeLago, sink: LagoBillingSink
) -> None:
    details = {"properties": ["value_is_not_valid_number"]}
    fake_lago.fail_next(1, 422, body={"status": 422, "code": "validation_errors", "error_details": details})

    with pytest.raises(BillerRejected) as raised:
        await sink.send(EVENT)

    assert raised.value.message == "Lago 422 validation_errors: properties: value_is_not_valid_number"


async def test_unknown_subscription_in_a_synchronous_lago_is_rejected(
    fake_lago: FakeLago, sink: LagoBillingSink
) -> None:
    fake_lago.fail_next(1, 404, body={"status": 404, "error": "Not Found", "code": "subscription_not_found"})

    with pytest.raises(BillerRejected, match="subscription_not_found"):
        await sink.send(EVENT)


@pytest.mark.parametrize(
    ("body", "cause"),
    [({"status": 404, "error": "Not Found"}, "not_found"), ({"code": "billable_metric_not_found"}, "config")],
)
async def test_a_404_every_event_would_get_waits_for_the_operator(
    fake_lago: FakeLago, sink: LagoBillingSink, body: dict[str, object], cause: str
) -> None:
    fake_lago.fail_next(1, 404, body=body)

    with pytest.raises(BillerUnavailable) as raised:
        await sink.send(EVENT)

    assert raised.value.cause == cause


async def test_a_proxys_html_error_page_is_still_translated(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    fake_lago.fail_next(1, 502, body="<html>Bad Gateway</html>")

    with pytest.raises(BillerUnavailable) as raised:
        await sink.send(EVENT)

    assert raised.value.cause == "server_error"


async def test_negative_values_are_rejected_without_a_call(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    with pytest.raises(BillerRejected):
        await sink.send(MeterEvent(identifier="evt_NEG", customer="sub_ACME", value=-1, timestamp=1_800_000_000))

    assert fake_lago.requests == []


# -- the sink: batches -----------------------------------------------------------------------------------------------


def batch_requests(fake_lago: FakeLago) -> list[list[str]]:
    """The transaction ids of each batch request, in order."""
    return [
        [event["transaction_id"] for event in request.body["events"]]
        for request in fake_lago.requests
        if request.path == "/api/v1/events/batch"
    ]


async def test_send_batch_sends_the_events_in_one_request(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    events = [meter_event("evt_A"), meter_event("evt_B", "sub_OTHER"), meter_event("evt_C")]

    outcomes = await sink.send_batch(events)

    assert outcomes == [Delivery.SENT] * 3
    assert batch_requests(fake_lago) == [["evt_A", "evt_B", "evt_C"]]
    assert [e["transaction_id"] for e in fake_lago.events] == ["evt_A", "evt_B", "evt_C"]
    assert fake_lago.invalid_requests == []


async def test_send_batch_takes_known_positions_as_sent_and_resends_the_rest(
    fake_lago: FakeLago, sink: LagoBillingSink
) -> None:
    await sink.send(meter_event("evt_B"))
    await sink.send(meter_event("evt_D"))

    outcomes = await sink.send_batch([meter_event(i) for i in ("evt_A", "evt_B", "evt_C", "evt_D")])

    assert outcomes == [Delivery.SENT, Delivery.ALREADY_SENT, Delivery.SENT, Delivery.ALREADY_SENT]
    assert batch_requests(fake_lago) == [["evt_A", "evt_B", "evt_C", "evt_D"], ["evt_A", "evt_C"]]
    assert sorted(e["transaction_id"] for e in fake_lago.events) == ["evt_A", "evt_B", "evt_C", "evt_D"]


async def test_send_batch_of_known_events_only_needs_no_resend(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    await sink.send(meter_event("evt_A"))

    outcomes = await sink.send_batch([meter_event("evt_A")])

    assert outcomes == [Delivery.ALREADY_SENT]
    assert len(batch_requests(fake_lago)) == 1


async def test_send_batch_refused_for_another_reason_is_rejected_as_a_whole(
    fake_lago: FakeLago, sink: LagoBillingSink
) -> None:
    details = {"0": {"transaction_id": ["value_already_exist"]}, "1": {"properties": ["value_is_not_valid_number"]}}
    fake_lago.fail_next(1, 422, body=refusal(details), route=BATCH)

    with pytest.raises(BillerRejected, match="value_is_not_valid_number"):
        await sink.send_batch([meter_event("evt_A"), meter_event("evt_B")])

    assert len(batch_requests(fake_lago)) == 1


async def test_send_batch_rate_limited_fails_the_whole_call(fake_lago: FakeLago, sink: LagoBillingSink) -> None:
    fake_lago.fail_next(1, 429, rate_limit_reset=1, route=BATCH)

    with pytest.raises(BillerRateLimited) as raised:
        await sink.send_batch([meter_event("evt_A"), meter_event("evt_B")])

    assert raised.value.retry_after_s == 1
    assert fake_lago.events == []


async def test_send_batch_with_an_event_lago_must_not_get_sends_nothing(
    fake_lago: FakeLago, sink: LagoBillingSink
) -> None:
    with pytest.raises(BillerRejected):
        await sink.send_batch([meter_event("evt_A"), meter_event("evt_NEG", value=-5)])

    assert fake_lago.requests == []


async def test_send_batch_refuses_more_than_lagos_limit(sink: LagoBillingSink) -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        await sink.send_batch([meter_event(f"evt_{n}") for n in range(101)])


# -- the dispatcher over Lago ---------------------------------------------------------------------------------------


async def record(ledger: MemoryLedger, count: int) -> None:
    for n in range(count):
        claim = Claim(
            event_id=f"evt_{n}",
            event_type="chat.completion.finished",
            billing_customer=f"sub_{n % 2}",
            ringside_customer=f"cust_{n % 2}",
            cost_usd=Decimal("0.01"),
            exact_units=Decimal(1000),
            timestamp=1_800_000_000,
        )
        await ledger.record(claim, Rounding.CARRY, 1_800_000_000.0)


async def dispatch_all(ledger: MemoryLedger, fake_lago: FakeLago, clock: FrozenClock) -> None:
    sink = LagoBillingSink(FAKE_LAGO_KEY, metric_code=METRIC_CODE, api_url=fake_lago.url, timeout_s=1.0)
    config = DispatchConfig(max_rps=1000.0, retry_base_s=0.0, retry_max_s=0.0)
    dispatcher = Dispatcher(ledger, sink, clock, config, jitter=lambda: 0.0)
    try:
        while await dispatcher.run_once():
            pass
    finally:
        await sink.close()


async def test_dispatcher_sends_lago_batches_and_retries_an_outage(fake_lago: FakeLago, clock: FrozenClock) -> None:
    ledger = MemoryLedger()
    await record(ledger, 5)
    fake_lago.fail_next(1, 503, route=BATCH)

    await dispatch_all(ledger, fake_lago, clock)

    assert sorted(e["transaction_id"] for e in fake_lago.events) == [f"evt_{n}" for n in range(5)]
    assert batch_requests(fake_lago) == [[f"evt_{n}" for n in range(5)]] * 2
    entries = [await ledger.get(f"evt_{n}") for n in range(5)]
    assert [e.state if e else None for e in entries] == [State.SENT] * 5
    assert fake_lago.invalid_requests == []


async def test_dispatcher_parks_no_good_entry_when_lago_refuses_a_batch_as_a_whole(
    fake_lago: FakeLago, clock: FrozenClock
) -> None:
    ledger = MemoryLedger()
    await record(ledger, 3)
    details = {"1": {"properties": ["value_is_not_valid_number"]}}
    fake_lago.fail_next(1, 422, body=refusal(details), route=BATCH)

    await dispatch_all(ledger, fake_lago, clock)

    # One entry per call after the refusal, so Lago's verdict is per entry: here each one is taken.
    assert batch_requests(fake_lago) == [["evt_0", "evt_1", "evt_2"], ["evt_0"], ["evt_1"], ["evt_2"]]
    entries = [await ledger.get(f"evt_{n}") for n in range(3)]
    assert [e.state if e else None for e in entries] == [State.SENT] * 3


# -- the portal ------------------------------------------------------------------------------------------------------


async def test_portal_url_is_for_the_customer_owning_the_subscription(
    fake_lago: FakeLago, portal: LagoBillingPortal
) -> None:
    url = await portal.session_url("sub_ACME", RETURN_URL, None)

    assert fake_lago.portal_urls == [{"external_customer_id": "cust_ACME", "portal_url": url}]
    assert all(RETURN_URL not in str(request.path) for request in fake_lago.requests)


async def test_portal_finds_the_customer_of_an_ended_subscription(
    fake_lago: FakeLago, portal: LagoBillingPortal
) -> None:
    fake_lago.add_customer("cust_GONE", subscriptions=["sub_GONE"], status="terminated")

    url = await portal.session_url("sub_GONE", RETURN_URL, None)

    assert fake_lago.portal_urls == [{"external_customer_id": "cust_GONE", "portal_url": url}]


async def test_portal_refuses_every_flow_before_calling_lago(fake_lago: FakeLago, portal: LagoBillingPortal) -> None:
    for flow in PortalFlow:
        with pytest.raises(PortalFlowUnavailable):
            await portal.session_url("sub_ACME", RETURN_URL, flow)

    assert fake_lago.requests == []


async def test_portal_no_billing_account_when_the_customer_is_gone(
    fake_lago: FakeLago, portal: LagoBillingPortal
) -> None:
    gone = {"status": 404, "error": "Not Found", "code": "customer_not_found"}
    fake_lago.fail_next(1, 404, body=gone, route=PORTAL_URL)

    with pytest.raises(NoBillingAccount):
        await portal.session_url("sub_ACME", RETURN_URL, None)


async def test_portal_no_billing_account_after_looking_in_every_status(
    fake_lago: FakeLago, portal: LagoBillingPortal
) -> None:
    with pytest.raises(NoBillingAccount):
        await portal.session_url("sub_NOBODY", RETURN_URL, None)

    statuses = [r.status for r in fake_lago.requests]
    assert statuses == [404, 404, 404]
    assert fake_lago.portal_urls == []


async def test_portal_outage_on_the_second_call_is_unavailable(fake_lago: FakeLago, portal: LagoBillingPortal) -> None:
    fake_lago.fail_next(1, 500, route=PORTAL_URL)

    with pytest.raises(BillerUnavailable) as raised:
        await portal.session_url("sub_ACME", RETURN_URL, None)

    assert raised.value.cause == "server_error"


async def test_portal_bounds_all_its_calls_by_one_timeout(fake_lago: FakeLago, portal: LagoBillingPortal) -> None:
    fake_lago.latency_s = 0.3  # each call alone fits in the 0.5 s timeout; both together do not
    started = time.monotonic()

    with pytest.raises(BillerUnavailable) as raised:
        await portal.session_url("sub_ACME", RETURN_URL, None)

    assert raised.value.cause == "timeout"
    assert time.monotonic() - started < 1.0


async def test_portal_refuses_a_url_that_is_not_http(fake_lago: FakeLago, portal: LagoBillingPortal) -> None:
    fake_lago.fail_next(1, 200, body={"customer": {"portal_url": "javascript:alert(1)"}}, route=PORTAL_URL)

    with pytest.raises(BillerRejected):
        await portal.session_url("sub_ACME", RETURN_URL, None)


async def test_portal_lookup_failure_other_than_not_found_is_not_masked(
    fake_lago: FakeLago, portal: LagoBillingPortal
) -> None:
    fake_lago.fail_next(1, 403, route=SUBSCRIPTION)

    with pytest.raises(BillerUnavailable) as raised:
        await portal.session_url("sub_ACME", RETURN_URL, None)

    assert raised.value.cause == "auth"
