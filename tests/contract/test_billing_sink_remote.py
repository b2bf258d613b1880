"""The remote billers' BillingSink contract, run against each adapter and its fake server.

What the dispatcher relies on, whoever the biller is: an event is recorded once (a repeat is delivered, never a
second event); "not now" (429 with its Retry-After, 5xx, a timeout, an unreachable biller, bad credentials) raises
BillerUnavailable so the entry stays pending, and never BillerRejected, which would park it. Bad credentials in
particular are the operator's to fix and fail every event alike: parking them would move the whole backlog aside.
A new remote biller joins with one fixture in conftest.py and one name in `params` below.
"""

from __future__ import annotations

import time

import pytest

from gateway.domain.errors import BillerRateLimited, BillerRejected, BillerUnavailable
from gateway.domain.ports import Delivery, MeterEvent
from tests.contract.conftest import HUNG_CALL_TIMEOUT_S, RemoteBiller, closed_port_url


@pytest.fixture(params=["stripe_sink", "stripe_stream_sink", "lago_sink"])
def biller(request: pytest.FixtureRequest) -> RemoteBiller:
    remote: RemoteBiller = request.getfixturevalue(request.param)
    return remote


def meter_event(biller: RemoteBiller, identifier: str = "evt_1") -> MeterEvent:
    return MeterEvent(identifier=identifier, customer=biller.customer, value=1_500, timestamp=1_800_000_000)


async def test_send_returns_sent_and_the_biller_holds_the_event(biller: RemoteBiller) -> None:
    outcome = await biller.sink.send(meter_event(biller))

    assert outcome is Delivery.SENT
    assert biller.stored() == ["evt_1"]
    assert biller.invalid_requests() == []


async def test_send_is_delivered_once_when_the_biller_already_holds_the_event(biller: RemoteBiller) -> None:
    await biller.sink.send(meter_event(biller))

    outcome = await biller.sink.send(meter_event(biller))

    assert outcome is biller.repeat
    assert biller.stored() == ["evt_1"]
    assert biller.invalid_requests() == []


async def test_rate_limit_raises_biller_rate_limited_with_its_retry_after(biller: RemoteBiller) -> None:
    biller.fail_next(429, 3)

    with pytest.raises(BillerRateLimited) as limited:
        await biller.sink.send(meter_event(biller))

    assert (limited.value.cause, limited.value.retry_after_s) == ("rate_limited", 3.0)
    assert biller.stored() == []


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_raises_biller_unavailable(biller: RemoteBiller, status: int) -> None:
    biller.fail_next(status, None)

    with pytest.raises(BillerUnavailable) as unavailable:
        await biller.sink.send(meter_event(biller))

    assert type(unavailable.value) is BillerUnavailable
    assert unavailable.value.cause == "server_error"
    assert biller.stored() == []


async def test_server_error_passes_on_its_retry_after(biller: RemoteBiller) -> None:
    biller.fail_next(503, 2)

    with pytest.raises(BillerUnavailable) as unavailable:
        await biller.sink.send(meter_event(biller))

    assert (unavailable.value.cause, unavailable.value.retry_after_s) == ("server_error", 2.0)


async def test_hang_longer_than_the_timeout_raises_unavailable_timeout_promptly(biller: RemoteBiller) -> None:
    sink = biller.build(None, None, HUNG_CALL_TIMEOUT_S)
    biller.hang_next(10)
    started = time.monotonic()

    try:
        with pytest.raises(BillerUnavailable) as unavailable:
            await sink.send(meter_event(biller))
    finally:
        await sink.close()

    assert unavailable.value.cause == "timeout"
    assert time.monotonic() - started < 2.0
    assert biller.stored() == []


async def test_unreachable_biller_raises_unavailable_connection(biller: RemoteBiller) -> None:
    sink = biller.build(None, closed_port_url())
    try:
        with pytest.raises(BillerUnavailable) as unavailable:
            await sink.send(meter_event(biller))
    finally:
        await sink.close()

    assert unavailable.value.cause == "connection"


async def test_bad_credentials_raise_unavailable_auth_and_are_never_parked(biller: RemoteBiller) -> None:
    sink = biller.build("sk_test_revoked_key_0000", None)
    try:
        with pytest.raises(BillerUnavailable) as unavailable:
            await sink.send(meter_event(biller))
    finally:
        await sink.close()

    assert unavailable.value.cause == "auth"
    assert not isinstance(unavailable.value, BillerRejected)
    assert "revoked_key" not in unavailable.value.message  # the key never reaches a log or a parked record
    assert biller.stored() == []


async def test_errors_raised_are_the_gateways_own(biller: RemoteBiller) -> None:
    biller.fail_next(500, None)

    with pytest.raises(BillerUnavailable) as unavailable:
        await biller.sink.send(meter_event(biller))

    assert type(unavailable.value).__module__ == "gateway.domain.errors"
    assert not type(unavailable.value.__cause__).__module__.startswith("gateway.adapters")
