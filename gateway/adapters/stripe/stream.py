"""The Stripe biller over the v2 meter event stream: up to 100 meter events per request.

`POST /v2/billing/meter_event_session` (secret key, the `api` host) returns an authentication token valid for 15
minutes; `POST /v2/billing/meter_event_stream` (the `meter_events` host) takes `{"events": [...]}` with that token
as its bearer key, answers `{}` and validates asynchronously: an unknown customer is reported later as a
`v1.billing.meter.error_report_triggered` event, never in the response, and a known identifier is dropped silently.

Invariants:
- One session is shared by every call and refreshed before it expires (`refresh_margin_s` ahead of `expires_at`), by
  one call at a time: concurrent calls wait for the same new session instead of each creating one.
- A 401 from the stream (Stripe: `billing_meter_event_session_expired`, raised by the SDK as
  TemporarySessionExpiredError) refreshes the session and retries the same request once; a second 401 is a
  transient auth failure for the dispatcher to wait out, never a rejection of the events.
- A refused session (any 4xx but 409 and 429: a wrong, restricted or revoked key, another account) is the
  deployment's fault, not the events': BillerMisconfigured, so the dispatcher keeps every entry pending and pauses
  until a session is granted (never `biller_rejected`, which would park the whole backlog).
- The request is all or nothing: transient failures raise BillerUnavailable for the whole batch, and the
  identifiers make a retry of the batch harmless (the stream de-duplicates them for at least 24 hours).
- The SDK runs with `max_network_retries=0` and every call gets a fresh Idempotency-Key, as in the v1 adapter; errors
  are translated by gateway/adapters/stripe/errors.py, and nothing named `stripe.*` leaves this package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import stripe
from stripe.params.v2.billing import MeterEventStreamCreateParams, MeterEventStreamCreateParamsEvent

from gateway.adapters.clock import SystemClock
from gateway.adapters.stripe import errors
from gateway.adapters.stripe.errors import raise_stream_error
from gateway.adapters.stripe.meter import CUSTOMER_KEY, DEFAULT_EVENT_NAME, VALUE_KEY, meter_value
from gateway.adapters.stripe.rules import meter_identifier
from gateway.domain.errors import BillerMisconfigured
from gateway.domain.ports import BatchBillingSink, Clock, Delivery, MeterEvent

# "Supports up to 100 events per request" (v2 meter_event_stream, OpenAPI excerpt and SDK docstring).
MAX_STREAM_EVENTS = 100
# Refresh this long before the token's expiry: a request that starts just before it may arrive just after it.
DEFAULT_REFRESH_MARGIN_S = 60.0


class _Session(msgspec.Struct, frozen=True):
    client: stripe.StripeClient  # built with the session's token as its key, so it calls the stream as the session
    expires_at: float


class _SessionRefused(Exception):
    """The stream answered 401: the session's token expired or was revoked. Never leaves this module."""

    def __init__(self, error: stripe.StripeError) -> None:
        super().__init__(str(error))
        self.error = error


