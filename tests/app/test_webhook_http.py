"""The webhook endpoint through Litestar's test client: every row of the response table (docs/design.md)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient, TestClient

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryCustomers, MemoryLedger
from gateway.app.container import Container, build_container
from gateway.app.server import create_app
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import Claim, Parked, ParkReason, Recorded, State
from gateway.domain.units import Rounding
from tests.builders import OLD_SECRET, SECRET, encode, event, settings, signed_headers
from tests.log_capture import captured_logs

URL = "/webhooks/ringside"


class Gateway:
    """The app under test, with handles on the stores it writes to."""

    def __init__(self, container: Container, client: TestClient[Any], clock: FrozenClock) -> None:
        self.container = container
        self.client = client
        self.clock = clock
        self.ledger: MemoryLedger = container.ledger()
        self.customers: MemoryCustomers = container.customers()

    def deliver(self, body: dict[str, Any] | bytes, *, secret: str = SECRET, skew: int = 0, **headers: str) -> Any:
        raw = encode(body)
        sent = signed_headers(raw, secret=secret, timestamp=int(self.clock.now()) + skew)
        sent.update(headers)
        return self.client.post(URL, content=raw, headers=sent)


def _container(clock: FrozenClock, **overrides: Any) -> Container:
    container = build_container(settings(**overrides))
    container.clock.override(providers.Object(clock))
    return container


@pytest.fixture
def gateway(clock: FrozenClock) -> Iterator[Gateway]:
    container = _container(clock)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        yield Gateway(container, client, clock)


def test_accepts_and_records_pending_entry_when_signed_and_billable(gateway: Gateway) -> None:
    response = gateway.deliver(event("evt_ACCEPTED", cost="0.0123", stripe_customer="cus_A"))

    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "event_id": "evt_ACCEPTED", "units": 1230}
    entry = gateway.ledger.entries["evt_ACCEPTED"]
    assert (entry.state, entry.billing_customer, entry.units) == (State.PENDING, "cus_A", 1230)


def test_answers_duplicate_and_changes_nothing_when_event_id_seen_before(gateway: Gateway) -> None:
    gateway.deliver(event("evt_DUPLICATE", cost="0.5"))
    before = dict(gateway.ledger.entries)

    response = gateway.deliver(event("evt_DUPLICATE", cost="0.5"))

    assert response.status_code == 200
    assert response.json() == {"status": "duplicate", "event_id": "evt_DUPLICATE"}
    assert gateway.ledger.entries == before


def test_answers_duplicate_when_a_parked_event_is_redelivered(gateway: Gateway) -> None:
    gateway.deliver(event("evt_PARKED", stripe_customer=None, customer="cust_nobody"))

    response = gateway.deliver(event("evt_PARKED", stripe_customer=None, customer="cust_nobody"))

    assert response.status_code == 200
    assert response.json() == {"status": "duplicate", "event_id": "evt_PARKED"}


def test_ignores_without_recording_when_type_is_not_billable(gateway: Gateway) -> None:
    response = gateway.deliver(event("evt_OTHER", event_type="chat.completion.started", cost=None))

    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "event_id": "evt_OTHER"}
    assert gateway.ledger.entries == {} and gateway.ledger.parked == {}


def test_parks_unknown_type_when_an_unlisted_type_carries_a_cost(gateway: Gateway) -> None:
    body = event("evt_NEW_TYPE", event_type="image.generated", cost="0.04")

    response = gateway.deliver(body)

    assert response.status_code == 202
    assert response.json()["status"] == "parked"
    assert response.json()["reason"] == "unknown_type"
    assert "GATEWAY_BILLABLE_EVENTS" in response.json()["message"]
    parked = gateway.ledger.parked["evt_NEW_TYPE"]
    assert (parked.reason, parked.body, parked.event_type) == (ParkReason.UNKNOWN_TYPE, encode(body), "image.generated")
    assert gateway.ledger.entries == {}


def test_ignores_an_unlisted_type_with_a_cost_when_unknown_types_are_ignored(clock: FrozenClock) -> None:
    container = _container(clock, unknown_types="ignore")
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        gateway = Gateway(container, client, clock)

        response = gateway.deliver(event("evt_NEW_TYPE", event_type="image.generated", cost="0.04"))

    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "event_id": "evt_NEW_TYPE"}
    assert gateway.ledger.entries == {} and gateway.ledger.parked == {}


def test_resolves_customer_from_store_when_event_has_no_stripe_id(gateway: Gateway) -> None:
    asyncio.run(gateway.customers.set("cust_MAPPED", "cus_FROM_STORE"))

    response = gateway.deliver(event("evt_MAPPED", customer="cust_MAPPED", stripe_customer=None))

    assert response.json()["status"] == "accepted"
    assert gateway.ledger.entries["evt_MAPPED"].billing_customer == "cus_FROM_STORE"


def test_parks_whole_body_as_unknown_customer_when_no_mapping_exists(gateway: Gateway) -> None:
    body = event("evt_UNKNOWN", customer="cust_unmapped", stripe_customer=None)

    response = gateway.deliver(body)

    assert response.status_code == 202
    assert response.json()["status"] == "parked"
    assert response.json()["reason"] == "unknown_customer"
    parked = gateway.ledger.parked["evt_UNKNOWN"]
    assert parked.reason is ParkReason.UNKNOWN_CUSTOMER
    assert parked.body == encode(body)
    assert gateway.ledger.entries == {}


@pytest.mark.parametrize(
    ("cost", "fragment"),
    [("-1", "negative"), ("NaN", "finite"), ("Infinity", "finite"), ("1000.01", "limit"), (None, "missing")],
)
def test_parks_invalid_payload_when_cost_is_unusable(gateway: Gateway, cost: str | None, fragment: str) -> None:
    response = gateway.deliver(event("evt_BADCOST", cost=cost))

    assert response.status_code == 202
    assert response.json()["reason"] == "invalid_payload"
    assert fragment in response.json()["message"]
    assert gateway.ledger.parked["evt_BADCOST"].reason is ParkReason.INVALID_PAYLOAD


def test_parks_under_body_digest_when_body_is_not_json(gateway: Gateway) -> None:
    response = gateway.deliver(b"\xff\xfe not json")

    assert response.status_code == 202
    assert response.json()["reason"] == "invalid_payload"
    assert response.json()["event_id"].startswith("sha256:")
    assert gateway.ledger.parked[response.json()["event_id"]].body == b"\xff\xfe not json"


def test_parks_too_old_when_event_is_older_than_35_days(gateway: Gateway, clock: FrozenClock) -> None:
    response = gateway.deliver(event("evt_OLD", created=int(clock.now()) - 36 * 86400))

    assert response.status_code == 202
    assert response.json()["reason"] == "too_old"


def test_accepts_old_secret_during_rotation(gateway: Gateway) -> None:
    response = gateway.deliver(event("evt_ROTATED"), secret=OLD_SECRET)

    assert response.json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_signature"),
        ({"X-FC-Signature": "v1=abcd"}, "malformed_signature"),
        ({"X-FC-Signature": "t=notanumber,v1=abcd"}, "malformed_signature"),
        ({"X-FC-Signature": "t=1800000000,v1=" + "0" * 64}, "invalid_signature"),
    ],
)
def test_refuses_with_401_and_stores_nothing_when_signature_is_bad(
    gateway: Gateway, headers: dict[str, str], code: str
) -> None:
    response = gateway.client.post(URL, content=encode(event("evt_FORGED")), headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert gateway.ledger.entries == {} and gateway.ledger.parked == {}


@pytest.mark.parametrize("skew", [301, -301])
def test_refuses_stale_or_future_timestamp(gateway: Gateway, skew: int) -> None:
    response = gateway.deliver(event("evt_STALE"), skew=skew)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "timestamp_out_of_tolerance"
    assert gateway.ledger.entries == {}


def test_refuses_wrong_secret(gateway: Gateway) -> None:
    response = gateway.deliver(event("evt_WRONG"), secret="not-our-secret")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"


def test_refuses_with_413_when_body_exceeds_limit(clock: FrozenClock) -> None:
    container = _container(clock, max_body_bytes=1024)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        gateway = Gateway(container, client, clock)
        response = gateway.deliver(event("evt_BIG", padding="x" * 2000))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert gateway.ledger.entries == {}


class UnwritableLedger(MemoryLedger):
    """A ledger whose storage is gone: every write fails the way a real adapter's would."""

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        raise StoreUnavailable("disk I/O error")

    async def park(self, parked: Parked) -> bool:
        raise StoreUnavailable("disk I/O error")

    async def ping(self) -> None:
        raise StoreUnavailable("disk I/O error")


