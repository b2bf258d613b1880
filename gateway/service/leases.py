"""Keeping a dispatcher's leases alive while their work runs.

The store hands an entry (and, on the v1 path, its customer) to one dispatcher at a time (DeliveryQueue.lease_due),
but a lease has a deadline: a customer's queue that takes longer than `lease_s` (a slow biller, a long backlog)
would be handed to a second dispatcher while the first still sends. So while a round runs, its leases are renewed
every third of `lease_s`, and the round starts a call only while it still holds them with a third of `lease_s` to
spare: a renewal that fails (the store is down) or comes too late (the event loop stalled) ends the round's calls
instead of risking a second dispatcher on the same customer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType

from gateway.domain.errors import StoreUnavailable
from gateway.domain.ports import Clock, DeliveryQueue
from gateway.service.logs import EventLogger

log = EventLogger("gateway.dispatcher")


class LeaseKeeper:
    """Renews the leases of `event_ids` (taken at `leased_at` for `lease_s`) on a timer, inside `async with`.

    `holds()` says whether a call may start now. Entries already marked or released are dropped from the renewals
    by the store itself (renew leaves them alone and does not return them).
    """

    def __init__(
        self, queue: DeliveryQueue, clock: Clock, event_ids: Sequence[str], *, leased_at: float, lease_s: float
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._ids = list(event_ids)
        self._lease_s = lease_s
        self._margin_s = lease_s / 3
        self._held_until = leased_at + lease_s
        self._task: asyncio.Task[None] | None = None

    def holds(self) -> bool:
        """True while the leases are held with a third of `lease_s` to spare: time for a call to start and renew."""
        return self._clock.now() < self._held_until - self._margin_s

    async def __aenter__(self) -> LeaseKeeper:
        self._task = asyncio.create_task(self._renew_until_cancelled())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew_until_cancelled(self) -> None:
        while self._ids:
            await asyncio.sleep(self._margin_s)
            if not self.holds():
                # Too late to renew safely: the lease may run out (and be taken) while the renewal travels.
                log.warning("dispatcher.lease_lost", entries=len(self._ids), lease_s=self._lease_s)
                return
            now = self._clock.now()
            try:
                self._ids = await self._queue.renew(self._ids, now, self._lease_s)
            except StoreUnavailable as exc:
                log.warning("dispatcher.lease_renewal_failed", entries=len(self._ids), error=exc.message)
                continue
            except Exception:
                # holds() turns False by itself once the last renewal's lease is near its end.
                log.exception("dispatcher.lease_renewal_crashed", entries=len(self._ids))
                return
            self._held_until = now + self._lease_s
