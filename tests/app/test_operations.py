"""Operations through the HTTP app (docs/operations.md): /metrics, /readyz, request ids on responses and log lines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.adapters.clock import FrozenClock
from gateway.adapters.stripe.rules import meter_identifier
from gateway.app.container import Container, build_container
from gateway.app.metrics import PrometheusMetrics
from gateway.app.server import create_app
from gateway.domain.errors import BillerRejected, BillerUnavailable
from gateway.domain.ports import MeterEvent
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.builders import encode, event, settings, signed_headers
from tests.log_capture import captured_logs
from tests.service.billers import BatchBiller, ScriptedBiller

URL = "/webhooks/ringside"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels (parsed, not grepped)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class App:
    def __init__(self, container: Container, client: TestClient[Any], clock: FrozenClock) -> None:
        self.container = container
        self.client = client
        self.clock = clock

    def deliver(self, body: dict[str, Any] | bytes, **headers: str) -> Any:
        raw = encode(body)
        sent = signed_headers(raw, timestamp=int(self.clock.now()))
        sent.update(headers)
        return self.client.post(URL, content=raw, headers=sent)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return samples(response.text)


def _container(clock: FrozenClock, **overrides: Any) -> Container:
    container = build_container(settings(**overrides))
    container.clock.override(providers.Object(clock))
    return container


@pytest.fixture
def app(clock: FrozenClock) -> Iterator[App]:
    container = _container(clock, max_body_bytes=4096)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        yield App(container, client, clock)


def test_counts_deliveries_by_outcome_and_code(app: App) -> None:
    now = int(app.clock.now())
    app.deliver(event("evt_A", cost="0.01"))
    app.deliver(event("evt_A", cost="0.01"))
    app.deliver(event("evt_NOBODY", customer="cust_unmapped", stripe_customer=None))
    app.deliver(event("evt_NEG", cost="-1"))
    app.deliver(event("evt_OTHER", event_type="chat.completion.started", cost=None))
    app.client.post(URL, content=encode(event("evt_FORGED")), headers={"X-FC-Signature": f"t={now},v1=00"})
    # A `t` out of tolerance is refused on its header alone, before the body is read.
    app.client.post(URL, content=encode(event("evt_STALE")), headers={"X-FC-Signature": "t=1,v1=00"})
    app.deliver(event("evt_BIG", padding="x" * 5000))

    metrics = app.metrics()

    deliveries = {
        labels: value for (name, labels), value in metrics.items() if name == "gateway_webhook_deliveries_total"
    }
    assert deliveries == {
        (("code", ""), ("outcome", "accepted")): 1,
        (("code", ""), ("outcome", "duplicate")): 1,
        (("code", ""), ("outcome", "ignored")): 1,
        (("code", "unknown_customer"), ("outcome", "parked")): 1,
        (("code", "invalid_payload"), ("outcome", "parked")): 1,
        (("code", "invalid_signature"), ("outcome", "refused")): 1,
        (("code", "timestamp_out_of_tolerance"), ("outcome", "refused")): 1,
        (("code", "payload_too_large"), ("outcome", "refused")): 1,
    }
    assert metrics[("gateway_units_accepted_total", ())] == 1000
    assert metrics[("gateway_parked_total", (("reason", "unknown_customer"),))] == 1


def test_reports_the_ledger_backlog_read_at_scrape_time(app: App, clock: FrozenClock) -> None:
    app.deliver(event("evt_OLD", cost="0.01"))
    clock.advance(42)
    app.deliver(event("evt_NEW", cost="0.02"))
    app.deliver(event("evt_PARKED", customer="cust_unmapped", stripe_customer=None))

    metrics = app.metrics()

    assert metrics[("gateway_ledger_pending_entries", ())] == 2
    assert metrics[("gateway_ledger_pending_units", ())] == 3000
    assert metrics[("gateway_ledger_oldest_pending_age_seconds", ())] == 42
    assert metrics[("gateway_ledger_parked_entries", ())] == 1
    assert metrics[("gateway_ledger_up", ())] == 1


def test_each_app_has_its_own_registry(clock: FrozenClock) -> None:
    first, second = _container(clock), _container(clock)
    with (
        TestClient(create_app(first, run_dispatcher=False)) as one,
        TestClient(create_app(second, run_dispatcher=False)),
    ):
        body = encode(event("evt_ONLY_IN_FIRST"))
        one.post(URL, content=body, headers=signed_headers(body, timestamp=int(clock.now())))

    assert first.metrics().registry.get_sample_value("gateway_units_accepted_total") == 1230
    assert second.metrics().registry.get_sample_value("gateway_units_accepted_total") == 0


async def test_counts_dispatch_outcomes_units_sent_latency_and_biller_errors_by_cause(clock: FrozenClock) -> None:
    container = _container(clock)
    metrics: PrometheusMetrics = container.metrics()
    biller = ScriptedBiller()
    biller.failures = [
        BillerUnavailable("boom", cause="server_error"),
        BillerUnavailable("slow", cause="timeout"),
        BillerRejected("No such customer"),
    ]
    dispatcher = Dispatcher(container.ledger(), biller, clock, DispatchConfig(max_rps=1e6), metrics=metrics)
    ingest = container.ingest()
    for n, customer in enumerate(["cus_A", "cus_B", "cus_C", "cus_D"]):
        body = encode(event(f"evt_{n}", cost="0.01", stripe_customer=customer))
        await ingest.process(body, int(clock.now()), clock.now())

    await dispatcher.run_once()
    clock.advance(3600)
    await dispatcher.run_once()

    value = metrics.registry.get_sample_value
    assert value("gateway_dispatch_total", {"outcome": "retry"}) == 2
    assert value("gateway_dispatch_total", {"outcome": "parked"}) == 1
    assert value("gateway_dispatch_total", {"outcome": "sent"}) == 3
    assert value("gateway_units_sent_total") == 3000
    assert value("gateway_biller_errors_total", {"cause": "server_error"}) == 1
    assert value("gateway_biller_errors_total", {"cause": "timeout"}) == 1
    assert value("gateway_biller_request_duration_seconds_count", {"result": "ok"}) == 3
    assert value("gateway_biller_request_duration_seconds_count", {"result": "error"}) == 2
    assert value("gateway_biller_request_duration_seconds_count", {"result": "rejected"}) == 1
    assert value("gateway_parked_total", {"reason": "biller_rejected"}) == 1


async def test_counts_each_entry_of_a_batch_call_once_with_its_units(clock: FrozenClock) -> None:
    container = _container(clock)
    metrics: PrometheusMetrics = container.metrics()
    biller = BatchBiller()
    dispatcher = Dispatcher(container.ledger(), biller, clock, DispatchConfig(max_rps=1e6), metrics=metrics)
    ingest = container.ingest()
    costs = {"evt_0": "0.01", "evt_1": "0.02", "evt_2": "0.03", "evt_3": "0.04", "evt_4": "0.000001"}
    for event_id, cost in costs.items():
        await ingest.process(encode(event(event_id, cost=cost)), int(clock.now()), clock.now())
    # The biller already holds evt_1's meter event (a crash after the call, before the mark): already sent.
    leased = await container.ledger().lease_due(clock.now(), 10, 30)
    evt_1 = next(entry for entry in leased if entry.event_id == "evt_1")
    await biller.send(MeterEvent(meter_identifier("evt_1"), evt_1.billing_customer, evt_1.units, evt_1.timestamp))
    await container.ledger().release([entry.event_id for entry in leased])

    await dispatcher.run_once()

    value = metrics.registry.get_sample_value
    assert value("gateway_dispatch_total", {"outcome": "sent"}) == 3
    assert value("gateway_dispatch_total", {"outcome": "already_sent"}) == 1
    assert value("gateway_dispatch_total", {"outcome": "zero_units"}) == 1
    assert value("gateway_units_sent_total") == 10000  # 1000 + 2000 + 3000 + 4000 units, evt_4's 0 units included
    assert value("gateway_biller_request_duration_seconds_count", {"result": "ok"}) == 2  # 3 + 1 entries per call


def test_readiness_reports_whether_a_real_biller_is_configured(clock: FrozenClock) -> None:
    with TestClient(create_app(_container(clock, stripe={"api_key": "sk_test_x"}), run_dispatcher=False)) as client:
        ready = client.get("/readyz")

    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"store": "ok", "biller": "stripe", "biller_configured": True},
    }


# -- request ids ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/nowhere", URL])
def test_every_response_carries_a_fresh_request_id_when_none_is_sent(app: App, path: str) -> None:
    first = app.client.get(path)
    second = app.client.get(path)

    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_keeps_a_sane_incoming_request_id(app: App) -> None:
    response = app.deliver(event("evt_TRACED"), **{"X-Request-ID": "lb-7f3a:01.23/abc=="})

    assert response.headers["x-request-id"] == "lb-7f3a:01.23/abc=="


@pytest.mark.parametrize(
    "incoming",
    ["has space", "a" * 129, "semi;colon", 'quote"d', "caf\u00e9", "", "x\ty", "<script>"],
)
def test_replaces_an_incoming_request_id_that_is_not_sane(app: App, incoming: str) -> None:
    response = app.client.get("/healthz", headers={"X-Request-ID": incoming.encode("latin-1")})

    echoed = response.headers["x-request-id"]
    assert echoed != incoming and len(echoed) == 32 and echoed.isalnum()
    assert response.headers.get_list("x-request-id") == [echoed]


def test_binds_the_request_id_to_every_log_line_of_the_request(clock: FrozenClock) -> None:
    with captured_logs() as logs:
        container = _container(clock)
        with TestClient(create_app(container, run_dispatcher=False)) as client:
            body = encode(event("evt_LOGGED"))
            headers = signed_headers(body, timestamp=int(clock.now()))
            client.post(URL, content=body, headers={**headers, "X-Request-ID": "req-1"})
            client.post(URL, content=body, headers={**headers, "X-Request-ID": "req-2"})
            client.post(URL, content=b"{}", headers={"X-FC-Signature": "t=1,v1=00", "X-Request-ID": "req-3"})

    webhook_lines = [line for line in logs.lines() if line["event"].startswith("webhook.")]
    assert [(line["event"], line.get("request_id")) for line in webhook_lines] == [
        ("webhook.delivery", "req-1"),
        ("webhook.delivery", "req-2"),
        ("webhook.refused", "req-3"),
    ]


def test_counting_costs_microseconds_not_milliseconds() -> None:
    """The metrics adapter sits on the hot path: 10,000 counted deliveries take well under half a second."""
    metrics = PrometheusMetrics()

    started = time.perf_counter()
    for _ in range(10_000):
        metrics.delivery("accepted")
        metrics.units_accepted(1230)
    elapsed = time.perf_counter() - started

    assert elapsed < 0.5
