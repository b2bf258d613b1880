"""What one HTTP client can hold of the server: the size of a request's head and the connections in flight.

The app is served by uvicorn in this event loop with `gateway serve`'s own options (gateway.app.server), and spoken
to over raw sockets, since an HTTP client library would refuse to send what these tests send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from dependency_injector import providers

from gateway.adapters.clock import FrozenClock
from gateway.app.container import build_container
from gateway.app.server import create_app, server_config, server_limits, serving
from tests.builders import encode, event, settings, signed_headers
from tests.e2e.process import free_port


@contextlib.asynccontextmanager
async def gateway(clock: FrozenClock, **overrides: Any) -> AsyncIterator[int]:
    configured = settings(**overrides)
    container = build_container(configured)
    container.clock.override(providers.Object(clock))
    port = free_port()
    config = server_config(
        create_app(container, run_dispatcher=False), host="127.0.0.1", port=port, **server_limits(configured)
    )
    async with serving(config, start_timeout_s=10):
        yield port


async def _exchange(port: int, request: bytes) -> bytes:
    """Send `request` and read until the server closes or answers one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(reader.readexactly(length), timeout=5)
    finally:
        writer.close()


async def test_refuses_431_and_closes_when_the_headers_exceed_the_limit(clock: FrozenClock) -> None:
    async with gateway(clock, max_header_bytes=16_384) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A header that never ends: without a limit the server waits for its end, keeping all of it. (Only a
        # little past the limit: bytes the server never reads would make its close a reset, losing the answer.)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Padding: ")
        for _ in range(17):
            writer.write(b"a" * 1024)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)  # read() to EOF: the server closed
        writer.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in head.lower()
    assert msgspec.json.decode(body)["error"]["code"] == "headers_too_large"


async def test_serves_headers_under_the_limit(clock: FrozenClock) -> None:
    async with gateway(clock, max_header_bytes=16_384) as port:
        answer = await _exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Padding: " + b"a" * 12_000 + b"\r\n\r\n"
        )

    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_answers_503_beyond_the_connection_limit_and_serves_again_once_they_leave(clock: FrozenClock) -> None:
    raw = encode(event("evt_HELD"))
    head = b"".join(
        f"{name}: {value}\r\n".encode() for name, value in signed_headers(raw, timestamp=int(clock.now())).items()
    )
    request_head = b"POST /webhooks/ringside HTTP/1.1\r\nHost: gateway\r\n" + head
    async with gateway(clock, max_connections=5, body_timeout_s=30) as port:
        held = []
        for _ in range(5):  # each sends its headers and half its body, and holds its request open
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_head + b"content-length: %d\r\n\r\n" % len(raw) + raw[:10])
            await writer.drain()
            held.append((reader, writer))
        await asyncio.sleep(0.2)

        refused = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        served = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")

    assert refused.startswith(b"HTTP/1.1 503 ")
    assert served.startswith(b"HTTP/1.1 200 ")
