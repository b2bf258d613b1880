"""The meter event calls as plain HTTP: one aiohttp POST each, without the SDK's request building.

At delivery rates the SDK is the dispatcher's largest cost: ~1.4 ms of CPU per call through its httpx transport,
and httpx's pool degrades past a few dozen connections (15 ms of CPU per call with 100 in flight), where v1 at
Stripe's live latency keeps ~190 in flight. A plain aiohttp POST costs ~0.4 ms (docs/performance.md, "v1").

Invariants, as through the SDK:
- Every call carries a fresh `Idempotency-Key`, the SDK's `Stripe-Version`, the key (or the v2 session's token) as
  its bearer credentials, and is never retried here (the dispatcher retries).
- A non-2xx answer becomes the `stripe.StripeError` the SDK raises for it (class by status and error type, message,
  code, headers), so that gateway/adapters/stripe/errors.py maps both paths alike; a transport failure becomes
  `stripe.APIConnectionError`. Nothing named `aiohttp.*` leaves this module.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import stripe

# The SDK's defaults when STRIPE_API_BASE does not point both hosts elsewhere.
API_HOST = "https://api.stripe.com"
METER_EVENTS_HOST = "https://meter-events.stripe.com"


class StripeWire:
    """POSTs to Stripe on one aiohttp connection pool, opened on first use (inside the running event loop)."""

    def __init__(self, *, api_base: str | None, meter_events_base: str | None = None) -> None:
        self.api_base = (api_base or API_HOST).rstrip("/")
        self.meter_events_base = (meter_events_base or api_base or METER_EVENTS_HOST).rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post_form(self, url: str, key: str, fields: Mapping[str, str]) -> Any:
        """A v1 call (form-encoded); Stripe's JSON answer, or raise the SDK's error for it."""
        return await self._post(url, key, "application/x-www-form-urlencoded", urlencode(fields).encode())

    async def post_json(self, url: str, key: str, body: bytes) -> Any:
        """A v2 call (a JSON body); Stripe's JSON answer, or raise the SDK's error for it."""
        return await self._post(url, key, "application/json", body)

    async def _post(self, url: str, key: str, content_type: str, body: Any) -> Any:
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": content_type,
            "Stripe-Version": stripe.api_version,
            "Idempotency-Key": str(uuid.uuid4()),
        }
        try:
            async with self._pool().post(url, data=body, headers=headers) as response:
                raw = await response.read()
                status, answer_headers = response.status, response.headers
        except aiohttp.ClientError as exc:
            raise stripe.APIConnectionError(f"cannot reach Stripe: {type(exc).__name__}") from exc  # type: ignore[no-untyped-call]
        if 200 <= status < 300:
            return _json(raw)
        raise api_error(status, raw, answer_headers)

    def _pool(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is not loop:
            self._drop()  # a pool serves the loop that opened it only (tests drive one sink from two loops)
        if self._session is None:
            # No limit on connections: the dispatcher bounds the calls in flight.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
            self._session = None
        self._drop()

    def _drop(self) -> None:
        """Let go of a pool opened on another event loop: closed there if that loop still runs."""
        session, loop, self._session, self._loop = self._session, self._loop, None, None
        if session is None or loop is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(session.close(), loop)
        else:
            session.detach()


def api_error(status: int, raw: bytes, headers: Mapping[str, str]) -> stripe.StripeError:
    """The error the SDK raises for a non-2xx answer: its class chosen by status and Stripe's error type."""
    answer = _json(raw)
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or f"Stripe answered {status}")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    kwargs: dict[str, Any] = {
        "http_body": raw.decode("utf-8", "replace"),
        "http_status": status,
        "json_body": answer if isinstance(answer, dict) else None,
        "headers": dict(headers.items()),  # errors.header() looks names up case-insensitively
        "code": code,
    }
    if status == 429:
        return stripe.RateLimitError(message, **kwargs)
    if error.get("type") == "idempotency_error":
        return stripe.IdempotencyError(message, **kwargs)
    if status == 401:
        return stripe.AuthenticationError(message, **kwargs)
    if status == 403:
        return stripe.PermissionError(message, **kwargs)
    if status in (400, 404):
        return stripe.InvalidRequestError(message, error.get("param"), **kwargs)  # type: ignore[no-untyped-call]
    return stripe.APIError(message, **kwargs)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}
