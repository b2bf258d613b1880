"""Lago behind both outbound ports: usage events (BillingSink) and the customer portal (BillingPortal).

Lago (getlago.com, open source, self-hostable) bills usage by *subscription*. The gateway's billing id for a
Ringside customer (the customer store's value, `MeterEvent.customer`) is therefore a Lago subscription's
`external_id`, and each ledger entry becomes one event [docs api-reference/events/usage]:

    POST /api/v1/events
    {"event": {"transaction_id": <Ringside event id>, "external_subscription_id": <billing id>,
               "code": LAGO_METRIC_CODE, "timestamp": <unix seconds>, "properties": {LAGO_UNITS_PROPERTY: <units>}}}

`external_customer_id` is never sent: Lago's docs mark it deprecated on events, and its API drops it (the events
controller permits it, `Events::CreateService` never reads it), so an event that named only a customer would be
stored and never billed.

Why the HTTP API directly, through an async httpx client, and not the official `lago-python-client`: that client
is blocking (module-level `httpx.post`), sleeps inside the call on a 429 (`time.sleep`; by default 3 retries of up
to 20 s each, `services/rate_limit.py`), and `events.create` passes `timeout=None`, which httpx reads as no timeout
at all. On the event loop that would freeze ingest and the portal for as long as Lago hangs; in a worker thread it
would still stack its own retries under the dispatcher's and hide 429s from the dispatcher's account-wide pause.
The documented API we need is four small JSON calls; calling it here bounds every request by `timeout_s` and
leaves retries and pacing to the dispatcher.

Invariants:
- One `send` is exactly one HTTP request; nothing here sleeps or retries a failed request.
- Exactly once: the `transaction_id` is the dispatcher's stable identifier for the ledger entry. Lago keeps one
  event per (organization, external_subscription_id, transaction_id) (unique index `index_unique_transaction_id`)
  and answers a second one with `422` `{"error_details": {"transaction_id": ["value_already_exist"]}}`: that is
  ALREADY_SENT, so a crash between Lago's acceptance and `mark_sent` costs one extra call, never a double charge.
- Errors are translated here; nothing named `httpx.*` leaves this module. Transient (the entry stays pending):
  timeouts, connection errors, 5xx, 429 (BillerRateLimited, honouring `Retry-After` or Lago's
  `X-RateLimit-Reset`), 401/403 (a bad or revoked key is the operator's problem and would otherwise park the whole
  backlog), and answers that only a misconfiguration can cause (wrong LAGO_API_URL, unknown LAGO_METRIC_CODE).
  Permanent (the entry is parked with Lago's message): any other 4xx.
- A 2xx means Lago stored the event, not that it will bill it: Lago checks the metric code and the aggregation
  property after ingestion and reports invalid events through its `events.errors` webhook [changelog:
  event-validations]. Keep LAGO_METRIC_CODE / LAGO_UNITS_PROPERTY equal to the metric's, and the customer store's
  billing ids equal to live subscriptions' external ids.

Batches (BatchBillingSink, so the dispatcher sends Lago up to 100 entries per call): `POST /api/v1/events/batch`
takes at most 100 events [changelog: batch-endpoint] and is all or nothing (`Events::CreateBatchService` saves them
in one transaction): a single known transaction_id rejects the whole batch with `422` and `error_details` keyed by
position (`{"3": {"transaction_id": ["value_already_exist"]}}`). The port returns one Delivery per event, so the
"mark those as sent and resend the rest" step happens here: the known positions are ALREADY_SENT and the others go
again in one more batch request, until Lago takes the rest. Each round removes at least one event, so it ends; it
only happens after a crash between Lago's acceptance and the ledger's mark. A batch refused for any other reason
is BillerRejected as a whole, and the dispatcher resends its events one per call so that only the faulty one is
parked. A transient failure of any round fails the whole call (the dispatcher retries every entry; the ones Lago
took come back ALREADY_SENT).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import structlog

from gateway.domain.errors import (
    BillerRateLimited,
    BillerRejected,
    BillerUnavailable,
    GatewayError,
    NoBillingAccount,
    PortalFlowUnavailable,
)
from gateway.domain.portal import PortalFlow
from gateway.domain.ports import BatchBillingSink, BillingPortal, Delivery, MeterEvent

log = structlog.get_logger("gateway.lago")

# Lago Cloud's API origin, as in every curl example of its docs (`LAGO_URL="https://api.getlago.com"`).
DEFAULT_API_URL = "https://api.getlago.com"
DEFAULT_UNITS_PROPERTY = "units"
# Lago's answer to a known transaction_id: `Events::CreateService` rescues RecordNotUnique as
# `value_already_exist`; older releases validated up front with `value_is_missing_or_already_exists` (our
# transaction_id is never missing, so it can only mean "already exists" here).
_ALREADY_EXISTS = frozenset({"value_already_exist", "value_is_missing_or_already_exists"})
# 404 codes that name the billing id as unknown: the mapping points nowhere (Lago's `not_found_error(resource:)`
# renders `<resource>_not_found`). Older Lago releases answered events for an unknown subscription this way too.
_UNKNOWN_BILLING_ID = frozenset({"subscription_not_found", "customer_not_found"})
# A subscription's statuses in the order the portal looks for one: `GET /api/v1/subscriptions/{external_id}`
# returns only `active` ones unless `status` says otherwise, one status per call (SubscriptionsController#show).
# A customer whose subscription has not started or has ended still has invoices to see.
_PORTAL_SUBSCRIPTION_STATUSES: tuple[str | None, ...] = (None, "pending", "terminated")
# POST /api/v1/events/batch: "Each API call may include up to 100 events" (Lago changelog, batch endpoint;
# Events::CreateBatchService::MAX_LENGTH).
MAX_BATCH = 100
_MAX_MESSAGE_CHARS = 500


class _LagoError(msgspec.Struct):
    """Lago's error body (`ApiErrors` concern): `{"status", "error", "code"?, "error_details"?}`."""

    status: Any = None
    error: Any = None
    code: str | None = None
    error_details: Any = None