class StripeStreamBillingSink(BatchBillingSink):
    """Sends MeterEvents to Stripe's v2 meter event stream, up to `max_batch` per request.

    `send_batch` returns SENT for every event (the stream answers `{}` and reports problems asynchronously) or raises
    for the whole batch, per the BatchBillingSink port. Building one is cheap and does no I/O; the first send creates
    the session. `close` releases the HTTP connection pool shared by the session and the stream calls.
    """

    name = "stripe_stream"
    max_batch = MAX_STREAM_EVENTS

    def __init__(
        self,
        api_key: str,
        *,
        event_name: str = DEFAULT_EVENT_NAME,
        api_base: str | None = None,
        timeout_s: float = 10.0,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        clock: Clock | None = None,
    ) -> None:
        self._event_name = event_name
        self._timeout_s = timeout_s
        self._refresh_margin_s = refresh_margin_s
        self._clock = clock or SystemClock()
        # STRIPE_API_BASE points both hosts at a local server; the stream itself lives on "meter_events".
        self._api_base = api_base
        # One httpx client (connection pools per host) for the session calls and the stream calls.
        self._http = stripe.HTTPXClient(timeout=timeout_s)
        self._client = self._new_client(api_key)
        self._session: _Session | None = None
        self._refreshing: asyncio.Lock | None = None
        # Session attempts finished so far, and the refusal of the last one (None when it did not end in a refusal).
        self._settled = 0
        self._refusal: BillerMisconfigured | None = None

    def _new_client(self, key: str) -> stripe.StripeClient:
        # The SDK's own retries would reuse one Idempotency-Key and stack under the dispatcher's.
        return stripe.StripeClient(
            key,
            base_addresses={"api": self._api_base, "meter_events": self._api_base} if self._api_base else None,
            max_network_retries=0,
            http_client=self._http,
        )

    async def send(self, event: MeterEvent) -> Delivery:
        return (await self.send_batch([event]))[0]

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record `events` (1 to 100) in one stream request; SENT for each, or an error for them all."""
        if not 1 <= len(events) <= self.max_batch:
            raise ValueError(f"a stream request carries 1 to {self.max_batch} events, not {len(events)}")
        body: MeterEventStreamCreateParams = {"events": [self._wire(event) for event in events]}
        session = await self._current_session()
        try:
            await self._post(session, body)
        except _SessionRefused:
            # The token expired (or was revoked) under us: one new session and one more try.
            session = await self._current_session(stale=session)
            try:
                await self._post(session, body)
            except _SessionRefused as again:
                raise_stream_error(again.error)  # a 401 again: an auth problem to wait out (cause "auth")
        return [Delivery.SENT] * len(events)

    def _wire(self, event: MeterEvent) -> MeterEventStreamCreateParamsEvent:
        # An invalid value refuses the whole request; the dispatcher then isolates this event and parks it alone.
        value = meter_value(event)
        return {
            "event_name": self._event_name,
            "identifier": meter_identifier(event.identifier),
            "payload": {CUSTOMER_KEY: event.customer, VALUE_KEY: value},
            # v2 takes RFC 3339 date-times where v1 took unix seconds.
            "timestamp": datetime.fromtimestamp(event.timestamp, UTC).isoformat().replace("+00:00", "Z"),
        }

    async def _post(self, session: _Session, body: MeterEventStreamCreateParams) -> None:
        """One stream request. Raises _SessionRefused on a 401, a Biller* error on anything else that fails."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await session.client.v2.billing.meter_event_stream.create_async(body)
        except stripe.StripeError as exc:
            if exc.http_status == 401:
                raise _SessionRefused(exc) from exc
            raise_stream_error(exc)
        except TimeoutError as exc:
            raise errors.timed_out(self._timeout_s) from exc
        except Exception as exc:  # the boundary: whatever else goes wrong, keep the entries and retry later
            raise errors.unexpected(exc) from exc

    async def _current_session(self, *, stale: _Session | None = None) -> _Session:
        """The live session, created or refreshed first when it is missing, about to expire, or `stale`."""
        if self._fresh(self._session, stale):
            assert self._session is not None
            return self._session
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        settled = self._settled
        async with self._refreshing:
            # Another call may have refreshed it while this one waited for the lock.
            if self._fresh(self._session, stale):
                assert self._session is not None
                return self._session
            if self._settled != settled and self._refusal is not None:
                # Refused while this call waited: the same answer, without asking Stripe once per waiting call.
                raise BillerMisconfigured(self._refusal.message, cause=self._refusal.cause)
            self._refusal = None
            try:
                self._session = await self._create_session()
            except BillerMisconfigured as refused:
                self._refusal = refused
                raise
            finally:
                self._settled += 1
            return self._session

    def _fresh(self, session: _Session | None, stale: _Session | None) -> bool:
        return (
            session is not None
            and session is not stale
            and self._clock.now() < session.expires_at - self._refresh_margin_s
        )

    async def _create_session(self) -> _Session:
        try:
            async with asyncio.timeout(self._timeout_s):
                created = await self._client.v2.billing.meter_event_session.create_async()
        except stripe.StripeError as exc:
            errors.raise_session_error(exc)
        except TimeoutError as exc:
            raise errors.timed_out(self._timeout_s) from exc
        except Exception as exc:  # the boundary, as in _post
            raise errors.unexpected(exc) from exc
        expires_at = datetime.fromisoformat(created.expires_at.replace("Z", "+00:00")).timestamp()
        return _Session(client=self._new_client(created.authentication_token), expires_at=expires_at)

    async def close(self) -> None:
        """Close the SDK's httpx.AsyncClient (HTTPXClient.close_async -> AsyncClient.aclose)."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # unannotated in stripe 16.1
