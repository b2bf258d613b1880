"""The fake Stripe's asynchronous side: dropped events, error reports as v2 events, signed delivery, summaries.

Requests are made with the real SDK, so they validate against the OpenAPI excerpt; the fake's own events are
checked against the excerpt's event schemas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.fakes.http_fake import Reply, ThreadedFake
from tests.fakes.stripe_schema import load_schemas, validate
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

HOUR = 3600
BASE = (int(time.time()) // HOUR - 5) * HOUR  # five whole hours ago
SECRET = "whsec_test_fake_destination"


def client(server: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        FAKE_API_KEY,
        base_addresses={"api": server.url, "meter_events": server.url},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
    )


@pytest.fixture
def sdk(fake_stripe: FakeStripe) -> Iterator[stripe.StripeClient]:
    yield client(fake_stripe)


def send_v1(sdk: stripe.StripeClient, identifier: str, customer: str, value: int = 5, timestamp: int = BASE) -> None:
    sdk.v1.billing.meter_events.create(
        {
            "event_name": "ringside_spend",
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "identifier": identifier,
            "timestamp": timestamp,
        }
    )


def stream(server: FakeStripe, events: list[tuple[str, str]]) -> None:
    """One v2 stream request, authenticated with a fresh session token as Stripe requires."""
    token = client(server).v2.billing.meter_event_session.create().authentication_token
    session = stripe.StripeClient(
        token,
        base_addresses={"api": server.url, "meter_events": server.url},
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
    )
    session.v2.billing.meter_event_stream.create(
        {
            "events": [
                {
                    "event_name": "ringside_spend",
                    "identifier": identifier,
                    "payload": {"stripe_customer_id": customer, "value": "5"},
                    "timestamp": "2026-01-01T00:00:00Z",
                }
                for identifier, customer in events
            ]
        }
    )


def test_v1_answers_an_unknown_customers_event_then_drops_it_when_validating_asynchronously(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    fake_stripe.known_customers = {"cus_KNOWN"}
    fake_stripe.asynchronous_validation = True

    send_v1(sdk, "evt_LOST", "cus_UNKNOWN")
    send_v1(sdk, "evt_KEPT", "cus_KNOWN")

    assert [e["identifier"] for e in fake_stripe.meter_events] == ["evt_KEPT"]
    assert [(e.code, e.identifier) for e in fake_stripe.feedback.errors] == [
        ("meter_event_customer_not_found", "evt_LOST")
    ]
    assert fake_stripe.invalid_requests == []


def test_identifier_of_an_event_dropped_asynchronously_is_not_remembered(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    fake_stripe.known_customers = {"cus_KNOWN"}
    fake_stripe.asynchronous_validation = True
    send_v1(sdk, "evt_1", "cus_UNKNOWN")

    fake_stripe.known_customers.add("cus_UNKNOWN")  # the customer exists now
    send_v1(sdk, "evt_1", "cus_UNKNOWN")

    assert [(e["identifier"], e["customer"]) for e in fake_stripe.meter_events] == [("evt_1", "cus_UNKNOWN")]


def test_report_counts_every_error_but_names_at_most_three_samples_per_code(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    fake_stripe.known_customers = {"cus_KNOWN"}
    stream(fake_stripe, [(f"evt_{n}", "cus_UNKNOWN") for n in range(7)] + [("evt_ok", "cus_KNOWN")])

    report = fake_stripe.feedback.emit_report()

    assert report is not None
    reason = report["data"]["reason"]
    assert reason["error_count"] == 7
    [only] = reason["error_types"]
    assert (only["code"], only["error_count"]) == ("meter_event_customer_not_found", 7)
    assert [s["request"]["identifier"] for s in only["sample_errors"]] == ["evt_0", "evt_1", "evt_2"]
    assert fake_stripe.feedback.emit_report() is None  # nothing new since


def test_report_is_shaped_like_stripes_error_report_event(fake_stripe: FakeStripe, sdk: stripe.StripeClient) -> None:
    fake_stripe.known_customers = set()
    stream(fake_stripe, [("evt_1", "cus_UNKNOWN")])

    report = fake_stripe.feedback.emit_report()

    schemas = load_schemas()
    for name in ("v1.billing.meter.error_report_triggered", "v2.core.event"):
        _, problems = validate(schemas[name], report, form=False)
        assert problems == []
    data = report["data"] if report else {}
    assert data["validation_start"] <= data["validation_end"]


def test_events_are_listed_newest_first_by_type_and_created_across_pages(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    fake_stripe.known_customers = set()
    emitted = []
    for n in range(5):
        stream(fake_stripe, [(f"evt_{n}", "cus_UNKNOWN")])
        emitted.append(fake_stripe.feedback.emit_report())

    first = sdk.v2.core.events.list({"types": ["v1.billing.meter.error_report_triggered"], "limit": 2})
    ids = [e.id for e in first.auto_paging_iter()]
    none = sdk.v2.core.events.list({"types": ["v2.core.event_destination.ping"]})
    later = sdk.v2.core.events.list({"created": {"gt": "2999-01-01T00:00:00.000Z"}})

    assert ids == [e["id"] for e in reversed(emitted) if e]
    assert list(none) == [] and list(later) == []
    assert fake_stripe.invalid_requests == []


def test_event_is_retrieved_by_id_and_an_unknown_id_is_a_404(fake_stripe: FakeStripe, sdk: stripe.StripeClient) -> None:
    fake_stripe.known_customers = set()
    stream(fake_stripe, [("evt_1", "cus_UNKNOWN")])
    report = fake_stripe.feedback.emit_report()
    assert report is not None

    fetched = sdk.v2.core.events.retrieve(report["id"])
    with pytest.raises(stripe.StripeError) as missing:
        sdk.v2.core.events.retrieve("evt_test_MISSING")

    assert json.loads(fetched.last_response.body) == report if fetched.last_response else False
    assert missing.value.http_status == 404


class _Receiver(ThreadedFake):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict[str, str], bytes]] = []

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        self.received.append((headers, body))
        return Reply(200, {})


def test_report_is_delivered_as_a_thin_notification_signed_with_the_destination_secret(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    fake_stripe.known_customers = set()
    with _Receiver() as receiver:
        fake_stripe.feedback.destination(receiver.url + "/webhooks/stripe", SECRET)
        stream(fake_stripe, [("evt_1", "cus_UNKNOWN")])
        report = fake_stripe.feedback.emit_report()
        fake_stripe.feedback.wait_for_deliveries(1)

    [(headers, body)] = receiver.received
    notification = sdk.parse_event_notification(body, headers["stripe-signature"], SECRET)
    assert report is not None
    assert (notification.id, notification.type) == (report["id"], "v1.billing.meter.error_report_triggered")
    assert "data" not in json.loads(body)  # thin: the data is fetched by id
    with pytest.raises(stripe.SignatureVerificationError):
        sdk.parse_event_notification(body, headers["stripe-signature"], "whsec_other")


# -- meter event summaries ------------------------------------------------------------------------------------------


@pytest.fixture
def meter(sdk: stripe.StripeClient) -> str:
    created = sdk.v1.billing.meters.create(
        {
            "display_name": "Ringside spend",
            "event_name": "ringside_spend",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    return created.id


def summaries(sdk: stripe.StripeClient, meter: str, **params: Any) -> list[tuple[int, int]]:
    page = sdk.v1.billing.meters.event_summaries.list(meter, {"customer": "cus_A", **params})  # type: ignore[typeddict-item]
    return sorted((s.start_time, int(s.aggregated_value)) for s in page.auto_paging_iter())


def test_summaries_group_a_customers_units_by_hour_of_the_event_timestamp(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient, meter: str
) -> None:
    for n, (offset, value) in enumerate([(0, 5), (HOUR - 1, 7), (HOUR, 11), (3 * HOUR + 10, 13)]):
        send_v1(sdk, f"evt_{n}", "cus_A", value, BASE + offset)
    send_v1(sdk, "evt_B", "cus_B", 100, BASE)

    hourly = summaries(sdk, meter, start_time=BASE, end_time=BASE + 4 * HOUR, value_grouping_window="hour", limit=2)
    whole = summaries(sdk, meter, start_time=BASE, end_time=BASE + 2 * HOUR)

    assert hourly == [(BASE, 12), (BASE + HOUR, 11), (BASE + 3 * HOUR, 13)]
    assert whole == [(BASE, 23)]
    assert fake_stripe.invalid_requests == []


def test_summaries_refuse_bounds_off_the_hour_when_grouping_by_hour(sdk: stripe.StripeClient, meter: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        summaries(sdk, meter, start_time=BASE + 60, end_time=BASE + HOUR, value_grouping_window="hour")

    assert refused.value.http_status == 400


def test_events_newer_than_the_settle_delay_are_not_summarised_yet(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient, meter: str
) -> None:
    send_v1(sdk, "evt_OLD", "cus_A", 5)
    fake_stripe.summaries.received_at["evt_OLD"] -= 120
    fake_stripe.summaries.settle_s = 60
    send_v1(sdk, "evt_NEW", "cus_A", 7)

    assert summaries(sdk, meter, start_time=BASE, end_time=BASE + HOUR, value_grouping_window="hour") == [(BASE, 5)]
