"""`gateway parked list|show|replay` on a SQLite store: a replay bills a parked event exactly once.

The gateway's own pieces (ingest, dispatcher, local ledger biller) arrange and finish each scenario in the test
process, as `gateway serve` would; the commands under test run through click's CliRunner against the same file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.adapters.sqlite import SqliteBiller
from gateway.app.container import Container, build_container
from gateway.app.environment import load_settings
from gateway.app.lifecycle import running
from gateway.app.secret import Secret
from gateway.domain.ledger import State
from gateway.domain.ports import MeterEvent
from gateway.domain.signature import sign
from gateway.service.ingest import Outcome, Status
from tests.app.cli_runner import cli_env, gateway, json_out, sqlite_store
from tests.builders import SECRET, encode, event

T = TypeVar("T")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def env(database: Path) -> dict[str, str | None]:
    return cli_env(GATEWAY_STORE=sqlite_store(database))


def with_gateway(database: Path, work: Callable[[Container], Awaitable[T]]) -> T:
    """Run `work` against a gateway container on `database` (what `gateway serve` holds), then close it."""

    async def run() -> T:
        settings = load_settings({}, store=sqlite_store(database), webhook_secrets=[Secret(SECRET)])
        async with running(build_container(settings)) as container:
            return await work(container)

    return asyncio.run(run())


def deliver(database: Path, body: bytes) -> Outcome:
    async def work(container: Container) -> Outcome:
        outcome: Outcome = await container.ingest().deliver(sign(body, SECRET, int(time.time())), body)
        return outcome

    return with_gateway(database, work)


def dispatch(database: Path) -> list[MeterEvent]:
    """Let the dispatcher deliver everything due; return every meter event the local ledger biller holds."""

    async def work(container: Container) -> list[MeterEvent]:
        while await container.dispatcher().run_once():
            pass
        return await SqliteBiller(container.sqlite()).events()

    return with_gateway(database, work)


def unmapped_event(event_id: str, cost: str = "0.0123", customer: str = "cust_LATE") -> bytes:
    return encode(event(event_id, cost=cost, customer=customer, stripe_customer=None))


def test_list_and_show_describe_a_parked_delivery(env: dict[str, str | None], database: Path) -> None:
    deliver(database, unmapped_event("evt_PARKED"))

    listed = json_out(gateway("parked", "list", "--json", env=env))
    shown = gateway("parked", "show", "evt_PARKED", env=env)

    assert [(p["key"], p["reason"], p["ringside_customer"]) for p in listed] == [
        ("evt_PARKED", "unknown_customer", "cust_LATE")
    ]
    assert shown.exit_code == 0, shown.output
    assert "unknown_customer" in shown.stdout
    assert '"id": "evt_PARKED"' in shown.stdout
    assert "evt_PARKED" in gateway("parked", "list", env=env).stdout


def test_show_fails_when_nothing_is_parked_under_the_key(env: dict[str, str | None]) -> None:
    result = gateway("parked", "show", "evt_UNKNOWN", env=env)

    assert result.exit_code == 1
    assert "nothing is parked under evt_UNKNOWN" in result.stderr


def test_replay_bills_exactly_once_when_the_mapping_was_added_later(env: dict[str, str | None], database: Path) -> None:
    assert deliver(database, unmapped_event("evt_LATE", cost="0.0123")).status is Status.PARKED
    assert gateway("parked", "replay", "evt_LATE", env=env).exit_code == 1  # no mapping yet: stays parked
    gateway("customers", "set", "cust_LATE", "cus_LATE", env=env)

    replayed = json_out(gateway("parked", "replay", "evt_LATE", "--json", env=env))
    again = gateway("parked", "replay", "evt_LATE", env=env)
    redelivered = deliver(database, unmapped_event("evt_LATE", cost="0.0123"))
    events = dispatch(database)

    assert replayed == {"key": "evt_LATE", "status": "billed", "units": 1230, "customer": "cus_LATE"}
    assert again.exit_code == 0, again.output
    assert "not parked" in again.stdout
    assert redelivered.status is Status.DUPLICATE
    assert [(e.identifier, e.customer, e.value) for e in events] == [("evt_LATE", "cus_LATE", 1230)]
    assert json_out(gateway("parked", "list", "--json", env=env)) == []


def test_replay_fails_with_the_reason_when_the_event_is_still_not_billable(
    env: dict[str, str | None], database: Path
) -> None:
    deliver(database, unmapped_event("evt_LATE"))

    result = gateway("parked", "replay", "evt_LATE", env=env)

    assert result.exit_code == 1
    assert "evt_LATE: still parked: unknown_customer: no billing customer is mapped" in result.stderr
    assert [p["key"] for p in json_out(gateway("parked", "list", "--json", env=env))] == ["evt_LATE"]


def test_replay_requeues_a_biller_rejected_entry_to_the_fixed_customer_once(
    env: dict[str, str | None], database: Path
) -> None:
    body = encode(event("evt_REJECTED", cost="0.5", customer="cust_R", stripe_customer="cus_DELETED"))
    deliver(database, body)

    async def reject(container: Container) -> None:
        ledger = container.ledger()
        await ledger.lease_due(time.time(), 10, 30.0)
        # What the dispatcher does when Stripe answers "No such customer".
        await ledger.mark_rejected("evt_REJECTED", "No such customer: 'cus_DELETED'", time.time())

    with_gateway(database, reject)
    listed = json_out(gateway("parked", "list", "--reason", "biller_rejected", "--json", env=env))
    gateway("customers", "set", "cust_R", "cus_FIXED", env=env)

    first = json_out(gateway("parked", "replay", "evt_REJECTED", "--json", env=env))
    second = json_out(gateway("parked", "replay", "evt_REJECTED", "--json", env=env))
    events = dispatch(database)

    assert [p["key"] for p in listed] == ["evt_REJECTED"]
    assert first == {"key": "evt_REJECTED", "status": "billed", "units": 50000, "customer": "cus_FIXED"}
    assert second == {"key": "evt_REJECTED", "status": "not_parked"}
    assert [(e.identifier, e.customer, e.value) for e in events] == [("evt_REJECTED", "cus_FIXED", 50000)]

    async def entry_state(container: Container) -> State | None:
        entry = await container.ledger().get("evt_REJECTED")
        return None if entry is None else entry.state

    assert with_gateway(database, entry_state) is State.SENT


def test_replay_all_bills_what_it_can_and_leaves_the_rest_parked(env: dict[str, str | None], database: Path) -> None:
    for number in range(5):
        deliver(database, unmapped_event(f"evt_A_{number}", cost="0.00001", customer="cust_A"))
    for number in range(2):
        deliver(database, unmapped_event(f"evt_B_{number}", cost="0.00001", customer="cust_B"))
    deliver(database, b'{"id": 42, "type": "chat.completion.finished"}')  # invalid_payload
    gateway("customers", "set", "cust_A", "cus_A", env=env)

    result = json_out(gateway("parked", "replay", "--all", "--reason", "unknown_customer", "--json", env=env))
    again = json_out(gateway("parked", "replay", "--all", "--json", env=env))
    events = dispatch(database)

    assert result["counts"] == {"billed": 5, "still parked (unknown_customer)": 2}
    assert again["counts"] == {"still parked (unknown_customer)": 2, "still parked (invalid_payload)": 1}
    assert sorted(e.identifier for e in events) == [f"evt_A_{number}" for number in range(5)]
    human = gateway("parked", "replay", "--all", env=env)
    assert human.exit_code == 0
    assert "Replayed 3: 1 still parked (invalid_payload), 2 still parked (unknown_customer)" in human.stdout


def test_unknown_type_is_listed_and_billed_by_replay_once_its_type_is_listed(
    env: dict[str, str | None], database: Path
) -> None:
    body = encode(event("evt_IMAGE", event_type="image.generated", cost="0.04", stripe_customer="cus_IMG"))
    assert deliver(database, body).status is Status.PARKED

    listed = json_out(gateway("parked", "list", "--reason", "unknown_type", "--json", env=env))
    not_yet = gateway("parked", "replay", "evt_IMAGE", env=env)
    listing = {**env, "GATEWAY_BILLABLE_EVENTS": "chat.completion.finished,image.generated"}
    replayed = json_out(gateway("parked", "replay", "evt_IMAGE", "--json", env=listing))
    events = dispatch(database)

    assert [(p["key"], p["reason"], p["event_type"]) for p in listed] == [
        ("evt_IMAGE", "unknown_type", "image.generated")
    ]
    assert not_yet.exit_code == 1
    assert "evt_IMAGE: still parked: unknown_type" in not_yet.stderr
    assert replayed == {"key": "evt_IMAGE", "status": "billed", "units": 4000, "customer": "cus_IMG"}
    assert [(e.identifier, e.customer, e.value) for e in events] == [("evt_IMAGE", "cus_IMG", 4000)]


def test_replay_of_an_entry_parked_too_old_fails_unless_restamped_then_bills_it_at_the_current_time(
    env: dict[str, str | None], database: Path
) -> None:
    body = encode(event("evt_STALE", cost="0.5", customer="cust_S", stripe_customer="cus_S"))
    deliver(database, body)

    async def outlive_the_window(container: Container) -> None:
        ledger = container.ledger()
        await ledger.lease_due(time.time(), 10, 30.0)
        # What the dispatcher does with an entry that stayed pending past the biller's 35-day window.
        await ledger.mark_too_old("evt_STALE", "event is older than the biller's 35-day window", time.time())

    with_gateway(database, outlive_the_window)
    listed = json_out(gateway("parked", "list", "--reason", "too_old", "--json", env=env))
    plain = gateway("parked", "replay", "evt_STALE", env=env)
    before = time.time()
    restamped = json_out(gateway("parked", "replay", "evt_STALE", "--restamp", "--json", env=env))
    events = dispatch(database)

    assert [p["key"] for p in listed] == ["evt_STALE"]
    assert plain.exit_code == 1
    assert "evt_STALE: still parked: too_old" in plain.stderr
    assert "--restamp" in plain.stderr
    assert restamped == {"key": "evt_STALE", "status": "billed", "units": 50000, "customer": "cus_S"}
    assert [(e.identifier, e.customer, e.value) for e in events] == [("evt_STALE", "cus_S", 50000)]
    assert events[0].timestamp >= int(before)


def test_replay_fails_when_nothing_is_parked_under_the_key(env: dict[str, str | None]) -> None:
    result = gateway("parked", "replay", "evt_UNKNOWN", env=env)

    assert result.exit_code == 1
    assert "nothing is parked under evt_UNKNOWN" in result.stderr


@pytest.mark.parametrize("args", [[], ["evt_1", "--all"], ["evt_1", "--reason", "too_old"]])
def test_replay_refuses_ambiguous_arguments(env: dict[str, str | None], args: list[str]) -> None:
    assert gateway("parked", "replay", *args, env=env).exit_code == 2


def test_replay_works_without_a_webhook_secret_in_the_environment(env: dict[str, str | None], database: Path) -> None:
    deliver(database, unmapped_event("evt_LATE"))
    gateway("customers", "set", "cust_LATE", "cus_LATE", env=env)

    result = gateway("parked", "replay", "evt_LATE", env=env)

    assert env["RINGSIDE_WEBHOOK_SECRETS"] is None
    assert result.exit_code == 0, result.output
    assert "billed" in result.stdout


def test_unusable_store_is_a_one_line_failure(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_text("this is not a SQLite file" * 100)
    env = cli_env(GATEWAY_STORE=sqlite_store(tmp_path / "not-a-db"))

    result = gateway("parked", "list", env=env)

    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "SQLite" in result.stderr
