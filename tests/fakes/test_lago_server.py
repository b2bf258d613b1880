"""The fake Lago holds to Lago's documented behaviour: tests of the adapter are only as good as this."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.lago_server import FAKE_LAGO_KEY, MAX_BATCH, METRIC_CODE, FakeLago

AUTH = {"Authorization": f"Bearer {FAKE_LAGO_KEY}"}


def lago_event(transaction_id: str, subscription: str | None = "sub_A", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "transaction_id": transaction_id,
        "code": METRIC_CODE,
        "timestamp": 1_800_000_000,
        "properties": {"units": 5},
        **extra,
    }
    if subscription is not None:
        event["external_subscription_id"] = subscription
    return event


@pytest.fixture
def client(fake_lago: FakeLago) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_lago.url, headers=AUTH) as http:
        yield http


def test_refuses_401_when_the_bearer_key_is_wrong(fake_lago: FakeLago) -> None:
    response = httpx.post(
        f"{fake_lago.url}/api/v1/events", json={"event": lago_event("tx_1")}, headers={"Authorization": "Bearer no"}
    )

    assert response.status_code == 401
    assert response.json() == {"status": 401, "error": "Unauthorized"}
    assert fake_lago.events == []


def test_stores_an_event_once_and_answers_value_already_exist_to_its_repeat(
    fake_lago: FakeLago, client: httpx.Client
) -> None:
    first = client.post("/api/v1/events", json={"event": lago_event("tx_DUPLICATE")})
    again = client.post("/api/v1/events", json={"event": lago_event("tx_DUPLICATE")})

    assert first.status_code == 200
    assert again.status_code == 422
    assert again.json()["error_details"] == {"transaction_id": ["value_already_exist"]}
    assert len(fake_lago.events) == 1
    assert fake_lago.invalid_requests == []


def test_same_transaction_id_on_another_subscription_is_another_event(
    fake_lago: FakeLago, client: httpx.Client
) -> None:
    client.post("/api/v1/events", json={"event": lago_event("tx_1", "sub_A")})

    response = client.post("/api/v1/events", json={"event": lago_event("tx_1", "sub_B")})

    assert response.status_code == 200  # index_unique_transaction_id is per subscription
    assert len(fake_lago.events) == 2


def test_flags_external_customer_id_which_lago_drops(fake_lago: FakeLago, client: httpx.Client) -> None:
    response = client.post("/api/v1/events", json={"event": lago_event("tx_1", None, external_customer_id="cus_A")})

    assert response.status_code == 200  # as Lago: accepted, and never billed
    [flagged] = fake_lago.invalid_requests
    assert any("external_customer_id" in problem for problem in flagged.problems)
    assert fake_lago.events[0]["external_subscription_id"] is None
    assert "external_customer_id" not in fake_lago.events[0]


def test_answers_value_is_mandatory_when_transaction_id_is_missing(fake_lago: FakeLago, client: httpx.Client) -> None:
    event = lago_event("tx_1")
    del event["transaction_id"]

    response = client.post("/api/v1/events", json={"event": event})

    assert response.status_code == 422
    assert response.json()["error_details"] == {"transaction_id": ["value_is_mandatory"]}
    assert fake_lago.events == []
    assert len(fake_lago.invalid_requests) == 1


def test_batch_is_all_or_nothing_with_errors_keyed_by_position(fake_lago: FakeLago, client: httpx.Client) -> None:
    client.post("/api/v1/events", json={"event": lago_event("tx_KNOWN")})
    batch = [lago_event("tx_NEW_1"), lago_event("tx_KNOWN"), lago_event("tx_NEW_2"), lago_event("tx_NEW_1")]

    refused = client.post("/api/v1/events/batch", json={"events": batch})

    assert refused.status_code == 422
    assert refused.json()["error_details"] == {
        "1": {"transaction_id": ["value_already_exist"]},
        "3": {"transaction_id": ["value_already_exist"]},
    }
    assert [e["transaction_id"] for e in fake_lago.events] == ["tx_KNOWN"]

    resent = client.post("/api/v1/events/batch", json={"events": [batch[0], batch[2]]})

    assert resent.status_code == 200
    assert [e["transaction_id"] for e in resent.json()["events"]] == ["tx_NEW_1", "tx_NEW_2"]
    assert [e["transaction_id"] for e in fake_lago.events] == ["tx_KNOWN", "tx_NEW_1", "tx_NEW_2"]


def test_batch_refuses_more_than_100_events_and_none(fake_lago: FakeLago, client: httpx.Client) -> None:
    over = [lago_event(f"tx_{n}") for n in range(MAX_BATCH + 1)]

    too_many = client.post("/api/v1/events/batch", json={"events": over})
    empty = client.post("/api/v1/events/batch", json={"events": []})

    assert too_many.status_code == 422
    assert too_many.json()["error_details"] == {"events": ["too_many_events"]}
    assert empty.json()["error_details"] == {"events": ["no_events"]}
    assert fake_lago.events == []


def test_finds_a_subscription_by_status_and_issues_a_portal_url(fake_lago: FakeLago, client: httpx.Client) -> None:
    fake_lago.add_customer("cust_A", subscriptions=["sub_OLD"], status="terminated")

    active = client.get("/api/v1/subscriptions/sub_OLD")
    terminated = client.get("/api/v1/subscriptions/sub_OLD", params={"status": "terminated"})
    portal = client.get("/api/v1/customers/cust_A/portal_url")
    unknown = client.get("/api/v1/customers/cust_NOBODY/portal_url")

    assert active.json() == {"status": 404, "error": "Not Found", "code": "subscription_not_found"}
    assert terminated.json()["subscription"]["external_customer_id"] == "cust_A"
    url = portal.json()["customer"]["portal_url"]
    assert httpx.get(url).status_code == 200
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "customer_not_found"


def test_reports_events_for_unknown_subscriptions_like_the_events_errors_webhook(
    fake_lago: FakeLago, client: httpx.Client
) -> None:
    fake_lago.add_customer("cust_A", subscriptions=["sub_A"])

    client.post("/api/v1/events", json={"event": lago_event("tx_1", "sub_A")})
    client.post("/api/v1/events", json={"event": lago_event("tx_2", "sub_GHOST")})

    assert [r["transaction_id"] for r in fake_lago.error_reports] == ["tx_2"]


def test_injected_rate_limit_carries_lagos_headers(fake_lago: FakeLago, client: httpx.Client) -> None:
    fake_lago.fail_next(1, 429, rate_limit_reset=3)

    response = client.post("/api/v1/events", json={"event": lago_event("tx_1")})

    assert response.status_code == 429
    assert response.headers["X-RateLimit-Reset"] == "3"
    assert fake_lago.events == []
