"""CPU per v2 meter-event-stream call: the gateway's sink (through the Stripe SDK) against a plain httpx POST.

    STRIPE_OPENAPI_DIR=... .venv/bin/python -m bench.stream_call [--calls 200] [--events 100]

Both send the same `--events` events per request, one request after another, to the fake Stripe in its own process
with no latency, on uvloop as `gateway serve` runs; the figure is this process's CPU time (time.process_time) per
call and per event, so that it measures what the dispatcher's event loop spends and not how fast the fake answers.
The plain POST encodes the body with msgspec and posts it with the session's token: what the stream call costs
without the SDK's own request building.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import httpx
import msgspec

from bench.dispatch import FakeStripeProcess
from bench.load import install_fast_loop
from gateway.adapters.stripe.stream import StripeStreamBillingSink
from gateway.domain.ports import MeterEvent
from tests.fakes.stripe_server import FAKE_API_KEY


def events(count: int, call: int) -> list[MeterEvent]:
    now = int(time.time())
    return [
        MeterEvent(identifier=f"evt_call_{call:06d}_{n:03d}", customer=f"cus_bench_{n}", value=n + 1, timestamp=now)
        for n in range(count)
    ]


async def through_sdk(url: str, calls: int, count: int) -> float:
    sink = StripeStreamBillingSink(FAKE_API_KEY, api_base=url)
    try:
        await sink.send_batch(events(count, 0))  # the session, outside the measure
        started = time.process_time()
        for call in range(1, calls + 1):
            await sink.send_batch(events(count, call))
        return time.process_time() - started
    finally:
        await sink.close()


def wire(event: MeterEvent) -> dict[str, object]:
    return {
        "event_name": "ringside_usage",
        "identifier": event.identifier,
        "payload": {"stripe_customer_id": event.customer, "value": str(event.value)},
        "timestamp": datetime.fromtimestamp(event.timestamp, UTC).isoformat().replace("+00:00", "Z"),
    }


async def plain_post(url: str, calls: int, count: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        session = await client.post(
            "/v2/billing/meter_event_session", headers={"Authorization": f"Bearer {FAKE_API_KEY}"}
        )
        session.raise_for_status()
        headers = {
            "Authorization": f"Bearer {session.json()['authentication_token']}",
            "Content-Type": "application/json",
            "Stripe-Version": "2025-03-31.basil",
        }
        started = time.process_time()
        for call in range(1, calls + 1):
            body = msgspec.json.encode({"events": [wire(event) for event in events(count, 100_000 + call)]})
            answer = await client.post("/v2/billing/meter_event_stream", content=body, headers=headers)
            answer.raise_for_status()
        return time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args(argv)
    install_fast_loop()
    fake = FakeStripeProcess(0.0)
    try:
        for name, way in (("Stripe SDK (the gateway's sink)", through_sdk), ("plain httpx POST, msgspec", plain_post)):
            cpu_s = asyncio.run(way(fake.url, args.calls, args.events))
            print(
                f"{name}: {cpu_s / args.calls * 1e3:.2f} ms CPU per call of {args.events} events, "
                f"{cpu_s / args.calls / args.events * 1e6:.1f} us per event"
            )
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
