"""The one lifecycle of a container's resources: what opens them and, in one order, what closes them.

The Litestar lifespan, `gateway worker`, every command that touches a store, `gateway demo` and the benchmarks all
hold their container inside `running(...)`, so none of them keeps a close sequence of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.app.container import Container, check_store, close_biller_readers, close_store_clients
from gateway.app.log_handler import flush_logs


@asynccontextmanager
async def running(container: Container, *, checked: bool = False) -> AsyncIterator[Container]:
    """The container, its resources closed when the block ends, however it ends.

    `checked` runs the store's start-up checks first (warnings, and RedisNotDurable for a Redis that could lose
    acknowledged events unless allowed), as a long-running process does; a one-shot
    command skips them so that its output stays its own.
    """
    try:
        if checked:
            await check_store(container)
        yield container
    finally:
        try:
            await _close(container)
        finally:
            flush_logs()  # the lines of a process that ends here are written before it does


async def _close(container: Container) -> None:
    """The biller's clients, then the store's clients, then the resources (databases, pools) the container opened."""
    await container.billing_sink().close()
    await container.billing_portal().close()
    await close_biller_readers(container)
    await close_store_clients(container)
    container.shutdown_resources()
