"""Stripe's v2 events behind the BillerReports port: a report by id, and the report notifications since a time.

`GET /v2/core/events/{id}` returns the full event; for `v1.billing.meter.error_report_triggered` (and
`v1.billing.meter.no_meter_found`) its `data` holds `validation_start`/`validation_end` (RFC 3339) and
`reason.error_types[]` with `code`, `error_count` and a few `sample_errors[].request.identifier`.
`GET /v2/core/events` filters by `types` and `created[gte]` and pages with `next_page_url`.

The bodies are decoded with msgspec into the few fields used; the SDK only makes the calls. Errors go through
gateway/adapters/stripe/errors.py, so nothing named `stripe.*` leaves.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import stripe

from gateway.adapters.stripe import errors
from gateway.adapters.stripe.connection import StripeConnection
from gateway.domain.feedback import REPORT_TYPES, ErrorReport, ErrorType, Notification, SampleError
from gateway.domain.ports import BillerReports

PAGE_SIZE = 100


class _Request(msgspec.Struct):
    identifier: str


class _Sample(msgspec.Struct):
    request: _Request
    error_message: str = ""


class _ErrorType(msgspec.Struct):
    code: str
    error_count: int
    sample_errors: list[_Sample] = []


class _Reason(msgspec.Struct):
    error_count: int
    error_types: list[_ErrorType] = []


class _ReportData(msgspec.Struct):
    reason: _Reason
    validation_start: str
    validation_end: str


class _Head(msgspec.Struct):
    id: str
    type: str
    created: str


class _ReportEvent(msgspec.Struct):
    id: str
    type: str
    created: str
    data: _ReportData


class _Page(msgspec.Struct):
    data: list[_Head]
    next_page_url: str | None = None


_decode_head = msgspec.json.Decoder(_Head).decode
_decode_report = msgspec.json.Decoder(_ReportEvent).decode
_decode_page = msgspec.json.Decoder(_Page).decode


def parse_time(text: str) -> float:
    """Unix seconds of an RFC 3339 date-time as Stripe writes it (`2024-08-28T20:54:10.000Z`)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_report(body: str | bytes) -> ErrorReport | None:
    """The domain's report from an event body; None when the event is of another type."""
    head = _decode_head(body)
    if head.type not in REPORT_TYPES:
        return None
    event = _decode_report(body)
    return ErrorReport(
        event_id=event.id,
        event_type=event.type,
        created=parse_time(event.created),
        validation_start=parse_time(event.data.validation_start),
        validation_end=parse_time(event.data.validation_end),
        error_count=event.data.reason.error_count,
        error_types=tuple(
            ErrorType(
                code=error.code,
                error_count=error.error_count,
                samples=tuple(SampleError(s.request.identifier, s.error_message) for s in error.sample_errors),
            )
            for error in event.data.reason.error_types
        ),
    )


class StripeReports(BillerReports):
    """Reads Stripe's v2 events. Building one does no I/O; `close` releases its connection pool."""

    def __init__(self, api_key: str, *, api_base: str | None = None, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s
        self._connection = StripeConnection(api_key, api_base=api_base, timeout_s=timeout_s)
        self._client = self._connection.client

    async def fetch_report(self, event_id: str) -> ErrorReport | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                event = await self._client.v2.core.events.retrieve_async(event_id)
        except stripe.StripeError as exc:
            raise errors.read_error(exc) from exc
        except TimeoutError as exc:
            raise errors.timed_out(self._timeout_s) from exc
        try:
            return error_report(_body(event))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.unexpected(exc) from exc

    async def notifications_since(self, created_from: float, types: frozenset[str]) -> list[Notification]:
        found: list[Notification] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                first = await self._client.v2.core.events.list_async(
                    {"types": sorted(types), "created": {"gte": format_time(created_from)}, "limit": PAGE_SIZE}
                )
            page = _decode_page(_body(first))
            while True:
                found.extend(Notification(e.id, e.type, parse_time(e.created)) for e in page.data)
                if page.next_page_url is None:
                    break
                async with asyncio.timeout(self._timeout_s):
                    response = await self._client.raw_request_async("get", page.next_page_url)
                page = _decode_page(response.body)
        except stripe.StripeError as exc:
            raise errors.read_error(exc) from exc
        except TimeoutError as exc:
            raise errors.timed_out(self._timeout_s) from exc
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.unexpected(exc) from exc
        return sorted(found, key=lambda n: (n.created, n.event_id))

    async def close(self) -> None:
        await self._connection.close()


def _body(obj: stripe.StripeObject) -> str:
    response = obj.last_response
    if response is None:  # every object the SDK returns from a call carries its response
        raise errors.unexpected(RuntimeError("no response body"))
    return response.body
