"""The Litestar app: the webhook endpoint, health checks, and one place that maps errors to HTTP.

`@inject` does not reach into Litestar handlers, so each port is bridged with a small provider function registered
in `dependencies=` that asks the container (STYLE.md). The container is the app's only source of objects.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import SkipValidation
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from gateway.app.container import Container
from gateway.domain.errors import GatewayError, PayloadTooLarge, SignatureError, StoreUnavailable
from gateway.domain.ports import DedupeStore
from gateway.domain.signature import HEADER
from gateway.service.ingest import Ingest, Outcome, Status

log = structlog.get_logger("gateway.http")

# Ports are Protocols, which Litestar cannot isinstance-check: inject them by name and skip validation.
IngestDependency: TypeAlias = NamedDependency[SkipValidation[Ingest]]
LedgerDependency: TypeAlias = NamedDependency[SkipValidation[DedupeStore]]

STORE_RETRY_AFTER_S = 5
_STATUS_OF: dict[type[GatewayError], int] = {
    SignatureError: 401,
    PayloadTooLarge: 413,
    StoreUnavailable: 503,
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _gateway_error(request: Request[Any, Any, State], exc: GatewayError) -> Response[Any]:
    status = next((code for kind, code in _STATUS_OF.items() if isinstance(exc, kind)), 400)
    headers = {"Retry-After": str(STORE_RETRY_AFTER_S)} if isinstance(exc, StoreUnavailable) else None
    return Response(error_body(exc.code, exc.message), status_code=status, headers=headers)


def _http_error(request: Request[Any, Any, State], exc: HTTPException) -> Response[Any]:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return Response(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def _unexpected(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    log.exception("http.unexpected_error", path=request.url.path)
    return Response(
        error_body("internal_error", "unexpected error; nothing was acknowledged"),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


_RESPONSE_STATUS = {Status.PARKED: 202}


@post("/webhooks/ringside", status_code=200)
async def ringside_webhook(request: Request[Any, Any, State], ingest: IngestDependency) -> Response[dict[str, Any]]:
    """Verify, record, acknowledge (CONTRACT 1). The body is read as raw bytes and verified before anything else."""
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            try:
                body = await request.body()
            except HTTPException as exc:
                if exc.status_code == 413:
                    raise PayloadTooLarge() from None
                raise
            outcome = await ingest.deliver(request.headers.get(HEADER), body)
        except GatewayError as exc:
            log.warning("webhook.refused", outcome=exc.code, latency_ms=_ms(started))
            raise
        _log_delivery(outcome, started)
    return Response(_response_body(outcome), status_code=_RESPONSE_STATUS.get(outcome.status, 200))


def _response_body(outcome: Outcome) -> dict[str, Any]:
    body: dict[str, Any] = {"status": outcome.status.value, "event_id": outcome.event_id}
    if outcome.status is Status.ACCEPTED:
        body["units"] = outcome.units
    elif outcome.status is Status.PARKED:
        body["reason"] = outcome.reason.value if outcome.reason else None
        body["message"] = outcome.message
    return body


def _log_delivery(outcome: Outcome, started: float) -> None:
    log.info(
        "webhook.delivery",
        event_id=outcome.event_id,
        type=outcome.event_type,
        customer=outcome.customer,
        outcome=outcome.status.value,
        units=outcome.units,
        reason=outcome.reason.value if outcome.reason else None,
        latency_ms=_ms(started),
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz")
async def readyz(ledger: LedgerDependency, state: State) -> Response[dict[str, Any]]:
    """Ready when the ledger can be written. The biller's state is reported but does not fail readiness."""
    checks: dict[str, Any] = {"biller": state.biller_name}
    try:
        await ledger.ping()
        checks["store"] = "ok"
        status = 200
    except StoreUnavailable as exc:
        checks["store"] = f"unavailable: {exc.message}"
        status = 503
    return Response({"status": "ready" if status == 200 else "not_ready", "checks": checks}, status_code=status)


def create_app(container: Container, *, run_dispatcher: bool = True) -> Litestar:
    """Build the app around a container; the lifespan runs the dispatcher and closes what the container opened."""
    settings = container.settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        dispatcher = container.dispatcher()
        task = asyncio.create_task(dispatcher.run(), name="dispatcher") if run_dispatcher else None
        try:
            yield
        finally:
            dispatcher.stop()
            if task is not None:
                try:
                    await asyncio.wait_for(task, timeout=15)
                except TimeoutError:
                    log.warning("dispatcher.stop_timeout")
            await close_container(container)

    async def provide_ingest() -> Ingest:
        return container.ingest()

    async def provide_ledger() -> DedupeStore:
        return container.ledger()  # type: ignore[no-any-return]

    return Litestar(
        route_handlers=[ringside_webhook, healthz, readyz],
        dependencies={"ingest": Provide(provide_ingest), "ledger": Provide(provide_ledger)},
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        request_max_body_size=settings.max_body_bytes,
        lifespan=[lifespan],
        state=State({"biller_name": container.billing_sink().name}),
        openapi_config=None,
    )


async def close_container(container: Container) -> None:
    """Close the biller's client, then the resources (databases, pools) the container opened."""
    await container.billing_sink().close()
    container.shutdown_resources()