class _Subscription(msgspec.Struct):
    external_customer_id: str


class _SubscriptionReply(msgspec.Struct):
    subscription: _Subscription


class _PortalCustomer(msgspec.Struct):
    portal_url: str


class _PortalReply(msgspec.Struct):
    customer: _PortalCustomer


class _LagoClient:
    """An async httpx client for one Lago API: bearer key, JSON, per-phase timeouts, no redirects.

    Building one does no I/O. `api_url` is Lago's origin as in its docs (`https://api.getlago.com`,
    `https://api.eu.getlago.com`, or a self-hosted `http://localhost:3000`); a trailing `/api/v1` is accepted too.
    """

    def __init__(self, api_key: str, api_url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.http = httpx.AsyncClient(
            base_url=_api_root(api_url),
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "ringside-billing-gateway",
            },
            timeout=httpx.Timeout(timeout_s),
            # A redirect means a wrong LAGO_API_URL (http -> https, a login page): report it, do not follow it
            # with the bearer key attached.
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self.http.aclose()


class LagoBillingSink(BatchBillingSink):
    """Sends MeterEvents to `POST /api/v1/events` (`send`) or `POST /api/v1/events/batch` (`send_batch`).

    `send` returns SENT, or ALREADY_SENT when Lago already holds the transaction id for that subscription, or raises
    BillerRejected / BillerUnavailable / BillerRateLimited per the BillingSink port and the module docstring.
    `send_batch` returns one of those Deliveries per event, in order, or raises for the whole call.
    """

    name = "lago"
    max_batch = MAX_BATCH

    def __init__(
        self,
        api_key: str,
        *,
        metric_code: str,
        api_url: str = DEFAULT_API_URL,
        units_property: str = DEFAULT_UNITS_PROPERTY,
        timeout_s: float = 10.0,
    ) -> None:
        if not metric_code:
            raise ValueError("a Lago billable metric code is required")
        if not units_property:
            raise ValueError("a Lago units property name is required")
        self._metric_code = metric_code
        self._units_property = units_property
        self._lago = _LagoClient(api_key, api_url, timeout_s)

    async def send(self, event: MeterEvent) -> Delivery:
        """Record `event` in Lago. ALREADY_SENT when Lago already holds its transaction id (that is success)."""
        body = {"event": self._lago_event(event)}
        response = await _call(self._lago, "POST", "events", content=msgspec.json.encode(body))
        if response.is_success:
            return Delivery.SENT
        if response.status_code == 422 and _names_known_transaction(_error(response).error_details):
            return Delivery.ALREADY_SENT
        raise _send_error(response)

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record 1 to `max_batch` events, all or none per request; known positions are ALREADY_SENT, see the module."""
        if not 1 <= len(events) <= self.max_batch:
            raise ValueError(f"a Lago batch carries 1 to {self.max_batch} events, not {len(events)}")
        bodies = [self._lago_event(event) for event in events]
        outcomes: list[Delivery | None] = [None] * len(events)
        pending = list(range(len(events)))
        while pending:
            content = msgspec.json.encode({"events": [bodies[index] for index in pending]})
            response = await _call(self._lago, "POST", "events/batch", content=content)
            if response.is_success:
                for index in pending:
                    outcomes[index] = Delivery.SENT
                break
            known = _known_positions(response, len(pending))
            if not known:
                raise _send_error(response)
            for position in known:
                outcomes[pending[position]] = Delivery.ALREADY_SENT
            pending = [index for position, index in enumerate(pending) if position not in known]
        # Every position was settled: the loop ends only when none is pending.
        return [outcome for outcome in outcomes if outcome is not None]

    def _lago_event(self, event: MeterEvent) -> dict[str, object]:
        """The event as Lago's API takes it; BillerRejected for one that Lago must never be sent."""
        if not event.identifier:
            # Lago would answer `value_is_missing_or_already_exists`, which must never read as "already sent".
            raise BillerRejected("a meter event without an identifier cannot be sent to Lago")
        if event.value < 0:
            raise BillerRejected(f"meter event value {event.value} is negative")
        return {
            "transaction_id": event.identifier,
            "external_subscription_id": event.customer,
            "code": self._metric_code,
            # Unix seconds: Lago reads a numeric timestamp as seconds (`Time.zone.at(timestamp.to_f)`).
            "timestamp": event.timestamp,
            # An integer, so a `sum` metric on this field adds exact units (Lago parses JSON integers exactly).
            "properties": {self._units_property: event.value},
        }

    async def close(self) -> None:
        """Close the httpx client's connection pool."""
        await self._lago.close()


class LagoBillingPortal(BillingPortal):
    """The URL of Lago's customer portal for the customer that owns a billing id (a subscription's external id).

    Two calls, bounded together by `timeout_s` because a user is waiting: `GET /api/v1/subscriptions/{id}` for the
    subscription's `external_customer_id` (active first, then pending, then terminated), then
    `GET /api/v1/customers/{external_customer_id}/portal_url` [docs api-reference/customers/customer-portal].

    How the port's options map onto Lago's portal, which has neither return URLs nor deep links:
    - `return_url` is not sent anywhere. Lago's portal is an embeddable page (the host application shows it in an
      iframe or a new tab) with no "back" link to configure. The URL has still been vetted by ReturnUrlPolicy, so
      switching billers never turns an unvetted URL into a redirect.
    - Any `flow` raises PortalFlowUnavailable before a call is made: Lago cannot open on a payment method update or
      a cancellation, and the home page where the user cannot cancel would be a silent lie. The host application
      links to the portal without a flow.

    The URL is a credential to the customer's billing details: it is returned, never logged.
    """

    name = "lago"

    def __init__(self, api_key: str, *, api_url: str = DEFAULT_API_URL, timeout_s: float = 10.0) -> None:
        self._lago = _LagoClient(api_key, api_url, timeout_s)

    async def session_url(self, billing_customer: str, return_url: str, flow: PortalFlow | None) -> str:
        """The portal URL of the Lago customer behind `billing_customer`; see the BillingPortal port for the errors."""
        if flow is not None:
            raise PortalFlowUnavailable(f"Lago's customer portal has no {flow.value} flow: open the portal without one")
        try:
            async with asyncio.timeout(self._lago.timeout_s):
                return await self._portal_url(billing_customer)
        except TimeoutError as exc:
            raise BillerUnavailable(f"Lago did not answer within {self._lago.timeout_s:g}s", cause="timeout") from exc

    async def _portal_url(self, billing_customer: str) -> str:
        customer = await self._customer_of(billing_customer)
        response = await _call(self._lago, "GET", f"customers/{_segment(customer)}/portal_url")
        if not response.is_success:
            raise _translate_portal(response, billing_customer)
        try:
            url = msgspec.json.decode(response.content, type=_PortalReply).customer.portal_url
        except msgspec.MsgspecError:
            raise BillerRejected("Lago answered the portal request without a customer.portal_url") from None
        if not url.startswith(("https://", "http://")):
            # The user's browser is sent there (303): only an http(s) URL, never javascript: or a relative path.
            raise BillerRejected("Lago's portal_url is not an http(s) URL")
        return url

    async def _customer_of(self, billing_customer: str) -> str:
        """The external id of the Lago customer owning subscription `billing_customer`; NoBillingAccount if none."""
        for status in _PORTAL_SUBSCRIPTION_STATUSES:
            params = {"status": status} if status else None
            response = await _call(self._lago, "GET", f"subscriptions/{_segment(billing_customer)}", params=params)
            if response.is_success:
                try:
                    reply = msgspec.json.decode(response.content, type=_SubscriptionReply)
                except msgspec.MsgspecError:
                    raise BillerRejected("Lago's subscription has no external_customer_id") from None
                return reply.subscription.external_customer_id
            if _error(response).code != "subscription_not_found":
                raise _translate_portal(response, billing_customer)
        log.warning("portal.unknown_billing_customer", billing_customer=billing_customer, biller="lago")
        raise NoBillingAccount("the billing account linked to this customer does not exist at the biller")

    async def close(self) -> None:
        """Close the httpx client's connection pool."""
        await self._lago.close()


async def _call(lago: _LagoClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request, bounded as a whole by the client's timeout; transport failures become BillerUnavailable."""
    try:
        async with asyncio.timeout(lago.timeout_s):
            return await lago.http.request(method, path, **kwargs)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise BillerUnavailable(f"Lago did not answer within {lago.timeout_s:g}s", cause="timeout") from exc
    except httpx.TransportError as exc:
        raise BillerUnavailable(f"cannot reach Lago ({type(exc).__name__})", cause="connection") from exc
    except Exception as exc:  # the boundary: whatever else goes wrong, keep the entry and retry later
        raise BillerUnavailable(f"unexpected error calling Lago: {type(exc).__name__}", cause="unknown") from exc


def _send_error(response: httpx.Response) -> BillerRejected | BillerUnavailable:
    """The port's error for a non-2xx answer to events that are not (all) already known (see the module docstring)."""
    error = _error(response)
    status = response.status_code
    transient = _transient(response, error)
    if transient is not None:
        return transient
    described = _describe(response, error)
    if status == 404:
        if error.code in _UNKNOWN_BILLING_ID:
            # The mapped billing id names no subscription: this event's problem, like Stripe's unknown customer.
            return BillerRejected(described)
        # No such route (a wrong LAGO_API_URL) or no such metric (a wrong LAGO_METRIC_CODE): every event would
        # fail alike, so they wait for the operator instead of being parked one by one.
        cause = "config" if error.code == "billable_metric_not_found" else "not_found"
        return BillerUnavailable(described, cause=cause)
    if 400 <= status < 500:
        return BillerRejected(described)
    return BillerUnavailable(described, cause="unknown")


def _known_positions(response: httpx.Response, size: int) -> set[int]:
    """The positions a refused batch names as already known, when that is ALL it says; otherwise none.

    Lago's batch 422 keys `error_details` by position (`{"0": {"transaction_id": ["value_already_exist"]}}`). A
    position with any other error, or details of another shape (`{"events": ["too_many_events"]}`), means the batch
    was refused for something else: then no position is taken as known, and the batch is an error as a whole.
    """
    if response.status_code != 422:
        return set()
    details = _error(response).error_details
    if not isinstance(details, Mapping) or not details:
        return set()
    known: set[int] = set()
    for key, errors in details.items():
        position = int(key) if isinstance(key, str) and key.isdigit() else -1
        if not 0 <= position < size or not isinstance(errors, Mapping) or set(errors) != {"transaction_id"}:
            return set()
        if not _names_known_transaction(errors):
            return set()
        known.add(position)
    return known


def _translate_portal(response: httpx.Response, billing_customer: str) -> GatewayError:
    """Map a non-2xx answer to a portal call to the BillingPortal port's errors."""
    error = _error(response)
    transient = _transient(response, error)
    if transient is not None:
        return transient
    if response.status_code == 404 and error.code in _UNKNOWN_BILLING_ID:
        log.warning("portal.unknown_billing_customer", billing_customer=billing_customer, biller="lago")
        return NoBillingAccount("the billing account linked to this customer does not exist at the biller")
    described = _describe(response, error)
    if 400 <= response.status_code < 500:
        return BillerRejected(described)
    return BillerUnavailable(described, cause="unknown")


def _transient(response: httpx.Response, error: _LagoError) -> BillerUnavailable | None:
    """The answers that say "not now" for any call, or None."""
    status = response.status_code
    described = _describe(response, error)
    if status == 429:
        # Lago limits per organization (500 events/s by default) and says when the window resets in
        # `X-RateLimit-Reset` (seconds) [docs api-reference/rate-limits]; a proxy in front may send Retry-After.
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = _seconds(response.headers.get("X-RateLimit-Reset"))
        return BillerRateLimited(described, retry_after_s=retry_after)
    if status >= 500:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        return BillerUnavailable(described, cause="server_error", retry_after_s=retry_after)
    if status in (401, 403):
        # A missing, wrong or revoked API key, or a plan without the feature: the operator's problem, and it fails
        # every call alike. Parking would move the whole backlog aside; waiting keeps it pending until fixed.
        return BillerUnavailable(described, cause="auth")
    if status in (408, 409):
        return BillerUnavailable(described, cause="timeout" if status == 408 else "conflict")
    return None


def _error(response: httpx.Response) -> _LagoError:
    """Lago's error body, or an empty one when the body is not Lago's JSON (a proxy's HTML page, nothing)."""
    try:
        return msgspec.json.decode(response.content, type=_LagoError)
    except msgspec.MsgspecError:
        return _LagoError()


def _names_known_transaction(details: Any) -> bool:
    """True when `error_details` says the transaction_id is already taken (Lago: `value_already_exist`)."""
    if not isinstance(details, Mapping):
        return False
    codes = details.get("transaction_id")
    return isinstance(codes, list) and any(code in _ALREADY_EXISTS for code in codes)


def _describe(response: httpx.Response, error: _LagoError) -> str:
    """`Lago 422 validation_errors: properties: value_is_not_valid_number`, short enough for a parked record."""
    what = error.code or error.error or response.reason_phrase or "error"
    text = f"Lago {response.status_code} {what}"
    if isinstance(error.error_details, Mapping) and error.error_details:
        details = "; ".join(
            f"{field}: {', '.join(map(str, codes)) if isinstance(codes, list) else codes}"
            for field, codes in error.error_details.items()
        )
        text = f"{text}: {details}"
    return text[:_MAX_MESSAGE_CHARS]


def _api_root(api_url: str) -> str:
    """`https://api.getlago.com` or `https://api.getlago.com/api/v1/` -> `https://api.getlago.com/api/v1/`."""
    root = api_url.strip().rstrip("/")
    if root.endswith("/api/v1"):
        root = root[: -len("/api/v1")]
    return f"{root}/api/v1/"


def _segment(value: str) -> str:
    """An id as one path segment: everything escaped, and `.`/`..` too, which URL normalisation would eat."""
    return value.replace(".", "%2E") if value in (".", "..") else quote(value, safe="")


def _seconds(value: str | None) -> float | None:
    """A non-negative number of seconds, or None when absent or not a number."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent or bad."""
    seconds = _seconds(value)
    if seconds is not None or not value:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
