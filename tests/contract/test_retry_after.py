"""A biller's `Retry-After`, however odd, never stalls delivery: every remote biller against its fake server.

Non-finite, negative and unreadable values are ignored; any wait, asked for or computed, is capped at
GATEWAY_RETRY_MAX_S, so an entry's next attempt and the dispatcher's pause are always finite and within the cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.domain.errors import BillerRateLimited, BillerUnavailable
from gateway.domain.ledger import State
from gateway.domain.ports import MeterEvent
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.contract.conftest import BillerPortal, RemoteBiller
from tests.fakes.lago_server import BATCH, FakeLago
from tests.service.billers import record

RETRY_MAX_S = 60.0
CONFIG = DispatchConfig(batch=10, concurrency=2, lease_s=30, max_rps=1_000_000, retry_base_s=1, retry_max_s=RETRY_MAX_S)
UNUSABLE = {"infinity": "inf", "negative": "-5", "not a number": "nan", "beyond a double": "1e400", "garbage": "soon!"}


@pytest.fixture(params=["stripe_sink", "stripe_stream_sink", "lago_sink"])
def biller(request: pytest.FixtureRequest) -> RemoteBiller:
    remote: RemoteBiller = request.getfixturevalue(request.param)
    return remote


@pytest.fixture
def rate_limit_next_call(request: pytest.FixtureRequest, biller: RemoteBiller) -> Callable[[str], None]:
    """Make the biller answer the dispatcher's next call 429 with this Retry-After (Lago's batches have a route
    of their own)."""
    if "lago_sink" in request.fixturenames:
        fake_lago: FakeLago = request.getfixturevalue("fake_lago")
        return lambda value: fake_lago.fail_next(1, 429, retry_after=value, route=BATCH)
    return lambda value: biller.fail_next(429, value)


@pytest.fixture(params=["stripe_portal", "lago_portal"])
def portal(request: pytest.FixtureRequest) -> BillerPortal:
    remote: BillerPortal = request.getfixturevalue(request.param)
    return remote


@pytest.mark.parametrize("value", UNUSABLE.values(), ids=UNUSABLE.keys())
@pytest.mark.parametrize("status", [429, 503])
async def test_unusable_retry_after_is_ignored_when_the_biller_sends_one(
    biller: RemoteBiller, status: int, value: str
) -> None:
    biller.fail_next(status, value)

    with pytest.raises(BillerUnavailable) as unavailable:
        await biller.sink.send(MeterEvent("evt_1", biller.customer, 1_500, 1_800_000_000))

    assert unavailable.value.retry_after_s is None


@pytest.mark.parametrize("value", UNUSABLE.values(), ids=UNUSABLE.keys())
async def test_unusable_retry_after_is_ignored_when_the_portal_is_rate_limited(
    portal: BillerPortal, value: str
) -> None:
    portal.fail_next(429, value)

    with pytest.raises(BillerRateLimited) as limited:
        await portal.portal.session_url(portal.known, "https://app.example.com/account", None)

    assert limited.value.retry_after_s is None


@pytest.mark.parametrize("value", [*UNUSABLE.values(), "1e300", "86400"], ids=[*UNUSABLE.keys(), "1e300", "a day"])
async def test_next_attempt_is_finite_and_within_the_cap_when_the_biller_rate_limits(
    biller: RemoteBiller, rate_limit_next_call: Callable[[str], None], value: str
) -> None:
    # Arrange
    clock = FrozenClock()
    ledger = MemoryLedger()
    dispatcher = Dispatcher(ledger, biller.sink, clock, CONFIG, jitter=lambda: 0.999)
    await record(ledger, "evt_LIMITED", clock.now(), customer=biller.customer)
    rate_limit_next_call(value)

    # Act
    await dispatcher.run_once()

    # Assert: pending after the 429 it got, due again within the cap.
    entry = ledger.entries["evt_LIMITED"]
    assert entry.state is State.PENDING
    assert entry.attempts == 1
    assert entry.last_error is not None and entry.last_error.startswith("rate_limited:")
    assert math.isfinite(entry.next_attempt_at)
    assert clock.now() < entry.next_attempt_at <= clock.now() + RETRY_MAX_S

    # Act: once the cap has passed, the dispatcher is no longer paused and delivers.
    clock.advance(RETRY_MAX_S)
    delivered = await dispatcher.run_once()

    # Assert
    assert delivered == 1
    assert ledger.entries["evt_LIMITED"].state is State.SENT
    assert biller.stored() == ["evt_LIMITED"]
