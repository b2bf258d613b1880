"""The two crash windows of exactly-once delivery, each forced open on purpose; still exactly one meter event.

1. After the biller accepted but before the ledger marked the entry `sent`: the gateway retries, Stripe answers
   "an event already exists with identifier", and that counts as sent (docs/billers.md). Forced twice: a call that
   times out on our side although Stripe recorded it, and a gateway SIGKILLed while Stripe's answer is on its way.
2. After the claim was committed but before the response reached Ringside: Ringside retries, the retry is a
   duplicate, and the dispatcher sends the one entry once.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from gateway.adapters.sqlite import SqliteLedger
from gateway.app.container import build_container
from gateway.app.server import create_app
from gateway.domain.ledger import Claim, Recorded
from gateway.domain.signature import sign
from gateway.domain.units import Rounding
from tests.builders import SECRET, event, settings
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.fakes.stripe_server import FAKE_API_KEY, METER_EVENTS, FakeStripe

pytestmark = pytest.mark.slow


class StoreThenStall(FakeStripe):
    """Records the first meter event, then holds its answer back: Stripe has it, the gateway does not know yet."""

    def __init__(self, stall_s: float) -> None:
        super().__init__(api_key=FAKE_API_KEY)
        self.stall_s = stall_s
        self.stalled = threading.Event()

    def _create_meter_event(self, request: Any, params: Any) -> Any:
        reply = super()._create_meter_event(request, params)
        if reply.status == 200 and not self.stalled.is_set():
            self.stalled.set()
            time.sleep(self.stall_s)
        return reply


def _state(database: Path, event_id: str) -> str | None:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT state FROM entries WHERE event_id = ?", (event_id,)).fetchone()
    return None if row is None else str(row[0])


async def _wait_for_state(database: Path, event_id: str, state: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _state(database, event_id) != state:
        assert time.monotonic() < deadline, f"{event_id} is {_state(database, event_id)}, not {state}"
        await asyncio.sleep(0.05)


def _env(database: Path, stripe: FakeStripe, **extra: str) -> dict[str, str]:
    return {
        "RINGSIDE_WEBHOOK_SECRETS": SECRET,
        "GATEWAY_STORE": f"sqlite:///{database}",
        "STRIPE_API_KEY": FAKE_API_KEY,
        "STRIPE_API_BASE": stripe.url,
        "GATEWAY_STRIPE_MAX_RPS": "100",
        **extra,
    }


def _meter_calls(stripe: FakeStripe) -> list[int | None]:
    return [r.status for r in stripe.requests if r.path == METER_EVENTS]


async def test_one_meter_event_when_stripe_records_a_call_that_timed_out_on_our_side(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    with FakeStripe(api_key=FAKE_API_KEY) as stripe:
        stripe.hang_next(1, seconds=0.8, then_process=True)  # recorded at 0.8 s, long after our 0.3 s timeout
        env = _env(database, stripe, GATEWAY_STRIPE_TIMEOUT_S="0.3", GATEWAY_RETRY_BASE_S="2", GATEWAY_RETRY_MAX_S="2")
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                body = msgspec.json.encode(event("evt_TIMED_OUT"))
                await deliver_like_ringside(client, gateway.url, body, SECRET)
            await _wait_for_state(database, "evt_TIMED_OUT", "sent")
        finally:
            gateway.terminate()

    assert [e["identifier"] for e in stripe.meter_events] == ["evt_TIMED_OUT"]
    assert _meter_calls(stripe) == [200, 400]  # the hung call (answered to nobody), then "already exists"
    assert re.search(r'"outcome":\s*"already_sent"', gateway.logs())


async def test_one_meter_event_when_the_gateway_dies_between_stripes_answer_and_marking_sent(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    with StoreThenStall(stall_s=5.0).start() as stripe:
        env = _env(database, stripe, GATEWAY_DISPATCH_LEASE_S="1", GATEWAY_STRIPE_TIMEOUT_S="30")
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        async with httpx.AsyncClient(timeout=5) as client:
            body = msgspec.json.encode(event("evt_KILLED"))
            await deliver_like_ringside(client, gateway.url, body, SECRET)
        assert await asyncio.to_thread(stripe.stalled.wait, 10)
        gateway.kill()  # Stripe holds the event; our ledger still says pending
        state_after_kill = _state(database, "evt_KILLED")

        gateway.start()
        try:
            await _wait_for_state(database, "evt_KILLED", "sent")
        finally:
            gateway.terminate()

    assert state_after_kill == "pending"
    assert [e["identifier"] for e in stripe.meter_events] == ["evt_KILLED"]
    assert _meter_calls(stripe)[-1] == 400  # the restarted gateway's resend: "already exists", counted as sent


class CrashAfterClaim(SqliteLedger):
    """Commits the first claim, then fails as a process dying before its response would: nothing acknowledged."""

    crashed = False

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        recorded = await super().record(claim, rounding, now, replaces=replaces)
        if not self.crashed:
            self.crashed = True
            raise ConnectionResetError("the process died after the commit, before the response")
        return recorded


async def test_one_meter_event_when_the_response_to_a_committed_claim_is_lost(tmp_path: Path) -> None:
    with FakeStripe(api_key=FAKE_API_KEY) as stripe:
        container = build_container(
            settings(
                store=f"sqlite:///{tmp_path / 'gateway.db'}",
                stripe={"api_key": FAKE_API_KEY, "api_base": stripe.url, "max_rps": 100},
                dispatch_poll_s=0.05,
            )
        )
        ledger = CrashAfterClaim(container.sqlite())
        container.ledger.override(providers.Object(ledger))
        body = msgspec.json.encode(event("evt_LOST_ACK"))
        async with AsyncTestClient(create_app(container)) as client:
            statuses = []
            for _ in range(2):  # Ringside: no 2xx, so it delivers again
                headers = {"X-FC-Signature": sign(body, SECRET, int(time.time()))}
                response = await client.post("/webhooks/ringside", content=body, headers=headers)
                statuses.append((response.status_code, response.json().get("status")))
            await asyncio.to_thread(stripe.wait_for_meter_events, 1, 10.0)
            await asyncio.sleep(0.5)  # a second meter event, if there were one, would have come by now

    assert statuses == [(500, None), (200, "duplicate")]
    assert [e["identifier"] for e in stripe.meter_events] == ["evt_LOST_ACK"]