def test_answers_503_with_retry_after_when_ledger_cannot_be_written(clock: FrozenClock) -> None:
    container = _container(clock)
    container.ledger.override(providers.Object(UnwritableLedger()))
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        gateway = Gateway(container, client, clock)
        response = gateway.deliver(event("evt_DOWN"))
        ready = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert ready.status_code == 503


def test_every_error_is_json_when_route_or_method_is_wrong(gateway: Gateway) -> None:
    missing = gateway.client.get("/nowhere")
    wrong_method = gateway.client.get(URL)

    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.headers["Allow"] == "POST"


def test_the_webhook_answers_alike_when_its_path_goes_through_litestars_router(gateway: Gateway) -> None:
    """The exact path is served before Litestar's router (served_first); any other spelling of it (here a trailing
    slash, which Litestar normalises) reaches the same function through the router."""
    direct = gateway.deliver(event("evt_DIRECT"))
    body = encode(event("evt_ROUTED"))
    routed = gateway.client.post(
        URL + "/", content=body, headers=signed_headers(body, timestamp=int(gateway.clock.now()))
    )

    assert direct.status_code == routed.status_code == 200
    assert direct.json()["status"] == routed.json()["status"] == "accepted"
    assert direct.headers["x-request-id"] and routed.headers["x-request-id"]
    assert {entry.event_id for entry in gateway.ledger.entries.values()} >= {"evt_DIRECT", "evt_ROUTED"}


