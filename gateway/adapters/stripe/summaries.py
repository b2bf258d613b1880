"""What Stripe holds per customer and hour, behind the BillerTotals port: the meter's event summaries.

`GET /v1/billing/meters/{meter}/event_summaries` with `customer`, `start_time`, `end_time` and
`value_grouping_window=hour` returns one summary per hour; hourly grouping requires both bounds on hour boundaries
(Stripe's API reference), so the adapter widens them to whole hours. Pages of up to 100 follow `starting_after`.
The summaries are eventually consistent: recent usage may be missing (the caller's settle time covers it).

The meter is the one whose `event_name` the sinks send, found once by listing the active meters unless its id is
given. `aggregated_value` is a JSON number, read as Decimal so it never passes through a float.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

import msgspec
import stripe

from gateway.adapters.stripe import errors
from gateway.adapters.stripe.connection import StripeConnection
from gateway.adapters.stripe.meter import DEFAULT_EVENT_NAME
from gateway.domain.errors import BillerUnavailable
from gateway.domain.ports import BillerTotals
from gateway.domain.reconcile import hour_ceil, hour_floor

PAGE_SIZE = 100
_Page = TypeVar("_Page")


class _Summary(msgspec.Struct):
    id: str
    aggregated_value: Decimal
    start_time: int


class _SummaryPage(msgspec.Struct):
    data: list[_Summary]
    has_more: bool = False


class _Meter(msgspec.Struct):
    id: str
    event_name: str
    status: str = "active"


class _MeterPage(msgspec.Struct):
    data: list[_Meter]
    has_more: bool = False


# msgspec reads a JSON number into Decimal from its text, keeping every digit.
_decode_summaries = msgspec.json.Decoder(_SummaryPage).decode
_decode_meters = msgspec.json.Decoder(_MeterPage).decode


class StripeMeterTotals(BillerTotals):
    """Reads a meter's hourly event summaries. Building one does no I/O; `close` releases its connection pool."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        event_name: str = DEFAULT_EVENT_NAME,
        meter_id: str | None = None,
        api_base: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._event_name = event_name
        self._meter_id = meter_id
        self._timeout_s = timeout_s
        self._connection = StripeConnection(api_key, api_base=api_base, timeout_s=timeout_s)
        self._client = self._connection.client

    async def hourly_units(self, billing_customer: str, start: int, end: int) -> dict[int, int]:
        meter = await self._meter()
        held: dict[int, int] = {}
        params: dict[str, object] = {
            "customer": billing_customer,
            "start_time": hour_floor(start),
            "end_time": hour_ceil(end),
            "value_grouping_window": "hour",
            "limit": PAGE_SIZE,
        }
        while True:
            page = _decoded(_decode_summaries, await self._get(f"/v1/billing/meters/{meter}/event_summaries", params))
            for summary in page.data:
                held[summary.start_time] = held.get(summary.start_time, 0) + int(summary.aggregated_value)
            if not page.has_more or not page.data:
                return held
            params["starting_after"] = page.data[-1].id

    async def _meter(self) -> str:
        if self._meter_id is not None:
            return self._meter_id
        params: dict[str, object] = {"status": "active", "limit": PAGE_SIZE}
        while True:
            page = _decoded(_decode_meters, await self._get("/v1/billing/meters", params))
            for meter in page.data:
                if meter.event_name == self._event_name:
                    self._meter_id = meter.id
                    return meter.id
            if not page.has_more or not page.data:
                raise BillerUnavailable(
                    f"Stripe has no active meter for event name {self._event_name!r}", cause="no_meter"
                )
            params["starting_after"] = page.data[-1].id

    async def _get(self, path: str, params: dict[str, object]) -> str:
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.raw_request_async("get", path, **params)
        except stripe.StripeError as exc:
            raise errors.read_error(exc) from exc
        except TimeoutError as exc:
            raise errors.timed_out(self._timeout_s) from exc
        body: str = response.body
        return body

    async def close(self) -> None:
        await self._connection.close()


def _decoded(decode: Callable[[str], _Page], body: str) -> _Page:
    try:
        return decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.unexpected(exc) from exc
