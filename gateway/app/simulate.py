"""`gateway simulate`: behave as Ringside does towards a gateway, the way `stripe trigger` exercises a Stripe
integration.

What Ringside does, and so what this does (docs/design.md; Ringside's "webhook delivery and retries" cookbook):
- signs each delivery `X-FC-Signature: t=<now>,v1=<HMAC-SHA256>` with the endpoint's secret, afresh per attempt;
- sends `chat.completion.finished` events whose cost is a JSON number in dollars;
- re-emits some events (same id, same bytes), in any order, sometimes at the same instant;
- retries any non-2xx answer, and connection errors, with exponential backoff (honouring `Retry-After`).
On top, a fraction of forged deliveries (a wrong secret, a stale timestamp, no or a malformed header) must all be
refused with 401, and events of a customer nobody mapped must be parked.

Invariant of the report: `units` per customer are what the gateway acknowledged (`accepted` answers), `spend_usd`
is the exact sum of the costs of the events the gateway acknowledged, so both can be checked against the ledger.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from gateway.app.simulation_report import CustomerTotal, SimulationReport
from gateway.domain.signature import HEADER, sign

BILLABLE = "chat.completion.finished"
WEBHOOK_PATH = "/webhooks/ringside"
UNMAPPED_CUSTOMER = "rs_sim_unmapped"
# Costs have 8 decimal places, finer than the default unit ($0.00001), so the customers' carries are exercised.
_COST_STEP = Decimal("0.00000001")
_MAX_COST_STEPS = 5_000_000  # $0.05
_RETRY_AFTER_CAP_S = 10.0
_encode = msgspec.json.Encoder(decimal_format="number").encode


class SimulationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One run. Fractions are of `events`: `duplicates` re-emits, `bad_signatures` forgeries, `unmapped` events of
    a customer with no Stripe id. `rate` is deliveries per second (0: as fast as `concurrency` allows)."""

    url: str
    events: int = 100
    customers: int = 5
    duplicates: float = 0.1
    bad_signatures: float = 0.0
    unmapped: float = 0.0
    rate: float = 0.0
    concurrency: int = 16
    max_attempts: int = 6
    backoff_s: float = 0.1
    timeout_s: float = 10.0
    seed: int | None = None
    run_id: str | None = None
    stripe_customers: tuple[str, ...] = ()


class Kind(StrEnum):
    GENUINE = "genuine"
    REEMIT = "reemit"
    FORGED = "forged"


class _Delivery(msgspec.Struct, frozen=True):
    kind: Kind
    body: bytes
    event_index: int | None = None
    forgery: str | None = None


class _Event(msgspec.Struct, frozen=True):
    event_id: str
    ringside_customer: str
    stripe_customer: str | None
    cost: Decimal
    body: bytes


