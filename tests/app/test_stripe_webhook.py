"""`POST /webhooks/stripe` through Litestar's test client, in front of the fake Stripe: signed report notifications
park what Stripe dropped, once; bad signatures change nothing; other types are acknowledged; no secret is a 503."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from gateway.adapters.memory import MemoryLedger
from gateway.app.container import Container, build_container
from gateway.app.server import create_app
from gateway.app.settings_checks import SettingsError
from gateway.domain.ledger import ParkReason, State
from gateway.domain.units import Rounding
from tests.builders import claim, settings
from tests.fakes.stripe_feedback import sign
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe
from tests.service.stripe_loop import create_meter, hours_ago

URL = "/webhooks/stripe"
WHSEC = "whsec_current"
OLD_WHSEC = "whsec_previous"


@dataclass
class StripeGateway:
    container: Container
    client: AsyncTestClient[Any]
    fake: FakeStripe

    @property
    def ledger(self) -> MemoryLedger:
        ledger: MemoryLedger = self.container.ledger()
        return ledger

    async def send_events(self, customers: list[str], per_customer: int = 3) -> None:
        now = time.time()
        for n in range(per_customer * len(customers)):
            billable = claim(f"evt_{n}", exact="100", customer=customers[n % len(customers)], timestamp=hours_ago(2))
            await self.ledger.record(billable, Rounding.CARRY, now)
        while await self.container.dispatcher().run_once():
            pass

    async def notify(self, event: dict[str, Any], *, secret: str = WHSEC, at: int | None = None) -> Any:
        thin = {k: event[k] for k in ("id", "object", "type", "created", "livemode", "related_object")}
        body = json.dumps(thin).encode()
        headers = {"Stripe-Signature": sign(body, secret, at or int(time.time())), "Content-Type": "application/json"}
        return await self.client.post(URL, content=body, headers=headers)


async def _gateway(fake: FakeStripe, **overrides: Any) -> AsyncIterator[StripeGateway]:
    stripe = {"api_key": FAKE_API_KEY, "api_base": fake.url, "max_rps": 1000, **overrides}
    container = build_container(settings(stripe=stripe))
    async with AsyncTestClient(create_app(container, run_dispatcher=False)) as client:
        yield StripeGateway(container, client, fake)


@pytest.fixture
async def gateway(fake_stripe: FakeStripe) -> AsyncIterator[StripeGateway]:
    create_meter(fake_stripe)
    fake_stripe.known_customers = {"cus_known"}
    fake_stripe.asynchronous_validation = True
    async for gateway in _gateway(fake_stripe, webhook_secrets=[WHSEC, OLD_WHSEC]):
        yield gateway


async def test_a_signed_report_parks_what_stripe_dropped_once(gateway: StripeGateway) -> None:
    await gateway.send_events(["cus_known", "cus_unknown"])
    assert {e.state for e in gateway.ledger.entries.values()} == {State.SENT}
    report = gateway.fake.feedback.emit_report()
    assert report is not None

    first = await gateway.notify(report)
    again = await gateway.notify(report, secret=OLD_WHSEC)  # a redelivery, signed with the other live secret

    assert (first.status_code, first.json()) == (200, {"status": "applied", "event_id": report["id"], "parked": 3})
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    states = {e.event_id: (e.billing_customer, e.state) for e in gateway.ledger.entries.values()}
    assert {c for c, s in states.values() if s is State.PARKED} == {"cus_unknown"}
    assert {c for c, s in states.values() if s is State.SENT} == {"cus_known"}
    parked = await gateway.ledger.list_parked()
    assert {p.reason for p in parked} == {ParkReason.BILLER_REJECTED}
    assert all(p.message.startswith("meter_event_customer_not_found: ") for p in parked)
    metrics = (await gateway.client.get("/metrics")).text
    assert 'gateway_stripe_reports_total{source="webhook",status="applied"} 1.0' in metrics
    assert 'gateway_stripe_reports_total{source="webhook",status="duplicate"} 1.0' in metrics
    assert 'gateway_stripe_report_errors_total{code="meter_event_customer_not_found"} 3.0' in metrics
    assert "gateway_stripe_report_parked_total 3.0" in metrics


def _now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    ("signed", "code"),
    [
        (lambda body: {}, "missing_signature"),
        (lambda body: {"Stripe-Signature": "nonsense"}, "malformed_signature"),
        (lambda body: {"Stripe-Signature": sign(b"{}", WHSEC, _now())}, "invalid_signature"),
        (lambda body: {"Stripe-Signature": sign(body, "whsec_someone_else", _now())}, "invalid_signature"),
        (lambda body: {"Stripe-Signature": sign(body, WHSEC, _now() - 301)}, "timestamp_out_of_tolerance"),
    ],
    ids=["missing", "malformed", "other-body", "other-secret", "stale"],
)
async def test_a_bad_signature_is_401_and_changes_nothing(
    gateway: StripeGateway, signed: Callable[[bytes], dict[str, str]], code: str
) -> None:
    await gateway.send_events(["cus_unknown"], per_customer=1)
    report = gateway.fake.feedback.emit_report()
    assert report is not None
    thin = {k: report[k] for k in ("id", "object", "type", "created", "livemode", "related_object")}
    body = json.dumps(thin).encode()

    response = await gateway.client.post(URL, content=body, headers=signed(body))

    assert (response.status_code, response.json()["error"]["code"]) == (401, code)
    assert {e.state for e in gateway.ledger.entries.values()} == {State.SENT}
    assert not await gateway.ledger.report_handled(report["id"])


async def test_other_event_types_are_acknowledged_and_ignored(gateway: StripeGateway) -> None:
    event = {
        "id": "evt_other",
        "object": "v2.core.event",
        "type": "v1.billing.meter.updated",
        "created": "2026-01-01T00:00:00.000Z",
        "livemode": False,
        "related_object": {"id": "mtr_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_1"},
    }
    response = await gateway.notify(event)
    assert (response.status_code, response.json()["status"]) == (200, "ignored")


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "evt_snap", "object": "event", "type": "customer.created", "created": 1700000000, "data": {}}',
        b"[1, 2, 3]",
        b"not json at all",
    ],
    ids=["snapshot event", "a list", "not json"],
)
async def test_a_signed_body_that_is_not_a_thin_event_is_acknowledged_and_ignored(
    gateway: StripeGateway, body: bytes
) -> None:
    headers = {"Stripe-Signature": sign(body, WHSEC, int(time.time())), "Content-Type": "application/json"}
    before = (dict(gateway.ledger.entries), dict(gateway.ledger.parked))

    response = await gateway.client.post(URL, content=body, headers=headers)

    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    assert (dict(gateway.ledger.entries), dict(gateway.ledger.parked)) == before


async def test_without_a_secret_the_route_answers_503_not_configured(fake_stripe: FakeStripe) -> None:
    async for gateway in _gateway(fake_stripe):
        response = await gateway.client.post(URL, content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
        assert (response.status_code, response.json()["error"]["code"]) == (503, "stripe_webhook_not_configured")


async def test_the_route_is_in_the_openapi_document(gateway: StripeGateway) -> None:
    document = (await gateway.client.get("/schema/openapi.json")).json()
    operation = document["paths"][URL]["post"]
    assert {"200", "401", "503"} <= set(operation["responses"])


def test_stripe_feedback_settings_need_the_stripe_biller() -> None:
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        settings(biller="ledger", stripe={"webhook_secrets": ["whsec_x"]})
    with pytest.raises(SettingsError, match="GATEWAY_STRIPE_EVENTS_POLL_S"):
        settings(stripe={"api_key": FAKE_API_KEY, "events_poll_s": 0})
    configured = settings(stripe={"api_key": FAKE_API_KEY, "webhook_secrets": ["whsec_a", "whsec_b"]})
    assert [s.reveal() for s in configured.stripe.webhook_secrets] == ["whsec_a", "whsec_b"]
