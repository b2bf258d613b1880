"""StripeStreamBillingSink through the real `stripe` SDK against the fake Stripe: sessions, batches, error translation.

The fake implements `/v2/billing/meter_event_session` (tokens valid `session_ttl_s`) and
`/v2/billing/meter_event_stream` (bearer token, up to 100 events, silent de-duplication), and validates each request
against Stripe's OpenAPI excerpt; `invalid_requests == []` is asserted wherever a request went out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.adapters.stripe.rules import meter_identifier
from gateway.adapters.stripe.stream import StripeStreamBillingSink
from gateway.domain.errors import BillerMisconfigured, BillerRejected, BillerUnavailable
from gateway.domain.ledger import Claim, State
from gateway.domain.ports import BatchBillingSink, Delivery, MeterEvent
from gateway.domain.units import Rounding, exact_units
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from gateway.service.metrics import NoMetrics
from tests.fakes.stripe_server import FAKE_API_KEY, METER_EVENT_STREAM, FakeStripe
from tests.log_capture import captured_logs

STAMP = 1_800_000_000
SESSIONS = "/v2/billing/meter_event_session"


def events(count: int, *, prefix: str = "evt", customer: str = "cus_A") -> list[MeterEvent]:
    return [
        MeterEvent(identifier=f"{prefix}_{n}", customer=customer, value=100 + n, timestamp=STAMP) for n in range(count)
    ]


def stream_requests(fake: FakeStripe) -> list[list[dict[str, object]]]:
    return [r.params["events"] for r in fake.requests if r.path == METER_EVENT_STREAM]


@pytest.fixture
def clock() -> FrozenClock:
    # The sink compares its clock with the session's real `expires_at`, so start it at the real time.
    return FrozenClock(time.time())


@pytest.fixture
async def sink(fake_stripe: FakeStripe, clock: FrozenClock) -> AsyncIterator[StripeStreamBillingSink]:
    biller = StripeStreamBillingSink(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=0.5, clock=clock)
    yield biller
    await biller.close()


def test_sink_is_a_batch_billing_sink_of_up_to_100_events() -> None:
    biller = StripeStreamBillingSink(FAKE_API_KEY)

    assert isinstance(biller, BatchBillingSink)
    assert (biller.name, biller.max_batch) == ("stripe_stream", 100)


async def test_send_batch_creates_a_session_and_stripe_holds_every_event(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    outcome = await sink.send_batch(events(3))

    assert outcome == [Delivery.SENT] * 3
    assert len(fake_stripe.meter_event_sessions) == 1
    assert fake_stripe.meter_events == [
        {
            "event_name": "ringside_spend",
            "identifier": f"evt_{n}",
            "customer": "cus_A",
            "value": 100 + n,
            "timestamp": STAMP,
        }
        for n in range(3)
    ]
    assert fake_stripe.invalid_requests == []


async def test_stream_calls_carry_the_session_token_never_the_secret_key(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    await sink.send_batch(events(1))

    token = fake_stripe.meter_event_sessions[0]["authentication_token"]
    by_path = {r.path: r.headers["authorization"] for r in fake_stripe.requests}
    assert by_path == {SESSIONS: f"Bearer {FAKE_API_KEY}", METER_EVENT_STREAM: f"Bearer {token}"}


async def test_one_session_serves_every_call_while_it_is_fresh(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    for batch in range(3):
        await sink.send_batch(events(2, prefix=f"evt_{batch}"))

    assert len(fake_stripe.meter_event_sessions) == 1
    assert len(stream_requests(fake_stripe)) == 3


async def test_concurrent_first_calls_create_one_session(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    await asyncio.gather(*(sink.send_batch(events(1, prefix=f"evt_{n}")) for n in range(5)))

    assert len(fake_stripe.meter_event_sessions) == 1
    assert len(fake_stripe.meter_events) == 5


async def test_session_is_refreshed_before_it_expires(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink, clock: FrozenClock
) -> None:
    await sink.send_batch(events(1, prefix="before"))
    # 15 minutes minus the 60 s margin: the next call must not risk the old token.
    clock.advance(15 * 60 - 60 + 1)

    await sink.send_batch(events(1, prefix="after"))

    tokens = [s["authentication_token"] for s in fake_stripe.meter_event_sessions]
    assert len(tokens) == 2
    assert fake_stripe.requests[-1].headers["authorization"] == f"Bearer {tokens[1]}"
    assert [e["identifier"] for e in fake_stripe.meter_events] == ["before_0", "after_0"]


async def test_expired_token_is_refreshed_and_the_batch_retried_once(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    await sink.send_batch(events(1, prefix="first"))
    fake_stripe.fail_next(
        1,
        status=401,
        path=METER_EVENT_STREAM,
        message="The meter event session has expired or is not valid. Create a new session.",
    )

    outcome = await sink.send_batch(events(2, prefix="second"))

    assert outcome == [Delivery.SENT] * 2
    tokens = [s["authentication_token"] for s in fake_stripe.meter_event_sessions]
    assert len(tokens) == 2
    assert fake_stripe.requests[-1].headers["authorization"] == f"Bearer {tokens[1]}"
    assert [e["identifier"] for e in fake_stripe.meter_events] == ["first_0", "second_0", "second_1"]


async def test_second_expired_answer_is_a_transient_auth_failure(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    fake_stripe.session_ttl_s = -1  # every token the fake hands out has already expired

    with pytest.raises(BillerUnavailable) as unavailable:
        await sink.send_batch(events(1))

    assert unavailable.value.cause == "auth"
    assert len(fake_stripe.meter_event_sessions) == 2  # the first, and exactly one refresh
    assert len(stream_requests(fake_stripe)) == 2
    assert fake_stripe.meter_events == []


async def test_a_full_batch_of_100_is_one_request(fake_stripe: FakeStripe, sink: StripeStreamBillingSink) -> None:
    await sink.send_batch(events(100))

    assert [len(batch) for batch in stream_requests(fake_stripe)] == [100]
    assert len(fake_stripe.meter_events) == 100
    assert fake_stripe.invalid_requests == []


async def test_more_than_100_events_or_none_are_refused_before_any_call(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    with pytest.raises(ValueError):
        await sink.send_batch(events(101))
    with pytest.raises(ValueError):
        await sink.send_batch([])

    assert fake_stripe.requests == []


async def test_known_identifier_is_dropped_by_stripe_and_still_counts_as_sent(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    await sink.send_batch(events(1))

    outcome = await sink.send(events(1)[0])

    assert outcome is Delivery.SENT
    assert len(fake_stripe.meter_events) == 1


async def test_identifier_longer_than_stripe_allows_is_sent_as_its_stable_digest(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    long_id = "evt_" + "x" * 200

    await sink.send(MeterEvent(identifier=long_id, customer="cus_A", value=1, timestamp=STAMP))

    assert [e["identifier"] for e in fake_stripe.meter_events] == [meter_identifier(long_id)]
    assert fake_stripe.invalid_requests == []


async def test_value_beyond_fifteen_digits_rejects_the_batch_without_a_call(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    big = MeterEvent(identifier="evt_big", customer="cus_A", value=10**15, timestamp=STAMP)

    with pytest.raises(BillerRejected):
        await sink.send_batch([*events(2), big])

    assert fake_stripe.requests == []


async def test_server_error_raises_biller_unavailable_for_the_whole_batch(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    fake_stripe.fail_next(1, status=500, path=METER_EVENT_STREAM)

    with pytest.raises(BillerUnavailable) as unavailable:
        await sink.send_batch(events(3))

    assert type(unavailable.value) is BillerUnavailable
    assert unavailable.value.cause == "server_error"
    assert fake_stripe.meter_events == []


async def test_request_refused_as_a_whole_raises_rejected(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink
) -> None:
    fake_stripe.fail_next(1, status=400, path=METER_EVENT_STREAM, message="Invalid event.")

    with pytest.raises(BillerRejected) as rejected:
        await sink.send_batch(events(2))

    assert rejected.value.message == "Invalid event."


async def test_failing_session_creation_is_transient(fake_stripe: FakeStripe, sink: StripeStreamBillingSink) -> None:
    fake_stripe.fail_next(1, status=503, path=SESSIONS)

    with pytest.raises(BillerUnavailable) as unavailable:
        await sink.send_batch(events(1))
    outcome = await sink.send_batch(events(1))

    assert unavailable.value.cause == "server_error"
    assert outcome == [Delivery.SENT]


def backlog_claim(event_id: str, customer: str) -> Claim:
    return Claim(
        event_id=event_id,
        event_type="chat.completion.finished",
        billing_customer=customer,
        ringside_customer=None,
        cost_usd=Decimal("0.01"),
        exact_units=exact_units(Decimal("0.01"), 100_000),
        timestamp=STAMP,
    )


async def test_dispatcher_drains_a_backlog_through_the_stream_in_batches_of_100(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink, clock: FrozenClock
) -> None:
    ledger = MemoryLedger()
    for n in range(250):
        await ledger.record(backlog_claim(f"evt_{n:03d}", f"cus_{n % 3}"), Rounding.CARRY, clock.now())
    config = DispatchConfig(batch=50, concurrency=4, max_rps=1_000_000)
    dispatcher = Dispatcher(ledger, sink, clock, config, jitter=lambda: 0.0)

    handled = await dispatcher.run_once()

    assert handled == 250  # one round leases max_batch x concurrency, more than GATEWAY_DISPATCH_BATCH
    assert sorted(len(batch) for batch in stream_requests(fake_stripe)) == [50, 100, 100]
    assert {e.state for e in ledger.entries.values()} == {State.SENT}
    assert fake_stripe.total_value() == 250 * 1000
    assert fake_stripe.invalid_requests == []


# -- a refused session is a configuration fault ------------------------------------------------------------------


class PausedGauge(NoMetrics):
    def __init__(self) -> None:
        self.paused: dict[str, bool] = {}

    def dispatcher_paused(self, reason: str, paused: bool) -> None:
        self.paused[reason] = paused


@pytest.mark.parametrize(("status", "cause"), [(400, "session_refused"), (403, "auth"), (404, "session_refused")])
async def test_refused_session_is_a_configuration_fault_never_a_rejection(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink, status: int, cause: str
) -> None:
    fake_stripe.fail_next(1, status=status, path=SESSIONS, message="This key cannot create meter event sessions.")

    with pytest.raises(BillerMisconfigured) as refused:
        await sink.send_batch(events(3))

    assert refused.value.cause == cause
    assert not isinstance(refused.value, BillerRejected)
    assert stream_requests(fake_stripe) == []


@pytest.mark.parametrize("status", [400, 403])
async def test_dispatcher_pauses_on_a_refused_session_keeps_the_backlog_and_resumes_once_granted(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink, clock: FrozenClock, status: int
) -> None:
    # Arrange: a backlog of 250 entries (three stream calls in a round), and two refusals of the session.
    ledger = MemoryLedger()
    for n in range(250):
        await ledger.record(backlog_claim(f"evt_{n:03d}", f"cus_{n % 3}"), Rounding.CARRY, clock.now())
    before = dict(ledger.entries)
    metrics = PausedGauge()
    config = DispatchConfig(batch=250, concurrency=1, max_rps=1_000_000, retry_base_s=1.0, retry_max_s=600.0)
    dispatcher = Dispatcher(ledger, sink, clock, config, jitter=lambda: 0.0, metrics=metrics)
    fake_stripe.fail_next(2, status=status, path=SESSIONS, message="This key cannot create meter event sessions.")

    # Act: the first refusal.
    with captured_logs() as logs:
        await dispatcher.run_once()

    # Assert: nothing parked, nothing counted against the entries, one session request and no stream call.
    assert ledger.entries == before
    assert ledger.parked == {}
    assert len([r for r in fake_stripe.requests if r.path == SESSIONS]) == 1
    assert stream_requests(fake_stripe) == []
    assert metrics.paused == {"biller_configuration": True}
    [paused] = [line for line in logs.lines() if line["event"] == "dispatcher.paused"]
    assert (paused["level"], paused["retry_in_s"], paused["entries_kept"]) == ("error", 1.0, 100)
    assert await dispatcher.run_once() == 0  # paused: no call at all

    # Act: the pause ends; the second refusal doubles it.
    clock.advance(1.0)
    await dispatcher.run_once()
    assert ledger.entries == before
    assert await dispatcher.run_once() == 0
    clock.advance(1.999)
    assert await dispatcher.run_once() == 0

    # Act: the session is granted now.
    clock.advance(0.001)
    with captured_logs() as logs:
        handled = await dispatcher.run_once()

    # Assert: the whole backlog delivered, the pause over.
    assert handled == 250
    assert {e.state for e in ledger.entries.values()} == {State.SENT}
    assert {e.attempts for e in ledger.entries.values()} == {0}
    assert fake_stripe.total_value() == 250 * 1000
    assert metrics.paused == {"biller_configuration": False}
    assert [line["event"] for line in logs.lines()].count("dispatcher.resumed") == 1


async def test_concurrent_calls_refused_together_ask_stripe_once_and_pause_once(
    fake_stripe: FakeStripe, sink: StripeStreamBillingSink, clock: FrozenClock
) -> None:
    # Arrange: four stream calls in one round, all waiting for the first session.
    ledger = MemoryLedger()
    for n in range(400):
        await ledger.record(backlog_claim(f"evt_{n:03d}", f"cus_{n % 7}"), Rounding.CARRY, clock.now())
    before = dict(ledger.entries)
    config = DispatchConfig(batch=400, concurrency=4, max_rps=1_000_000, retry_base_s=1.0)
    dispatcher = Dispatcher(ledger, sink, clock, config, jitter=lambda: 0.0)
    fake_stripe.fail_next(1, status=400, path=SESSIONS, message="This key cannot create meter event sessions.")

    # Act
    with captured_logs() as logs:
        await dispatcher.run_once()

    # Assert: one session request, one error line, a pause of retry_base_s, the backlog as it was.
    assert len([r for r in fake_stripe.requests if r.path == SESSIONS]) == 1
    assert [line["retry_in_s"] for line in logs.lines() if line["event"] == "dispatcher.paused"] == [1.0]
    assert ledger.entries == before
    clock.advance(1.0)
    assert await dispatcher.run_once() == 400
    assert {e.state for e in ledger.entries.values()} == {State.SENT}
