"""Ringside's customer API as the last step of customer mapping.

`RingsideCustomerLookup` wraps the customer store: a Ringside id the store does not know is looked up with
`GET /v1/customers/<id>` (bearer `RINGSIDE_API_KEY`); its `metadata.stripe_customer_id`, when present, is cached in
the store, so each customer costs Ringside one call, ever. A customer Ringside does not know, or one without that
metadata, resolves to None (the event is parked `unknown_customer`, replayable once a mapping exists) and is not
cached, so a mapping added on Ringside's side later is found by the next event.

Ringside being unreachable raises StoreUnavailable: the delivery gets a 503 and Ringside redelivers it later, which
heals by itself; parking it would need an operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import httpx
import msgspec

from gateway.domain.errors import StoreUnavailable
from gateway.domain.ports import CustomerStore

DEFAULT_TIMEOUT_S = 3.0


class _Metadata(msgspec.Struct):
    stripe_customer_id: object = None


class _Customer(msgspec.Struct):
    metadata: _Metadata | None = None


_decode_customer = msgspec.json.Decoder(_Customer).decode


class RingsideCustomerLookup(CustomerStore):
    """The customer store, with Ringside's customer API behind its misses. Writes go to the store only."""

    def __init__(
        self, store: CustomerStore, *, api_key: str, api_base: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._store = store
        self._client = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout_s,
        )

    async def get(self, ringside_id: str) -> str | None:
        known = await self._store.get(ringside_id)
        if known is not None:
            return known
        found = await self._fetch(ringside_id)
        if found is not None:
            await self._store.set(ringside_id, found)
        return found

    async def _fetch(self, ringside_id: str) -> str | None:
        try:
            response = await self._client.get(f"/v1/customers/{quote(ringside_id, safe='')}")
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"Ringside's customer API is unreachable: {type(exc).__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            # Transient, or an operator problem (a revoked key) that must not park every event: retry later.
            raise StoreUnavailable(f"Ringside's customer API answered {response.status_code}")
        if response.status_code != 200:
            return None
        try:
            customer = _decode_customer(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        candidate = customer.metadata.stripe_customer_id if customer.metadata else None
        return candidate if isinstance(candidate, str) and candidate else None

    async def set(self, ringside_id: str, billing_id: str) -> None:
        await self._store.set(ringside_id, billing_id)

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        await self._store.set_many(pairs)

    async def delete(self, ringside_id: str) -> bool:
        return await self._store.delete(ringside_id)

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]:
        return await self._store.list(limit)

    async def close(self) -> None:
        await self._client.aclose()
