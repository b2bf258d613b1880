"""End to end: 200 slow or hostile clients hold connections to a real `gateway serve`; everyone else is still served.

Half of them send a valid signature header and then dribble their body a few bytes at a time (they are held until
GATEWAY_BODY_TIMEOUT_S, then answered 408); the other half send no signature and claim a 1 MB body (answered 401
at once, before any of it is sent). Meanwhile `/healthz` and signed deliveries must be answered promptly.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from gateway.domain.signature import sign
from tests.builders import SECRET, encode, event
from tests.e2e.process import GatewayProcess

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 200
BODY_TIMEOUT_S = 4
PROMPT_S = 1.0  # what "promptly" means here, on a shared 2-core machine


async def _open(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader, timeout_s: float) -> int:
    line = await asyncio.wait_for(reader.readline(), timeout=timeout_s)
    return int(line.split()[1])


async def _dribble(writer: asyncio.StreamWriter, body: bytes, stop: asyncio.Event) -> None:
    """A byte of the body every 200 ms, never all of it."""
    for byte in body[:-1]:
        if stop.is_set() or writer.is_closing():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0.2)


async def test_health_and_signed_deliveries_are_answered_while_200_slow_clients_hold_connections(
    tmp_path: Path,
) -> None:
    env = {
        "RINGSIDE_WEBHOOK_SECRETS": SECRET,
        "GATEWAY_STORE": f"sqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
    stop = asyncio.Event()
    try:
        slow_body = encode(event("evt_SLOW", padding="x" * 200))
        signed_head = (
            b"POST /webhooks/ringside HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            + f"X-FC-Signature: {sign(slow_body, SECRET, int(time.time()))}\r\n".encode()
            + f"Content-Length: {len(slow_body)}\r\n\r\n".encode()
        )
        unsigned_head = b"POST /webhooks/ringside HTTP/1.1\r\nHost: gateway\r\nContent-Length: 1000000\r\n\r\n"
        dribblers = [await _open(gateway.port, signed_head) for _ in range(SLOW_CLIENTS // 2)]
        unsigned = [await _open(gateway.port, unsigned_head) for _ in range(SLOW_CLIENTS // 2)]
        dribbling = [asyncio.create_task(_dribble(writer, slow_body, stop)) for _, writer in dribblers]
        held_since = time.monotonic()

        # The unsigned ones are refused at once, with nothing of their body sent.
        unsigned_statuses = [await _status(reader, PROMPT_S) for reader, _ in unsigned]

        # While the dribblers hold their requests open, everyone else is served promptly.
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=gateway.url, timeout=PROMPT_S * 5) as client:
            for n in range(10):
                started = time.monotonic()
                health = await client.get("/healthz")
                body = encode(event(f"evt_PROMPT_{n}"))
                headers = {"X-FC-Signature": sign(body, SECRET, int(time.time())), "Content-Type": "application/json"}
                delivery = await client.post("/webhooks/ringside", content=body, headers=headers)
                latencies.append(time.monotonic() - started)
                assert health.status_code == 200
                assert delivery.status_code == 200 and delivery.json()["status"] == "accepted", delivery.text
                await asyncio.sleep(0.1)
        served_while_held = time.monotonic() - held_since < BODY_TIMEOUT_S

        # The dribblers are cut off at the body deadline.
        dribbler_statuses = [await _status(reader, BODY_TIMEOUT_S + 5) for reader, _ in dribblers]
    finally:
        stop.set()
        gateway.terminate()

    assert unsigned_statuses == [401] * (SLOW_CLIENTS // 2)
    assert served_while_held, "the prompt requests were not all served while the slow clients held on"
    assert max(latencies) < PROMPT_S, latencies
    assert dribbler_statuses == [408] * (SLOW_CLIENTS // 2)
    await asyncio.gather(*dribbling)
    for _, writer in dribblers + unsigned:
        writer.close()
