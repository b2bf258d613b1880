"""The app's own routes (health checks) and the one place that maps errors to HTTP; gateway.app.server assembles
them with the webhook, the portal and the metrics into the Litestar app.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec
import structlog
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import SkipValidation
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from gateway.app.errors import error_body, headers_of, status_of, unexpected_error_body
from gateway.app.openapi import READY_RESPONSES, Health, Readiness
from gateway.domain.errors import GatewayError, StoreUnavailable
from gateway.domain.ports import Ledger, StoreDurability

log = structlog.get_logger("gateway.http")

# Ports are Protocols, which Litestar cannot isinstance-check: inject them by name and skip validation.
LedgerDependency: TypeAlias = NamedDependency[SkipValidation[Ledger]]
DurabilityDependency: TypeAlias = NamedDependency[SkipValidation[StoreDurability | None]]

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


def _gateway_error(request: Request[Any, Any, State], exc: GatewayError) -> Response[Any]:
    return Response(error_body(exc.code, exc.message), status_code=status_of(exc), headers=headers_of(exc))


def _http_error(request: Request[Any, Any, State], exc: HTTPException) -> Response[Any]:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return Response(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def _unexpected(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    log.exception("http.unexpected_error", path=request.url.path)
    return Response(
        unexpected_error_body(),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


def exception_handlers() -> ExceptionHandlersMap:
    """Gateway errors as their own status and code, HTTP errors with a code of their own, anything else a 500."""
    return {GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected}


@get("/healthz", tags=["operations"], summary="Liveness", cache=False)
async def healthz() -> Health:
    """The process is alive and answering."""
    return Health(status="ok")


@get("/readyz", tags=["operations"], summary="Readiness", responses=READY_RESPONSES, cache=False)
async def readyz(ledger: LedgerDependency, durability: DurabilityDependency, state: State) -> Response[Readiness]:
    """Ready when the ledger can be written and the store keeps what it acknowledges (a Redis restarted without
    persistence is not ready). The biller's state is reported but does not fail readiness: ingest goes on while
    Stripe is down, and entries wait in the ledger."""
    checks: dict[str, Any] = {"biller": state.biller_name, "biller_configured": state.biller_configured}
    try:
        await ledger.ping()
        problem = None if durability is None else await durability.problem()
        checks["store"] = "ok" if problem is None else f"not durable: {problem}"
        status = 200 if problem is None else 503
    except StoreUnavailable as exc:
        checks["store"] = f"unavailable: {exc.message}"
        status = 503
    readiness = {"status": "ready" if status == 200 else "not_ready", "checks": checks}
    return Response(msgspec.convert(readiness, Readiness), status_code=status)