def webhook_url(url: str) -> str:
    """`url` itself, or `url` + /webhooks/ringside when it names only a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--url must be an http(s) URL such as http://127.0.0.1:8000, not {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=WEBHOOK_PATH)
    return urlunsplit(parts)


class Simulator:
    """Sends one run's deliveries and tallies the answers. Holds the signing secret; never prints it."""

    def __init__(self, config: SimulationConfig, secret: str) -> None:
        if config.events < 0 or config.customers < 1 or config.concurrency < 1 or config.max_attempts < 1:
            raise ValueError("events must be >= 0; customers, concurrency and max attempts >= 1")
        for name in ("duplicates", "bad_signatures", "unmapped"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} is a fraction between 0 and 1")
        self._config = config
        self._secret = secret
        self._url = webhook_url(config.url)
        self._rng = random.Random(config.seed)
        self._run_id = config.run_id or secrets.token_hex(4)
        self._events = self._make_events()
        self._deliveries = self._make_deliveries()
        self._latencies: list[float] = []
        self._statuses: Counter[str] = Counter()
        self._parked_reasons: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()
        self._sent = 0
        self._retries = 0
        self._failed = 0
        self._forged_refused = 0
        self._first_answers: dict[int, list[dict[str, Any]]] = {}

    @property
    def deliveries(self) -> int:
        return len(self._deliveries)

    async def run(self, on_delivery: Callable[[], None] = lambda: None) -> SimulationReport:
        started = time.monotonic()
        slots = asyncio.Semaphore(self._config.concurrency)
        limits = httpx.Limits(
            max_connections=self._config.concurrency, max_keepalive_connections=self._config.concurrency
        )
        async with httpx.AsyncClient(limits=limits, timeout=self._config.timeout_s) as client:

            async def one(position: int, delivery: _Delivery) -> None:
                if self._config.rate > 0:
                    await asyncio.sleep(max(0.0, started + position / self._config.rate - time.monotonic()))
                async with slots:
                    await self._deliver(client, delivery)
                on_delivery()

            await asyncio.gather(*(one(position, d) for position, d in enumerate(self._deliveries)))
        return self._report(time.monotonic() - started)

    # -- the run's data --------------------------------------------------------------------------------------------

    def _make_events(self) -> list[_Event]:
        config = self._config
        customers = [
            (f"rs_sim_{index + 1}", config.stripe_customers[index % len(config.stripe_customers)])
            if config.stripe_customers
            else (f"rs_sim_{index + 1}", f"cus_sim_{index + 1}")
            for index in range(config.customers)
        ]
        unmapped = set(self._rng.sample(range(config.events), round(config.unmapped * config.events)))
        created = int(time.time())
        events = []
        for index in range(config.events):
            ringside, stripe_customer = (
                (UNMAPPED_CUSTOMER, None) if index in unmapped else customers[index % len(customers)]
            )
            event_id = f"evt_sim_{self._run_id}_{index:06d}"
            cost = self._rng.randint(1, _MAX_COST_STEPS) * _COST_STEP
            customer: dict[str, Any] = {"id": ringside}
            if stripe_customer is not None:
                customer["metadata"] = {"stripe_customer_id": stripe_customer}
            body = _encode(
                {
                    "id": event_id,
                    "type": BILLABLE,
                    "created": created,
                    "data": {"cost_usd": cost, "model": "fc:openai/gpt-4o-mini", "customer": customer},
                }
            )
            events.append(_Event(event_id, ringside, stripe_customer, cost, body))
        return events

    def _make_deliveries(self) -> list[_Delivery]:
        config = self._config
        deliveries = [_Delivery(Kind.GENUINE, e.body, index) for index, e in enumerate(self._events)]
        if self._events:
            for _ in range(round(config.duplicates * config.events)):
                index = self._rng.randrange(len(self._events))
                deliveries.append(_Delivery(Kind.REEMIT, self._events[index].body, index))
        forgeries = ("wrong_secret", "stale_timestamp", "missing", "malformed")
        for number in range(round(config.bad_signatures * config.events)):
            forgery = forgeries[number % len(forgeries)]
            body = _encode(
                {
                    "id": f"evt_forged_{self._run_id}_{number:06d}",
                    "type": BILLABLE,
                    "data": {"cost_usd": Decimal("99.99"), "customer": {"id": "rs_sim_1"}},
                }
            )
            if forgery == "stale_timestamp" and self._events:
                # A replay attack: a real event's bytes under a signature that was valid an hour ago.
                body = self._rng.choice(self._events).body
            deliveries.append(_Delivery(Kind.FORGED, body, forgery=forgery))
        # Any order, as retries and re-emits interleave in Ringside's queue; a re-emit may even come first.
        self._rng.shuffle(deliveries)
        return deliveries

    # -- delivering ------------------------------------------------------------------------------------------------

    def _headers(self, delivery: _Delivery) -> dict[str, str]:
        now = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "gateway-simulate (Ringside look-alike)"}
        if delivery.forgery == "missing":
            return headers
        if delivery.forgery == "malformed":
            headers[HEADER] = "v1=deadbeef"
        elif delivery.forgery == "wrong_secret":
            headers[HEADER] = sign(delivery.body, "forged_" + secrets.token_hex(16), now)
        elif delivery.forgery == "stale_timestamp":
            headers[HEADER] = sign(delivery.body, self._secret, now - 3600)
        else:
            headers[HEADER] = sign(delivery.body, self._secret, now)
        return headers

    async def _deliver(self, client: httpx.AsyncClient, delivery: _Delivery) -> None:
        """One delivery, retried like Ringside until a 2xx; a forger does not retry a refusal."""
        response: httpx.Response | None = None
        for attempt in range(self._config.max_attempts):
            if attempt:
                self._retries += 1
                await asyncio.sleep(self._delay(attempt, response))
            self._sent += 1
            started = time.perf_counter()
            try:
                response = await client.post(self._url, content=delivery.body, headers=self._headers(delivery))
            except httpx.HTTPError:
                response = None
                continue
            self._latencies.append((time.perf_counter() - started) * 1000)
            if response.is_success:
                self._acknowledged(delivery, _json(response))
                return
            if delivery.kind is Kind.FORGED:
                break
        self._refused_or_failed(delivery, response)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        backoff = self._config.backoff_s * 2 ** (attempt - 1)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.isdigit():
            backoff = max(backoff, min(float(retry_after), _RETRY_AFTER_CAP_S))
        delay: float = backoff * (0.5 + self._rng.random() / 2)
        return delay

    def _acknowledged(self, delivery: _Delivery, answer: Any) -> None:
        answer = answer if isinstance(answer, dict) else {}
        status = str(answer.get("status", "unknown"))
        self._statuses[status] += 1
        if status == "parked":
            self._parked_reasons[str(answer.get("reason"))] += 1
        if delivery.kind is Kind.FORGED:
            return  # counted as not refused in the report
        if delivery.event_index is not None and status in ("accepted", "parked"):
            self._first_answers.setdefault(delivery.event_index, []).append(answer)

    def _refused_or_failed(self, delivery: _Delivery, response: httpx.Response | None) -> None:
        if response is None or response.status_code >= 500:
            self._failed += 1
            return
        answer = _json(response)
        error = answer.get("error") if isinstance(answer, dict) else None
        code = str(error.get("code")) if isinstance(error, dict) else str(response.status_code)
        self._statuses["refused"] += 1
        self._refusals[code] += 1
        if delivery.kind is Kind.FORGED and response.status_code == 401:
            self._forged_refused += 1

    # -- the report ------------------------------------------------------------------------------------------------

    def _report(self, elapsed_s: float) -> SimulationReport:
        totals: dict[str, dict[str, Any]] = {}
        for index, event in enumerate(self._events):
            total = totals.setdefault(
                event.ringside_customer,
                {"stripe": event.stripe_customer, "events": 0, "accepted": 0, "parked": 0, "units": 0, "spend": 0},
            )
            answers = self._first_answers.get(index, [])
            total["events"] += 1
            if not answers:
                continue
            total["spend"] += event.cost
            first = answers[0]
            if first.get("status") == "accepted":
                total["accepted"] += 1
                total["units"] += int(first.get("units") or 0)
            else:
                total["parked"] += 1
        forged = sum(1 for d in self._deliveries if d.kind is Kind.FORGED)
        latencies = sorted(self._latencies)
        return SimulationReport(
            url=self._url,
            run_id=self._run_id,
            events=len(self._events),
            deliveries=len(self._deliveries),
            sent=self._sent,
            retries=self._retries,
            accepted=self._statuses["accepted"],
            duplicate=self._statuses["duplicate"],
            ignored=self._statuses["ignored"],
            parked=self._statuses["parked"],
            refused=self._statuses["refused"],
            failed=self._failed,
            forged=forged,
            forged_refused=self._forged_refused,
            units=sum(int(t["units"]) for t in totals.values()),
            latency_ms_p50=_percentile(latencies, 50),
            latency_ms_p99=_percentile(latencies, 99),
            elapsed_s=round(elapsed_s, 3),
            parked_reasons=dict(sorted(self._parked_reasons.items())),
            refusals=dict(sorted(self._refusals.items())),
            customers=[
                CustomerTotal(
                    ringside_customer=ringside,
                    stripe_customer=t["stripe"],
                    events=t["events"],
                    accepted=t["accepted"],
                    parked=t["parked"],
                    units=t["units"],
                    spend_usd=Decimal(t["spend"]),
                )
                for ringside, t in sorted(totals.items())
            ],
            double_acknowledged=sorted(
                self._events[index].event_id for index, answers in self._first_answers.items() if len(answers) > 1
            ),
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _percentile(ordered: list[float], percent: int) -> float | None:
    """Nearest-rank percentile of an ordered list."""
    if not ordered:
        return None
    rank = max(1, -(-percent * len(ordered) // 100))
    return round(ordered[rank - 1], 2)
