"""`POST /webhooks/ringside`: the hot route, as a raw ASGI route of the Litestar app.

Why raw ASGI rather than a `@post` handler taking a `Request`: every delivery is one request, and Litestar's
request/response machinery costs about twice the rest of an HMAC-only request (docs/performance.md, "The webhook
route"). The handler needs none of it: it reads raw bytes, one header, and answers JSON it has already
encoded. What Litestar would have done is done here, in one place:
- only POST is served: anything else gets 405 with `Allow: POST`;
- the body is capped at GATEWAY_MAX_BODY_BYTES: a declared Content-Length over it is refused before a byte is read,
  and a body that grows over it is refused as soon as it does (413, counted as refused);
- the signature header is screened before the body is read: missing, malformed or out of tolerance is refused (401)
  without waiting for a body that could not be accepted anyway;
- the body must arrive within GATEWAY_BODY_TIMEOUT_S (408), so a client dribbling it cannot hold a request forever;
- a refusal that leaves the body unread closes the connection (`Connection: close`), so the rest of that body is
  never read as the next request;
- a client that disconnects before its body has arrived is left alone: nothing was verified, nothing recorded;
- errors answer through gateway.app.errors, as Litestar's exception handlers do for the other routes, and an
  unexpected exception is logged and answered 500 ("nothing was acknowledged"), as `_unexpected` does.
The request id is still bound by RequestIdMiddleware, which wraps the whole app. OpenAPI cannot see an ASGI route,
so the operation is documented by gateway.app.openapi.document_webhook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from litestar import asgi
from litestar.enums import ScopeType
from litestar.handlers import ASGIRouteHandler
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from gateway.app.body_deadline import BodyDeadlines, Overdue
from gateway.app.errors import error_body, headers_of, status_of, unexpected_error_body
from gateway.app.logging import hot_line
from gateway.domain.errors import BodyTimeout, GatewayError, PayloadTooLarge
from gateway.domain.signature import HEADER
from gateway.service.ingest import Ingest, Outcome, Status

PATH = "/webhooks/ringside"
LOGGER = "gateway.http"
log = structlog.get_logger(LOGGER)

_SIGNATURE = HEADER.lower().encode("latin-1")
_CONTENT_LENGTH = b"content-length"
_JSON = msgspec.json.Encoder()
_JSON_TYPE = (b"content-type", b"application/json")
_RESPONSE_STATUS = {Status.PARKED: 202}
_CLOSE = (b"connection", b"close")


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def webhook_route(ingest_of: Callable[[], Ingest], max_body_bytes: int, body_timeout_s: float) -> ASGIRouteHandler:
    """The route around the container's Ingest (`ingest_of`: its Singleton provider, cheap to ask per request)."""
    return asgi(PATH, copy_scope=False)(webhook_app(ingest_of, max_body_bytes, body_timeout_s))


def served_first(webhook: ASGIRouteHandler, app: ASGIApp) -> ASGIApp:
    """`app` (Litestar's ASGI handler), with requests for exactly PATH handed to the webhook's function directly.

    Litestar's router would find the same function: this only skips the machinery on the way to it (its exception
    middleware, path normalisation, host check, route lookup and scope state; cost in docs/performance.md, "The
    webhook route"), which the webhook does not use (it answers its own errors). A path that
    differs in any way (a trailing slash, a root path) still goes through Litestar, to the same route or to a 404.
    """
    handler: ASGIApp = webhook.fn

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] == PATH:
            await handler(scope, receive, send)
        else:
            await app(scope, receive, send)

    return serve


def webhook_app(ingest_of: Callable[[], Ingest], max_body_bytes: int, body_timeout_s: float) -> ASGIApp:
    """The webhook as a bare ASGI function (see `webhook_route` and `served_first`)."""
    deadlines = BodyDeadlines(body_timeout_s)

    async def ringside_webhook(scope: HTTPScope, receive: Receive, send: Send) -> None:
        """Screen the header, read the body in time, verify, record, acknowledge. Nothing is trusted before the
        signature over the raw bytes is verified."""
        if scope["method"] != "POST":
            refusal = error_body("method_not_allowed", "Method Not Allowed")
            await _respond(send, 405, _JSON.encode(refusal), [(b"allow", b"POST")])
            return
        started = time.perf_counter()
        ingest = ingest_of()
        signature = _header(scope, _SIGNATURE)
        body: bytes | None = None
        try:
            try:
                _refuse_declared_oversize(scope, max_body_bytes)
                ingest.screen(signature)
                body = await _read_body_in_time(scope, receive, max_body_bytes, deadlines)
            except (PayloadTooLarge, BodyTimeout) as exc:
                ingest.refused(exc)
                raise
            outcome = await ingest.deliver(signature, body)
        except _Disconnected:
            return
        except GatewayError as exc:
            hot_line("warning", LOGGER, "webhook.refused", {"outcome": exc.code, "latency_ms": _ms(started)})
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers_of(exc) or {}).items()]
            if body is None:
                headers.append(_CLOSE)
            await _respond(send, status_of(exc), _JSON.encode(error_body(exc.code, exc.message)), headers)
            return
        except Exception:
            log.exception("http.unexpected_error", path=PATH)
            await _respond(send, 500, _JSON.encode(unexpected_error_body()))
            return
        _log_delivery(outcome, started)
        await _respond(send, _RESPONSE_STATUS.get(outcome.status, 200), _JSON.encode(_response_body(outcome)))

    return ringside_webhook  # type: ignore[return-value]  # an ASGI app for HTTP scopes


def _refuse_declared_oversize(scope: HTTPScope, limit: int) -> None:
    declared = _header(scope, _CONTENT_LENGTH)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge()


async def _read_body_in_time(scope: HTTPScope, receive: Receive, limit: int, deadlines: BodyDeadlines) -> bytes:
    try:
        return await deadlines.read(_read_body(scope, receive, limit))
    except Overdue:
        raise BodyTimeout(f"the request body did not arrive within {deadlines.timeout_s:g}s") from None


async def _read_body(scope: HTTPScope, receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise _Disconnected()
        chunk = message["body"]
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header(scope: HTTPScope, name: bytes) -> str | None:
    """The first value of header `name` (lower case, as ASGI servers deliver names), decoded as HTTP's latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    start: list[tuple[bytes, bytes]] = [_JSON_TYPE, (b"content-length", str(len(body)).encode("ascii"))]
    if headers:
        start.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _response_body(outcome: Outcome) -> dict[str, Any]:
    body: dict[str, Any] = {"status": outcome.status.value, "event_id": outcome.event_id}
    if outcome.status is Status.ACCEPTED:
        body["units"] = outcome.units
    elif outcome.status is Status.PARKED:
        body["reason"] = outcome.reason.value if outcome.reason else None
        body["message"] = outcome.message
    return body


def _log_delivery(outcome: Outcome, started: float) -> None:
    hot_line(
        "info",
        LOGGER,
        "webhook.delivery",
        {
            "event_id": outcome.event_id,
            "type": outcome.event_type,
            "customer": outcome.customer,
            "outcome": outcome.status.value,
            "units": outcome.units,
            "reason": outcome.reason.value if outcome.reason else None,
            "latency_ms": _ms(started),
        },
    )


def _ms(started: float) -> float:
    # Whole microseconds as milliseconds (1.234): a sixth of round(x, 3)'s cost, on every delivery's line.
    return int((time.perf_counter() - started) * 1_000_000) / 1000
