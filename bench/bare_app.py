"""The baseline: a bare Litestar endpoint that only verifies the HMAC, served exactly as `gateway serve` serves.

    RINGSIDE_WEBHOOK_SECRETS=... python -m bench.bare_app --port 8001 [--workers 2]

The gateway's pipeline overhead is quoted as a ratio to this endpoint's throughput, so the HTTP server, the event
loop, the framework's routing and the signature check (the same `SignatureVerifier`) cancel out and what remains is
the gateway's own work: parsing, policy, the ledger write, logging, the dispatcher. Invariant: the uvicorn options
are `gateway serve`'s own (`gateway.app.server.UVICORN_OPTIONS`), the app is built by a factory in each worker as
`gateway serve --workers N` does, and nothing here reads or stores the body beyond the signature check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, asgi, get, post
from litestar.datastructures import State
from litestar.types import HTTPScope, Receive, Send

from gateway.app.server import UVICORN_OPTIONS
from gateway.domain.errors import SignatureError
from gateway.domain.signature import HEADER, SignatureVerifier


def _verifier() -> SignatureVerifier:
    return SignatureVerifier(
        [s.strip() for s in os.environ.get("RINGSIDE_WEBHOOK_SECRETS", "").split(",") if s.strip()]
    )


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    """An app factory (uvicorn `factory=True`), so that several workers can each build their own."""
    verifier = _verifier()

    @post("/webhooks/ringside", status_code=200)
    async def webhook(request: Request[Any, Any, State]) -> Response[dict[str, Any]]:
        body = await request.body()
        try:
            verifier.verify(request.headers.get(HEADER), body, time.time())
        except SignatureError as exc:
            return Response({"error": {"code": exc.code, "message": exc.message}}, status_code=401)
        return Response({"status": "accepted"})

    return Litestar(route_handlers=[webhook, healthz], request_max_body_size=1_048_576, openapi_config=None)


_ACCEPTED = b'{"status":"accepted"}'
_SIGNATURE = HEADER.lower().encode("latin-1")


def create_asgi_app() -> Litestar:
    """The same endpoint as a raw ASGI route (`@asgi`), as the gateway's webhook route is (gateway/app/webhook.py):
    the baseline that shows what the gateway's own pipeline costs, with Litestar's request and response machinery
    out of both. Reads the body whole, verifies, answers pre-encoded JSON, as that route does."""
    verifier = _verifier()

    @asgi("/webhooks/ringside", copy_scope=False)
    async def webhook(scope: HTTPScope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message["body"])
            if not message.get("more_body"):
                break
        signature = next((value.decode("latin-1") for key, value in scope["headers"] if key == _SIGNATURE), None)
        try:
            verifier.verify(signature, b"".join(chunks), time.time())
            status, body = 200, _ACCEPTED
        except SignatureError as exc:
            status, body = 401, json.dumps({"error": {"code": exc.code, "message": exc.message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return Litestar(route_handlers=[webhook, healthz], openapi_config=None)


def granian_argv(factory: str, host: str, port: int, workers: int) -> list[str]:
    """Granian (a Rust HTTP server, pip package `granian`) serving an ASGI app factory as uvicorn does here: uvloop,
    HTTP/1.1, lifespan on (granian runs it for the ASGI interface), no access log."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
        factory,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--raw-asgi", action="store_true", help="the endpoint as a raw ASGI route (create_asgi_app)")
    parser.add_argument(
        "--server", choices=("uvicorn", "granian"), default="uvicorn", help="the HTTP server [uvicorn, as the gateway]"
    )
    args = parser.parse_args()
    factory = f"bench.bare_app:{'create_asgi_app' if args.raw_asgi else 'create_app'}"
    if args.server == "granian":
        os.execv(sys.executable, granian_argv(factory, args.host, args.port, args.workers))
    # A factory even for one worker, so that one and two workers build the app the same way.
    uvicorn.run(
        factory,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    main()
