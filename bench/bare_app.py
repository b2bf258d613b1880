"""The baseline: a bare Litestar endpoint that only verifies the HMAC, served exactly as `gateway serve` serves.

    RINGSIDE_WEBHOOK_SECRETS=... python -m bench.bare_app --port 8001 [--workers 2]

The gateway's pipeline overhead is quoted as a ratio to this endpoint's throughput, so the HTTP server, the event
loop, the framework's routing and the signature check (the same `SignatureVerifier`) cancel out and what remains is
the gateway's own work: parsing, policy, the ledger write, logging, the dispatcher. Invariant: the uvicorn options
are `gateway serve`'s own (`gateway.app.cli.UVICORN_OPTIONS`), the app is built by a factory in each worker as
`gateway serve --workers N` does, and nothing here
reads or stores the body beyond the signature check.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State

from gateway.app.cli import UVICORN_OPTIONS
from gateway.domain.errors import SignatureError
from gateway.domain.signature import HEADER, SignatureVerifier


def create_app() -> Litestar:
    """An app factory (uvicorn `factory=True`), so that several workers can each build their own."""
    secrets = [s.strip() for s in os.environ.get("RINGSIDE_WEBHOOK_SECRETS", "").split(",") if s.strip()]
    verifier = SignatureVerifier(secrets)

    @post("/webhooks/ringside", status_code=200)
    async def webhook(request: Request[Any, Any, State]) -> Response[dict[str, Any]]:
        body = await request.body()
        try:
            verifier.verify(request.headers.get(HEADER), body, time.time())
        except SignatureError as exc:
            return Response({"error": {"code": exc.code, "message": exc.message}}, status_code=401)
        return Response({"status": "accepted"})

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[webhook, healthz], request_max_body_size=1_048_576, openapi_config=None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # A factory even for one worker, so that one and two workers build the app the same way.
    uvicorn.run(
        "bench.bare_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    main()
