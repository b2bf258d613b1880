"""The fake Stripe server: requests made with the real `stripe` SDK validate; malformed ones are refused and recorded.

These tests pin the fake to Stripe's behaviour as documented (STRIPE-NOTES.md, the OpenAPI excerpt), since every
adapter test trusts it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st
from stripe._encode import _api_encode  # the SDK's own form encoder: the oracle for our parser

from tests.fakes.stripe_schema import load_spec, parse_form, validate
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

EVENT = {
    "event_name": "ringside_spend",
    "payload": {"stripe_customer_id": "cus_A", "value": "1500"},
    "identifier": "evt_1",
    "timestamp": 1_800_000_000,
}


def client(server: FakeStripe, api_key: str = FAKE_API_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": server.url, "meter_events": server.url},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
    )


@pytest.fixture
def sdk(fake_stripe: FakeStripe) -> Iterator[stripe.StripeClient]:
    yield client(fake_stripe)


def post_form(server: FakeStripe, path: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    """A hand-made request, for shapes the SDK would never produce."""
    return httpx.post(
        server.url + path,
        content=urlencode(pairs),
        headers={"Authorization": f"Bearer {FAKE_API_KEY}", "Content-Type": "application/x-www-form-urlencoded"},
    )


# -- meter events ----------------------------------------------------------------------------------------------------


def test_meter_event_is_stored_when_the_request_validates(fake_stripe: FakeStripe, sdk: stripe.StripeClient) -> None:
    created = sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]

    assert created.identifier == "evt_1"
    assert created.object == "billing.meter_event"
    assert fake_stripe.meter_events == [
        {
            "event_name": "ringside_spend",
            "identifier": "evt_1",
            "customer": "cus_A",
            "value": 1500,
            "timestamp": 1_800_000_000,
        }
    ]
    assert fake_stripe.invalid_requests == []


def test_request_is_refused_and_recorded_when_event_name_is_missing(
    fake_stripe: FakeStripe,
    sdk: stripe.StripeClient,
) -> None:
    params = {k: v for k, v in EVENT.items() if k != "event_name"}

    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.billing.meter_events.create(params)  # type: ignore[arg-type]

    assert refused.value.http_status == 400
    assert refused.value.user_message == "Missing required param: event_name."
    assert refused.value.param == "event_name"  # type: ignore[attr-defined]
    assert fake_stripe.meter_events == []
    assert [r.message for r in fake_stripe.invalid_requests] == ["Missing required param: event_name."]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (
            [("event_name", "e"), ("payload[stripe_customer_id]", "c"), ("payload[value]", "1"), ("foo", "x")],
            "Received unknown parameter: foo",
        ),
        (
            [("event_name", "e" * 101), ("payload[stripe_customer_id]", "c"), ("payload[value]", "1")],
            "must be at most 100 characters",
        ),
        (
            [("event_name", "e"), ("payload[stripe_customer_id]", "c"), ("payload[value]", "1"), ("timestamp", "soon")],
            "Invalid integer: 'soon'",
        ),
        (
            [("event_name", "e"), ("payload[stripe_customer_id]", "c"), ("payload[value]", "1.5")],
            "must be a whole number",
        ),
        (
            [("event_name", "e"), ("payload[stripe_customer_id]", "c"), ("payload[value]", "1" * 16)],
            "at most 15 digits",
        ),
        ([("event_name", "e"), ("payload[value]", "1")], "Missing required param: payload[stripe_customer_id]."),
        ([("event_name", "e"), ("payload", "x")], "Invalid object: payload must be a hash"),
    ],
    ids=["unknown-param", "too-long", "not-an-integer", "decimal-value", "16-digits", "no-customer", "not-a-hash"],
)
def test_meter_event_is_refused_when_its_shape_is_wrong(
    fake_stripe: FakeStripe,
    pairs: list[tuple[str, str]],
    message: str,
) -> None:
    response = post_form(fake_stripe, "/v1/billing/meter_events", pairs)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert message in response.json()["error"]["message"]
    assert len(fake_stripe.invalid_requests) == 1
    assert fake_stripe.meter_events == []


def test_second_event_with_an_identifier_is_refused_with_should_retry_false(
    fake_stripe: FakeStripe,
    sdk: stripe.StripeClient,
) -> None:
    sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]

    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]

    assert refused.value.user_message == "An event already exists with identifier evt_1."
    assert refused.value.headers is not None
    assert refused.value.headers["Stripe-Should-Retry"] == "false"
    assert len(fake_stripe.meter_events) == 1
    assert fake_stripe.invalid_requests == []  # a state refusal, not a malformed request


def test_unknown_customer_is_refused_when_known_customers_are_registered(
    fake_stripe: FakeStripe,
    sdk: stripe.StripeClient,
) -> None:
    fake_stripe.known_customers = {"cus_KNOWN"}

    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]

    assert refused.value.user_message == "No such customer: 'cus_A'"
    assert refused.value.code == "resource_missing"
    assert fake_stripe.meter_events == []


def test_wrong_api_key_gets_a_401_like_stripe(fake_stripe: FakeStripe) -> None:
    with pytest.raises(stripe.AuthenticationError) as refused:
        client(fake_stripe, api_key="sk_test_wrong_key_123").v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]

    assert refused.value.http_status == 401
    assert "Invalid API Key provided" in (refused.value.user_message or "")
    assert "wrong_key" not in (refused.value.user_message or "")  # Stripe masks the key
    assert fake_stripe.meter_events == []


def test_every_post_gets_its_own_idempotency_key(fake_stripe: FakeStripe, sdk: stripe.StripeClient) -> None:
    sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]
    sdk.v1.billing.meter_events.create(dict(EVENT, identifier="evt_2"))  # type: ignore[arg-type]

    keys = [r.idempotency_key for r in fake_stripe.requests]
    assert len(set(keys)) == 2
    assert None not in keys


# -- fault injection -------------------------------------------------------------------------------------------------


def test_fail_next_answers_the_next_calls_with_the_status_then_recovers(
    fake_stripe: FakeStripe,
    sdk: stripe.StripeClient,
) -> None:
    fake_stripe.fail_next(1, status=500)
    fake_stripe.fail_next(1, status=429, retry_after=7)

    with pytest.raises(stripe.APIError):
        sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]
    with pytest.raises(stripe.RateLimitError) as limited:
        sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]
    sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]

    assert limited.value.headers is not None
    assert limited.value.headers["Retry-After"] == "7"
    assert [r.status for r in fake_stripe.requests] == [500, 429, 200]
    assert len(fake_stripe.meter_events) == 1


def test_hang_next_keeps_the_client_waiting_and_stores_nothing(fake_stripe: FakeStripe) -> None:
    fake_stripe.hang_next(1, seconds=5)

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            fake_stripe.url + "/v1/billing/meter_events",
            content=urlencode(list(_api_encode(EVENT))),
            headers={"Authorization": f"Bearer {FAKE_API_KEY}"},
            timeout=0.3,
        )

    assert fake_stripe.meter_events == []


def test_fault_on_another_path_leaves_meter_events_alone(fake_stripe: FakeStripe, sdk: stripe.StripeClient) -> None:
    fake_stripe.fail_next(1, status=503, path="/v1/billing_portal/sessions")

    sdk.v1.billing.meter_events.create(dict(EVENT))  # type: ignore[arg-type]
    with pytest.raises(stripe.APIError):
        sdk.v1.billing_portal.sessions.create({"customer": "cus_A"})

    assert len(fake_stripe.meter_events) == 1


def test_max_in_flight_per_customer_counts_concurrent_calls(fake_stripe: FakeStripe) -> None:
    fake_stripe.latency_s = 0.3
    barrier = threading.Barrier(3)

    def send(identifier: str, customer: str) -> None:
        barrier.wait()
        client(fake_stripe).v1.billing.meter_events.create(
            dict(EVENT, identifier=identifier, payload={"stripe_customer_id": customer, "value": "1"})  # type: ignore[arg-type]
        )

    threads = [threading.Thread(target=send, args=args) for args in [("e1", "cus_A"), ("e2", "cus_A"), ("e3", "cus_B")]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert fake_stripe.in_flight_peaks == {"cus_A": 2, "cus_B": 1}
    assert fake_stripe.max_in_flight_per_customer == 2


# -- set-up objects and the portal ---------------------------------------------------------------------------------


def test_meter_product_and_metered_price_are_created_and_listed(
    fake_stripe: FakeStripe,
    sdk: stripe.StripeClient,
) -> None:
    meter = sdk.v1.billing.meters.create(
        {
            "display_name": "Ringside spend",
            "event_name": "ringside_spend",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    product = sdk.v1.products.create({"name": "Ringside usage", "metadata": {"0": "digit keys stay a hash"}})
    price = sdk.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "billing_scheme": "per_unit",
            "unit_amount_decimal": "0.001",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "lookup_key": "ringside_spend_usd",
            "expand": ["product"],
        }
    )
    active = sdk.v1.billing.meters.list({"status": "active"})
    inactive = sdk.v1.billing.meters.list({"status": "inactive"})

    assert [m.id for m in active.data] == [meter.id]
    assert inactive.data == []
    assert price.recurring is not None and price.recurring.meter == meter.id
    assert product.metadata.to_dict() == {"0": "digit keys stay a hash"}
    assert (len(fake_stripe.meters), len(fake_stripe.products), len(fake_stripe.prices)) == (1, 1, 1)
    assert fake_stripe.invalid_requests == []


def test_nested_unknown_parameter_and_bad_enum_are_refused(fake_stripe: FakeStripe, sdk: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as nested:
        sdk.v1.prices.create({"currency": "usd", "product": "prod_x", "recurring": {"interval": "month", "foo": "1"}})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(stripe.InvalidRequestError) as enum:
        sdk.v1.billing.meters.list({"status": "sleeping"})  # type: ignore[typeddict-item]

    assert nested.value.user_message == "Received unknown parameter: recurring[foo]"
    assert enum.value.user_message == "Invalid status: must be one of 'active', 'inactive'"
    assert len(fake_stripe.invalid_requests) == 2


def test_metered_price_without_a_meter_is_refused(fake_stripe: FakeStripe, sdk: stripe.StripeClient) -> None:
    product = sdk.v1.products.create({"name": "p"})

    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.prices.create(
            {"currency": "usd", "product": product.id, "recurring": {"interval": "month", "usage_type": "metered"}}
        )

    assert fake_stripe.prices == []


def test_portal_session_has_a_url_on_the_fake_and_echoes_the_flow(
    fake_stripe: FakeStripe,
    sdk: stripe.StripeClient,
) -> None:
    session = sdk.v1.billing_portal.sessions.create(
        {
            "customer": "cus_A",
            "return_url": "https://app.example/billing",
            "flow_data": {"type": "payment_method_update"},
        }
    )

    assert session.url.startswith(f"{fake_stripe.url}/p/session/bps_")
    assert session.customer == "cus_A"
    assert session.return_url == "https://app.example/billing"
    assert session.flow is not None and session.flow.type == "payment_method_update"
    assert httpx.get(session.url).status_code == 200
    assert len(fake_stripe.portal_sessions) == 1
    assert fake_stripe.invalid_requests == []


# -- v2 meter event stream -----------------------------------------------------------------------------------------


def test_v2_stream_stores_events_and_drops_duplicates_silently(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    session = sdk.v2.billing.meter_event_session.create()
    stream = client(fake_stripe, api_key=session.authentication_token)
    event = {
        "event_name": "ringside_spend",
        "identifier": "evt_v2",
        "payload": {"stripe_customer_id": "cus_A", "value": "3"},
        "timestamp": "2027-01-15T08:00:00Z",
    }

    stream.v2.billing.meter_event_stream.create({"events": [event, event]})  # type: ignore[list-item]

    assert fake_stripe.meter_events == [
        {
            "event_name": "ringside_spend",
            "identifier": "evt_v2",
            "customer": "cus_A",
            "value": 3,
            "timestamp": int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()),
        }
    ]
    assert fake_stripe.invalid_requests == []


def test_v2_stream_refuses_the_secret_key_and_expired_sessions(
    fake_stripe: FakeStripe, sdk: stripe.StripeClient
) -> None:
    fake_stripe.session_ttl_s = 0
    session = sdk.v2.billing.meter_event_session.create()
    events: dict[str, Any] = {"events": [{"event_name": "e", "payload": {"stripe_customer_id": "c", "value": "1"}}]}

    with pytest.raises(stripe.StripeError) as expired:
        client(fake_stripe, api_key=session.authentication_token).v2.billing.meter_event_stream.create(events)  # type: ignore[arg-type]
    with pytest.raises(stripe.StripeError) as secret_key:
        sdk.v2.billing.meter_event_stream.create(events)  # type: ignore[arg-type]

    assert expired.value.http_status == secret_key.value.http_status == 401
    assert expired.value.code == "billing_meter_event_session_expired"
    assert fake_stripe.meter_events == []


# -- the form parser and the validator, directly --------------------------------------------------------------------

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_leaves = st.text(max_size=12)
_trees = st.recursive(_leaves, lambda inner: st.dictionaries(_names, inner, min_size=1, max_size=4), max_leaves=12)


@given(st.dictionaries(_names, _trees, max_size=5))
def test_parse_form_inverts_the_sdk_encoder_for_nested_hashes(params: dict[str, Any]) -> None:
    encoded = urlencode(list(_api_encode(params)))

    parsed, problems = parse_form(encoded)

    assert problems == []
    assert parsed == params


def test_validator_coerces_form_strings_by_schema() -> None:
    schema = load_spec()["/v1/prices"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    form, _ = parse_form(
        "currency=usd&product=prod_1&active=true&recurring[interval]=month&recurring[interval_count]=3"
        "&expand[0]=product&expand[1]=tiers&tiers[0][up_to]=inf&tiers[1][up_to]=10"
    )

    coerced, problems = validate(schema, form, form=True)

    assert problems == []
    assert coerced["active"] is True
    assert coerced["recurring"] == {"interval": "month", "interval_count": 3}
    assert coerced["expand"] == ["product", "tiers"]
    assert coerced["tiers"] == [{"up_to": "inf"}, {"up_to": 10}]  # anyOf: the "inf" string or an integer


def test_validator_reports_anyof_mismatch_and_json_types() -> None:
    price = load_spec()["/v1/prices"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    stream = load_spec()["/v2/billing/meter_event_stream"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]

    _, price_problems = validate(price, parse_form("currency=usd&tiers[0][up_to]=lots")[0], form=True)
    _, stream_problems = validate(
        stream, {"events": [{"event_name": "e", "payload": {"value": 1}, "timestamp": "yesterday"}]}, form=False
    )

    assert [p.param for p in price_problems] == ["tiers[0][up_to]"]
    assert sorted(p.param for p in stream_problems) == ["events[0][payload][value]", "events[0][timestamp]"]
