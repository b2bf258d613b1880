"""The Litestar app: the webhook endpoint, health checks, and one place that maps errors to HTTP.

`@inject` does not reach into Litestar handlers, so each port is bridged with a small provider function registered
in `dependencies=` that asks the container (STYLE.md). The container is the app's only source of objects. The
webhook is the exception in form, not in substance: it is the hot route, a raw ASGI route built around the
container's `ingest` provider (gateway.app.webhook), which says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import msgspec
import structlog
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import SkipValidation
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from gateway.app.container import Container, check_store, close_store_clients
from gateway.app.errors import error_body, headers_of, status_of, unexpected_error_body
from gateway.app.metrics import metrics_route
from gateway.app.openapi import READY_RESPONSES, Health, Readiness, document_webhook, openapi_config
from gateway.app.portal import portal_router
from gateway.app.request_id import RequestIdMiddleware
from gateway.app.webhook import served_first, webhook_route
from gateway.domain.errors import GatewayError, StoreUnavailable
from gateway.domain.ports import Ledger

log = structlog.get_logger("gateway.http")

# Ports are Protocols, which Litestar cannot isinstance-check: inject them by name and skip validation.
LedgerDependency: TypeAlias = NamedDependency[SkipValidation[Ledger]]

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


@get("/healthz", tags=["operations"], summary="Liveness", cache=False)
async def healthz() -> Health:
    """The process is alive and answering."""
    return Health(status="ok")


@get("/readyz", tags=["operations"], summary="Readiness", responses=READY_RESPONSES, cache=False)
async def readyz(ledger: LedgerDependency, state: State) -> Response[Readiness]:
    """Ready when the ledger can be written. The biller's state is reported but does not fail readiness: ingest
    goes on while Stripe is down, and entries wait in the ledger (CONTRACT 4)."""
    checks: dict[str, Any] = {"biller": state.biller_name, "biller_configured": state.biller_configured}
    try:
        await ledger.ping()
        checks["store"] = "ok"
        status = 200
    except StoreUnavailable as exc:
        checks["store"] = f"unavailable: {exc.message}"
        status = 503
    readiness = {"status": "ready" if status == 200 else "not_ready", "checks": checks}
    return Response(msgspec.convert(readiness, Readiness), status_code=status)


def create_app(container: Container, *, run_dispatcher: bool = True) -> Litestar:
    """Build the app around a container; the lifespan runs the dispatcher and the sweep, and closes what the
    container opened.

    Shutdown (SIGTERM): uvicorn stops accepting and lets in-flight requests finish, then the lifespan ends: the
    sweep stops, the dispatcher finishes its calls in flight and releases the leases of entries it had not started
    (so a restarted or other gateway delivers them at once), then the clients and the store are closed.
    """
    settings = container.settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await check_store(container)
        dispatcher = container.dispatcher()
        task = asyncio.create_task(dispatcher.run(), name="dispatcher") if run_dispatcher else None
        sweep = container.sweep() if run_dispatcher else None
        sweeping = asyncio.create_task(sweep.run(), name="sweep") if sweep is not None else None
        # Everything built so far (modules, the app, the container, their clients) lives as long as the process:
        # out of the collector's sight from now on. A full collection walked those ~90,000 objects every few
        # seconds under load and paused the event loop ~40 ms each time, which was the p99 of the bench's runs.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # a process that builds apps again (the tests) keeps collecting the old ones
            if sweep is not None and sweeping is not None:
                sweep.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sweeping, timeout=5)
            dispatcher.stop()
            if task is not None:
                try:
                    await asyncio.wait_for(task, timeout=15)
                except TimeoutError:
                    log.warning("dispatcher.stop_timeout")
            await close_container(container)

    async def provide_ledger() -> Ledger:
        return container.ledger()  # type: ignore[no-any-return]

    webhook = webhook_route(container.ingest, settings.max_body_bytes)
    app = Litestar(
        route_handlers=[
            webhook,
            healthz,
            readyz,
            metrics_route(container.metrics, container.sweep),
            portal_router(container),
        ],
        dependencies={"ledger": Provide(provide_ledger)},
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        request_max_body_size=settings.max_body_bytes,
        lifespan=[lifespan],
        state=State(
            {"biller_name": container.billing_sink().name, "biller_configured": settings.biller_profile().remote}
        ),
        openapi_config=openapi_config(),
        # Logging is configured once for the process (gateway.app.logging); Litestar must not install its own.
        logging_config=None,
    )
    # Around Litestar's whole handler rather than in `middleware=`: route middleware does not run for requests that
    # match no route (404, 405), and those must carry a request id too.
    # The webhook, the hot route, is handed its requests before Litestar's router (served_first).
    app.asgi_handler = RequestIdMiddleware(served_first(webhook, app.asgi_handler))
    document_webhook(app.openapi_schema)
    return app


def app_from_env() -> Litestar:
    """The app of one `gateway serve --workers N` worker (uvicorn factory): settings from this process's environment.

    Each worker builds its own container (its own database handle or pool, its own dispatcher); `serve` has already
    validated the same environment before starting the workers.
    """
    return _app_from_environment(run_dispatcher=True)


def ingest_app_from_env() -> Litestar:
    """As app_from_env, without the in-process dispatcher (`gateway serve --workers N --no-dispatcher`)."""
    return _app_from_environment(run_dispatcher=False)


def _app_from_environment(*, run_dispatcher: bool) -> Litestar:
    import logging
    import os

    from gateway.app.cli import UVICORN_OPTIONS
    from gateway.app.container import build_container
    from gateway.app.logging import configure_logging
    from gateway.app.settings import load_settings

    settings = load_settings(os.environ)
    configure_logging(settings.log_format, settings.log_level)
    if UVICORN_OPTIONS["access_log"] is False:
        # A worker runs this factory after uvicorn has switched its access log off, and configure_logging adopts
        # uvicorn's loggers again: switch it off once more, as uvicorn does, or every request gets a second line.
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
    return create_app(build_container(settings), run_dispatcher=run_dispatcher)


async def close_container(container: Container) -> None:
    """Close the biller's clients, then the resources (databases, pools) the container opened."""
    await container.billing_sink().close()
    await container.billing_portal().close()
    await close_store_clients(container)
    container.shutdown_resources()
