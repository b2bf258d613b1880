"""The HTTP server: the app factory, uvicorn's options, and the factories a uvicorn worker builds its app with.

`gateway serve` runs uvicorn with `UVICORN_OPTIONS`; with `--workers N` each worker imports `app_from_env` (or
`ingest_app_from_env`) from this module by name, so those names are part of how the gateway starts.

`@inject` does not reach into Litestar handlers (the route decorator keeps the unwrapped function), so each port is
bridged with a small provider function registered in `dependencies=` that asks the container. The container is
the app's only source of objects. The webhook is the exception in form, not in substance: it is the hot route, a
raw ASGI route built around the container's `ingest` provider (gateway.app.webhook), which says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
import uvicorn
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from gateway.app.background import background
from gateway.app.container import Container, build_container
from gateway.app.environment import load_settings
from gateway.app.http import exception_handlers, healthz, readyz
from gateway.app.lifecycle import running
from gateway.app.logging import configure_logging
from gateway.app.metrics import metrics_route
from gateway.app.openapi import document_webhook, openapi_config
from gateway.app.portal import portal_router
from gateway.app.protocol import HeadLimitedHttpToolsProtocol
from gateway.app.request_id import RequestIdMiddleware
from gateway.app.settings import Settings
from gateway.app.stripe_webhook import stripe_webhook_route
from gateway.app.webhook import served_first, webhook_route
from gateway.domain.ports import Ledger, StoreDurability

log = structlog.get_logger("gateway.http")

# How `gateway serve` runs uvicorn, in one place (`gateway demo` and bench/bare_app.py serve with the same options).
UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "lifespan": "on",
    "timeout_graceful_shutdown": 20,
    # httptools, as uvicorn would pick, with a cap on a request's head (gateway.app.protocol says why).
    "http": HeadLimitedHttpToolsProtocol,
}


def server_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn's options bounding what clients can hold: requests in flight and connections (beyond them a new
    request is answered 503), and the size of a request's head (431)."""
    return {"limit_concurrency": settings.max_connections, "h11_max_incomplete_event_size": settings.max_header_bytes}


class ServerDidNotStart(Exception):
    """An in-process server (`serving`) exited before it was listening; the message says why in one line."""


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
        async with running(container, checked=True), background_jobs(container, enabled=run_dispatcher):
            dispatcher = container.dispatcher()
            task = asyncio.create_task(dispatcher.run(), name="dispatcher") if run_dispatcher else None
            sweep = container.sweep() if run_dispatcher else None
            sweeping = asyncio.create_task(sweep.run(), name="sweep") if sweep is not None else None
            # What is built by now lives as long as the process: keep it out of the collector's full passes, whose
            # pauses were the p99 under load (docs/performance.md, "Component notes").
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

    async def provide_ledger() -> Ledger:
        return container.ledger()  # type: ignore[no-any-return]

    async def provide_durability() -> StoreDurability | None:
        return container.store_durability()  # type: ignore[no-any-return]

    webhook = webhook_route(container.ingest, settings.max_body_bytes, settings.body_timeout_s)
    app = Litestar(
        route_handlers=[
            webhook,
            stripe_webhook_route(container),
            healthz,
            readyz,
            metrics_route(container.metrics, container.sweep),
            portal_router(container),
        ],
        dependencies={"ledger": Provide(provide_ledger), "durability": Provide(provide_durability)},
        exception_handlers=exception_handlers(),
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


@asynccontextmanager
async def background_jobs(container: Container, *, enabled: bool) -> AsyncIterator[None]:
    """The periodic jobs (gateway.app.background) where the dispatcher runs; none in an ingest-only process."""
    if not enabled:
        yield
        return
    async with background(container):
        yield


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
    settings = load_settings(os.environ)
    configure_logging(settings.log_format, settings.log_level, flush_ms=settings.log_flush_ms)
    if UVICORN_OPTIONS["access_log"] is False:
        # A worker runs this factory after uvicorn has switched its access log off, and configure_logging adopts
        # uvicorn's loggers again: switch it off once more, as uvicorn does, or every request gets a second line.
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
    return create_app(build_container(settings), run_dispatcher=run_dispatcher)


def worker_factory(*, run_dispatcher: bool) -> str:
    """The import string each `gateway serve --workers N` worker builds its app from (uvicorn `factory=True`)."""
    return f"{__name__}:{'app_from_env' if run_dispatcher else 'ingest_app_from_env'}"


def server_config(app: Litestar, *, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for `app`: `UVICORN_OPTIONS`, with `overrides` on top."""
    return uvicorn.Config(app, host=host, port=port, **{**UVICORN_OPTIONS, **overrides})


@asynccontextmanager
async def serving(config: uvicorn.Config, *, start_timeout_s: float) -> AsyncIterator[uvicorn.Server]:
    """A server in this event loop, listening when the block starts and stopped (its lifespan ended) when it ends."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="gateway-server")
    try:
        async with asyncio.timeout(start_timeout_s):
            while not server.started:
                if task.done():
                    raise ServerDidNotStart(f"the gateway did not start: {task.exception() or 'it exited'}")
                await asyncio.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
