"""The Stripe adapters that read Stripe's side: error reports (v2 events), signed notifications, meter summaries."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
import stripe

from gateway.adapters.stripe.events import StripeReports, parse_time
from gateway.adapters.stripe.notifications import StripeNotificationVerifier
from gateway.adapters.stripe.summaries import StripeMeterTotals
from gateway.domain.errors import (
    BillerUnavailable,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    TimestampOutOfTolerance,
)
from gateway.domain.feedback import ERROR_REPORT, REPORT_TYPES, ErrorType, SampleError
from tests.fakes.stripe_feedback import sign
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

HOUR = 3600
BASE = (int(time.time()) // HOUR - 5) * HOUR
SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"


def sdk(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        FAKE_API_KEY,
        base_addresses={"api": fake.url, "meter_events": fake.url},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
    )


def send(fake: FakeStripe, identifier: str, customer: str, value: int = 5, timestamp: int = BASE) -> None:
    sdk(fake).v1.billing.meter_events.create(
        {
            "event_name": "ringside_spend",
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "identifier": identifier,
            "timestamp": timestamp,
        }
    )


@pytest.fixture
async def reports(fake_stripe: FakeStripe) -> AsyncIterator[StripeReports]:
    adapter = StripeReports(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=2.0)
    yield adapter
    await adapter.close()


# -- reports ---------------------------------------------------------------------------------------------------------


async def test_fetch_report_reads_codes_counts_samples_and_the_validation_window(
    fake_stripe: FakeStripe, reports: StripeReports
) -> None:
    fake_stripe.known_customers = {"cus_KNOWN"}
    fake_stripe.asynchronous_validation = True
    for n in range(4):
        send(fake_stripe, f"evt_{n}", "cus_GONE")
    emitted = fake_stripe.feedback.emit_report()
    assert emitted is not None

    report = await reports.fetch_report(emitted["id"])

    assert report is not None
    assert (report.event_id, report.event_type, report.error_count) == (emitted["id"], ERROR_REPORT, 4)
    assert report.error_types == (
        ErrorType(
            "meter_event_customer_not_found",
            4,
            tuple(SampleError(f"evt_{n}", "No customer found with id cus_GONE.") for n in range(3)),
        ),
    )
    assert report.validation_start <= time.time() <= report.validation_end + 1


async def test_fetch_report_of_an_unknown_event_is_unavailable_not_a_crash(reports: StripeReports) -> None:
    with pytest.raises(BillerUnavailable) as failed:
        await reports.fetch_report("evt_test_MISSING")

    assert failed.value.cause == "not_found"


async def test_notifications_since_walk_every_page_oldest_first(
    fake_stripe: FakeStripe, reports: StripeReports, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_stripe.known_customers = set()
    fake_stripe.asynchronous_validation = True
    emitted = []
    for n in range(3):
        send(fake_stripe, f"evt_{n}", "cus_GONE")
        emitted.append(fake_stripe.feedback.emit_report())
    monkeypatch.setattr("gateway.adapters.stripe.events.PAGE_SIZE", 2)

    found = await reports.notifications_since(time.time() - 60, REPORT_TYPES)
    after_all = await reports.notifications_since(time.time() + 60, REPORT_TYPES)

    assert [n.event_id for n in found] == [e["id"] for e in emitted if e]
    assert [n.created for n in found] == [parse_time(e["created"]) for e in emitted if e]
    assert after_all == []
    assert [r.params.get("page") for r in fake_stripe.requests if r.path == "/v2/core/events"] == [None, "2", None]
    assert fake_stripe.invalid_requests == []


# -- signed notifications --------------------------------------------------------------------------------------------

BODY = json.dumps(
    {
        "id": "evt_test_REPORT",
        "object": "v2.core.event",
        "type": ERROR_REPORT,
        "created": "2026-12-03T09:00:00.000Z",
        "livemode": False,
        "related_object": {"id": "mtr_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_1"},
    }
).encode()


def test_notification_signed_with_a_live_secret_is_returned() -> None:
    verifier = StripeNotificationVerifier([SECRET, OLD_SECRET])

    notification = verifier.verify(BODY, sign(BODY, OLD_SECRET, int(time.time())))

    assert (notification.event_id, notification.event_type) == ("evt_test_REPORT", ERROR_REPORT)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, MissingSignature),
        ("", MissingSignature),
        ("garbage", MalformedSignature),
        (sign(BODY, "whsec_test_other", int(time.time())), InvalidSignature),
        (sign(BODY, SECRET, int(time.time()) - 301), TimestampOutOfTolerance),
    ],
)
def test_notification_is_refused_with_the_webhooks_error_codes(header: str | None, error: type[Exception]) -> None:
    verifier = StripeNotificationVerifier([SECRET, OLD_SECRET])

    with pytest.raises(error):
        verifier.verify(BODY, header)


def test_tampered_body_does_not_verify() -> None:
    verifier = StripeNotificationVerifier([SECRET])
    header = sign(BODY, SECRET, int(time.time()))

    with pytest.raises(InvalidSignature):
        verifier.verify(BODY.replace(b"evt_test_REPORT", b"evt_test_FORGED"), header)


def test_verifier_never_shows_its_secrets() -> None:
    assert SECRET not in repr(StripeNotificationVerifier([SECRET]))


# -- meter event summaries ------------------------------------------------------------------------------------------


@pytest.fixture
async def totals(fake_stripe: FakeStripe) -> AsyncIterator[StripeMeterTotals]:
    sdk(fake_stripe).v1.billing.meters.create(
        {
            "display_name": "Ringside spend",
            "event_name": "ringside_spend",
            "default_aggregation": {"formula": "sum"},
        }
    )
    adapter = StripeMeterTotals(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=2.0)
    yield adapter
    await adapter.close()


async def test_hourly_units_come_from_the_meters_summaries_across_pages(
    fake_stripe: FakeStripe, totals: StripeMeterTotals, monkeypatch: pytest.MonkeyPatch
) -> None:
    for hour in range(5):
        send(fake_stripe, f"evt_{hour}", "cus_A", 10 + hour, BASE + hour * HOUR + 59)
    send(fake_stripe, "evt_B", "cus_B", 1000, BASE)

    monkeypatch.setattr("gateway.adapters.stripe.summaries.PAGE_SIZE", 2)

    held = await totals.hourly_units("cus_A", BASE, BASE + 5 * HOUR)

    assert held == {BASE + hour * HOUR: 10 + hour for hour in range(5)}
    summary_calls = [r for r in fake_stripe.requests if r.path.endswith("/event_summaries")]
    assert len(summary_calls) == 3
    assert {(r.params["start_time"] % HOUR, r.params["end_time"] % HOUR) for r in summary_calls} == {(0, 0)}
    assert fake_stripe.invalid_requests == []


async def test_bounds_off_the_hour_are_widened_to_whole_hours(
    fake_stripe: FakeStripe, totals: StripeMeterTotals
) -> None:
    send(fake_stripe, "evt_1", "cus_A", 7, BASE + 10)

    held = await totals.hourly_units("cus_A", BASE + 30, BASE + HOUR - 30)

    assert held == {BASE: 7}
    assert fake_stripe.invalid_requests == []


async def test_stripe_failing_is_unavailable(fake_stripe: FakeStripe, totals: StripeMeterTotals) -> None:
    fake_stripe.fail_next(1, 500, path="/v1/billing/meters")

    with pytest.raises(BillerUnavailable):
        await totals.hourly_units("cus_A", BASE, BASE + HOUR)


async def test_no_meter_for_the_event_name_is_unavailable(fake_stripe: FakeStripe) -> None:
    adapter = StripeMeterTotals(FAKE_API_KEY, api_base=fake_stripe.url, event_name="other_name", timeout_s=2.0)
    try:
        with pytest.raises(BillerUnavailable) as failed:
            await adapter.hourly_units("cus_A", BASE, BASE + HOUR)
    finally:
        await adapter.close()

    assert failed.value.cause == "no_meter"