class ExplodingLedger(MemoryLedger):
    """A ledger with a bug: what no adapter should raise, raised."""

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        raise RuntimeError("a bug, not an outage")


def test_answers_500_as_json_and_logs_it_when_ingest_fails_unexpectedly(clock: FrozenClock) -> None:
    container = _container(clock)
    container.ledger.override(providers.Object(ExplodingLedger()))
    with captured_logs() as logs, TestClient(create_app(container, run_dispatcher=False)) as client:
        response = Gateway(container, client, clock).deliver(event("evt_BUG"))

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert [line["event"] for line in logs.lines() if line["level"] == "error"] == ["http.unexpected_error"]


def _post_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ASGI scope of a POST to the webhook, as a server hands it to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _call(app: Any, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Call the ASGI app with the request messages as given (chunks, a disconnect); return what it sent."""
    pending = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(pending)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _post_scope(headers)
    await app(scope, receive, send)
    return sent


async def test_refuses_with_413_as_soon_as_a_body_without_length_grows_over_the_limit(clock: FrozenClock) -> None:
    container = _container(clock, max_body_bytes=1024)
    raw = encode(event("evt_STREAMED", padding="x" * 2000))
    signature = [
        (name.lower().encode(), value.encode())
        for name, value in signed_headers(raw, secret=SECRET, timestamp=int(clock.now())).items()
    ]
    chunks = [{"type": "http.request", "body": raw[i : i + 512], "more_body": True} for i in range(0, len(raw), 512)]

    sent = await _call(create_app(container, run_dispatcher=False), chunks, signature)

    assert sent[0]["status"] == 413
    assert msgspec.json.decode(sent[1]["body"])["error"]["code"] == "payload_too_large"
    assert container.ledger().entries == {}


async def test_records_nothing_and_answers_nothing_when_the_client_leaves_before_its_body(clock: FrozenClock) -> None:
    container = _container(clock)
    raw = encode(event("evt_GONE"))
    signature = [
        (name.lower().encode(), value.encode())
        for name, value in signed_headers(raw, secret=SECRET, timestamp=int(clock.now())).items()
    ]
    messages = [{"type": "http.request", "body": raw[:100], "more_body": True}, {"type": "http.disconnect"}]

    sent = await _call(create_app(container, run_dispatcher=False), messages, signature)

    assert sent == []
    assert container.ledger().entries == {}


class StalledBody:
    """A client that sent its headers, then `messages` of its body, then nothing more (a slow or hostile one)."""

    def __init__(self, messages: list[dict[str, Any]] | None = None) -> None:
        self._pending = iter(messages or [])
        self.reads = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        for message in self._pending:
            return message
        await asyncio.Event().wait()  # never: the rest of the body does not come
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def status(self) -> int:
        return int(self.sent[0]["status"])

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    def error_code(self) -> str:
        return str(msgspec.json.decode(self.sent[1]["body"])["error"]["code"])


async def _serve_stalled(app: Any, client: StalledBody, headers: list[tuple[bytes, bytes]]) -> None:
    scope = _post_scope(headers)
    await asyncio.wait_for(app(scope, client.receive, client.send), timeout=5)


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        pytest.param(None, "missing_signature", id="missing"),
        pytest.param("sha256=deadbeef", "malformed_signature", id="malformed"),
        pytest.param(f"t={1_800_000_000 - 301},v1={'0' * 64}", "timestamp_out_of_tolerance", id="stale"),
        pytest.param(f"t={1_800_000_000 + 301},v1={'0' * 64}", "timestamp_out_of_tolerance", id="future"),
    ],
)
async def test_refuses_401_before_reading_the_body_when_the_signature_header_cannot_be_valid(
    clock: FrozenClock, signature: str | None, code: str
) -> None:
    container = _container(clock)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000000")]
    if signature is not None:
        headers.append((b"x-fc-signature", signature.encode()))
    client = StalledBody()

    await _serve_stalled(create_app(container, run_dispatcher=False), client, headers)

    assert (client.status(), client.error_code()) == (401, code)
    assert client.reads == 0
    # The unread body must not be taken for the next request on the connection.
    assert client.headers()[b"connection"] == b"close"
    assert container.ledger().entries == {} and container.ledger().parked == {}


async def test_answers_408_when_the_body_does_not_arrive_within_the_deadline(clock: FrozenClock) -> None:
    container = _container(clock, body_timeout_s=0.2)
    raw = encode(event("evt_SLOW"))
    headers = [
        (name.lower().encode(), value.encode())
        for name, value in signed_headers(raw, secret=SECRET, timestamp=int(clock.now())).items()
    ]
    client = StalledBody([{"type": "http.request", "body": raw[:10], "more_body": True}])

    started = asyncio.get_running_loop().time()
    await _serve_stalled(create_app(container, run_dispatcher=False), client, headers)
    waited = asyncio.get_running_loop().time() - started

    assert (client.status(), client.error_code()) == (408, "body_timeout")
    assert client.headers()[b"connection"] == b"close"
    assert 0.2 <= waited < 2
    assert container.ledger().entries == {} and container.ledger().parked == {}


def test_reads_the_request_limits_from_the_environment() -> None:
    from gateway.app.environment import load_settings
    from gateway.app.settings_checks import SettingsError

    loaded = load_settings(
        {"GATEWAY_BODY_TIMEOUT_S": "2.5", "GATEWAY_MAX_CONNECTIONS": "50", "GATEWAY_MAX_HEADER_BYTES": "8192"}
    )
    defaults = load_settings({})

    assert (loaded.body_timeout_s, loaded.max_connections, loaded.max_header_bytes) == (2.5, 50, 8192)
    assert (defaults.body_timeout_s, defaults.max_connections, defaults.max_header_bytes) == (10.0, 1000, 16384)
    for variable in ("GATEWAY_BODY_TIMEOUT_S", "GATEWAY_MAX_CONNECTIONS", "GATEWAY_MAX_HEADER_BYTES"):
        with pytest.raises(SettingsError, match=variable):
            load_settings({variable: "0"})


def test_health_and_readiness_report_ok(gateway: Gateway) -> None:
    assert gateway.client.get("/healthz").json() == {"status": "ok"}
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "biller": "memory", "biller_configured": False}


async def test_records_exactly_once_when_one_event_arrives_many_times_at_once(clock: FrozenClock) -> None:
    container = _container(clock)
    body = encode(event("evt_CONCURRENT", cost="1"))
    headers = signed_headers(body, timestamp=int(clock.now()))
    async with AsyncTestClient(create_app(container, run_dispatcher=False)) as client:
        responses = await asyncio.gather(*(client.post(URL, content=body, headers=headers) for _ in range(25)))

    statuses = sorted(msgspec.json.decode(r.content)["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 24
    assert len(container.ledger().entries) == 1


def test_what_startup_built_is_kept_out_of_the_collectors_sight_while_the_app_runs(clock: FrozenClock) -> None:
    # A full collection walking everything startup built paused the event loop ~40 ms under load (bench/run.py).
    container = _container(clock)
    with TestClient(create_app(container, run_dispatcher=False)):
        frozen_while_running = gc.get_freeze_count()

    assert frozen_while_running > 1000
    assert gc.get_freeze_count() == 0  # and given back at shutdown
