"""The pieces the feedback and reconciliation tests assemble: a gateway's ledger and dispatcher in front of the fake
Stripe, the adapters that read Stripe's side, and a destination that catches Stripe's signed notifications."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import stripe

from gateway.adapters.clock import SystemClock
from gateway.adapters.memory import MemoryLedger
from gateway.adapters.stripe.events import StripeReports
from gateway.adapters.stripe.notifications import StripeNotificationVerifier
from gateway.adapters.stripe.rules import meter_identifier
from gateway.adapters.stripe.sink import StripeBillingSink
from gateway.adapters.stripe.stream import StripeStreamBillingSink
from gateway.adapters.stripe.summaries import StripeMeterTotals
from gateway.domain.feedback import Notification
from gateway.domain.ports import BillingSink
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from gateway.service.feedback import ReportHandler
from tests.fakes.http_fake import Reply, ThreadedFake
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

HOUR = 3600
DESTINATION_SECRET = "whsec_test_destination"


def hours_ago(hours: int) -> int:
    """The start of the hour `hours` whole hours before this one."""
    return (int(time.time()) // HOUR - hours) * HOUR


def create_meter(fake: FakeStripe) -> str:
    sdk = stripe.StripeClient(
        FAKE_API_KEY,
        base_addresses={"api": fake.url},
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
    )
    meter = sdk.v1.billing.meters.create(
        {"display_name": "Ringside spend", "event_name": "ringside_spend", "default_aggregation": {"formula": "sum"}}
    )
    return meter.id


class Destination(ThreadedFake):
    """Stripe's event destination: keeps what Stripe POSTs (headers, raw body)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict[str, str], bytes]] = []

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        self.received.append((headers, body))
        return Reply(200, {})


@dataclass
class Loop:
    """A memory ledger dispatched to the fake Stripe through `sink`, and Stripe's side read back."""

    fake: FakeStripe
    ledger: MemoryLedger
    sink: BillingSink
    reports: StripeReports
    totals: StripeMeterTotals
    handler: ReportHandler
    clock: SystemClock

    async def dispatch_all(self) -> None:
        config = DispatchConfig(batch=200, concurrency=16, max_rps=1_000_000)
        dispatcher = Dispatcher(self.ledger, self.sink, self.clock, config, jitter=lambda: 0.0)
        while await dispatcher.run_once():
            pass

    def notifications(self, destination: Destination) -> list[Notification]:
        """What the webhook endpoint would hand the handler: each delivery, verified."""
        verifier = StripeNotificationVerifier([DESTINATION_SECRET])
        return [verifier.verify(body, headers.get("stripe-signature")) for headers, body in destination.received]


@asynccontextmanager
async def stripe_loop(fake: FakeStripe, *, stream: bool) -> AsyncIterator[Loop]:
    sink: BillingSink = (
        StripeStreamBillingSink(FAKE_API_KEY, api_base=fake.url, timeout_s=5.0)
        if stream
        else StripeBillingSink(FAKE_API_KEY, api_base=fake.url, timeout_s=5.0)
    )
    reports = StripeReports(FAKE_API_KEY, api_base=fake.url, timeout_s=5.0)
    totals = StripeMeterTotals(FAKE_API_KEY, api_base=fake.url, timeout_s=5.0)
    ledger = MemoryLedger()
    clock = SystemClock()
    handler = ReportHandler(ledger, reports, clock, meter_identifier)
    try:
        yield Loop(fake, ledger, sink, reports, totals, handler, clock)
    finally:
        await sink.close()
        await reports.close()
        await totals.close()
