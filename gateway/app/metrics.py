"""Prometheus metrics (docs/operations.md, "Metrics"): the adapter of the services' Metrics port, and its
exposition at `GET /metrics`.

Invariants:
- Each PrometheusMetrics owns its CollectorRegistry: two apps in one process (tests, several containers) never share
  or collide on a metric. The global `prometheus_client.REGISTRY` is never touched.
- Hot-path methods are one dict lookup and one increment under prometheus_client's lock; labelled children are
  cached per label value so the label tuple is validated once, not per call.
- Label values come from the gateway's own closed vocabularies (outcomes, error codes, park reasons, biller error
  causes), never from request data, so cardinality stays bounded whatever a sender posts.
- Ledger gauges (pending, oldest pending age, parked, sent) are refreshed from `Ledger.stats()` at scrape time
  and by the sweep, so they describe the shared ledger (every replica's work), not only this process's.

Why not `litestar.plugins.prometheus`: its middleware keeps its metrics in a class-level dict on the global
registry (two apps in one process share them) and measures HTTP requests, not deliveries; what matters here is the
billing pipeline, which only the services can report.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, TypeVar

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from gateway.domain.feedback import Handled, HandleResult
from gateway.domain.ledger import LedgerStats
from gateway.domain.reconcile import ReconcileTotals, Verdict
from gateway.service.metrics import Delivered, Metrics
from gateway.service.sweep import Sweep

NAMESPACE = "gateway"
# The classic text format every Prometheus understands; Litestar appends the charset to text/* media types itself.
CONTENT_TYPE = "text/plain; version=0.0.4"
# Stripe answers a meter event in tens to hundreds of milliseconds; the top buckets catch timeouts (10 s default).
BILLER_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNTS_AS_SENT = frozenset({Delivered.SENT, Delivered.ALREADY_SENT, Delivered.ZERO_UNITS})

# Stripe's error codes label a counter: only ones shaped like a code, so a surprise cannot explode cardinality.
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

M = TypeVar("M", Counter, Histogram)


class _Children(Generic[M]):
    """A labelled metric's children, cached by label values: `.labels()` validates its arguments on every call."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class PrometheusMetrics(Metrics):
    """The gateway's metrics in a registry of their own; `render()` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        # `*_created` series double the exposition for a timestamp nobody graphs. (A process-wide switch of
        # prometheus_client; it only ever turns them off.)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client 0.26
        self.registry = registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=NAMESPACE, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=NAMESPACE, registry=registry)

        self._deliveries = _Children(
            counter(
                "webhook_deliveries",
                "Webhook deliveries answered, by outcome and code (the park reason or the refusal's error code).",
                ("outcome", "code"),
            )
        )
        self._units_accepted = counter("units_accepted", "Meter units recorded in the ledger by this process.")
        self._units_sent = counter("units_sent", "Meter units the biller acknowledged to this process.")
        self._dispatched = _Children(
            counter("dispatch", "Ledger entries the dispatcher finished with, by outcome.", ("outcome",))
        )
        self._parked = _Children(counter("parked", "Deliveries and entries parked, by reason.", ("reason",)))
        self._biller_latency = _Children(
            Histogram(
                "biller_request_duration_seconds",
                "Duration of one call to the biller, by result (ok, rejected, error).",
                ("result",),
                namespace=NAMESPACE,
                registry=registry,
                buckets=BILLER_LATENCY_BUCKETS,
            )
        )
        self._biller_errors = _Children(
            counter(
                "biller_errors",
                "Failed calls to the biller, by cause (server_error, rate_limited, timeout, connection, ...).",
                ("cause",),
            )
        )
        self._pending = gauge("ledger_pending_entries", "Entries waiting for the biller.")
        self._pending_units = gauge("ledger_pending_units", "Units of the entries waiting for the biller.")
        self._oldest_pending = gauge(
            "ledger_oldest_pending_age_seconds", "Age of the oldest pending entry (0 when none is pending)."
        )
        self._pending_stale = gauge(
            "ledger_pending_stale", "1 when the oldest pending entry is older than GATEWAY_PENDING_ALERT_S, else 0."
        )
        self._parked_entries = gauge("ledger_parked_entries", "Parked records in the ledger.")
        self._sent_entries = gauge("ledger_sent_entries", "Entries the biller acknowledged.")
        self._store_up = gauge("ledger_up", "1 when the last read of the ledger's state succeeded, else 0.")
        self._reports = _Children(
            counter(
                "stripe_reports",
                "Stripe event notifications handled, by source (webhook, poll) and status (applied, duplicate, "
                "ignored, refused, unavailable).",
                ("source", "status"),
            )
        )
        self._report_errors = _Children(
            counter(
                "stripe_report_errors",
                "Meter events Stripe reported dropped (error_count of applied reports), by Stripe's error code.",
                ("code",),
            )
        )
        self._report_parked = counter(
            "stripe_report_parked", "Sent entries parked biller_rejected by Stripe's reports."
        )
        self._reconcile_windows = Gauge(
            "reconcile_windows",
            "Windows of the last periodic reconciliation, by verdict.",
            ("verdict",),
            namespace=NAMESPACE,
            registry=registry,
        )
        self._reconcile_units = Gauge(
            "reconcile_units_difference",
            "Units by which the ledger and the biller differ in the last periodic reconciliation, by verdict.",
            ("verdict",),
            namespace=NAMESPACE,
            registry=registry,
        )
        self._reconcile_up = gauge("reconcile_up", "1 when the last periodic reconciliation could ask the biller.")
        self._reconcile_at = gauge(
            "reconcile_last_success_timestamp_seconds", "When the last periodic reconciliation completed."
        )
        self._paused = Gauge(
            "dispatcher_paused",
            "1 while this process's dispatcher is paused for `reason` (biller_configuration), else 0.",
            ("reason",),
            namespace=NAMESPACE,
            registry=registry,
        )

    def delivery(self, outcome: str, code: str = "") -> None:
        self._deliveries(outcome, code).inc()

    def units_accepted(self, units: int) -> None:
        if units > 0:
            self._units_accepted.inc(units)

    def parked(self, reason: str) -> None:
        self._parked(reason).inc()

    def dispatched(self, outcome: Delivered, units: int, *, entries: int = 1) -> None:
        if entries <= 0:
            return
        self._dispatched(outcome.value).inc(entries)
        if outcome in _COUNTS_AS_SENT and units > 0:
            self._units_sent.inc(units)

    def biller_call(self, seconds: float, error_cause: str | None = None) -> None:
        result = "ok" if error_cause is None else "rejected" if error_cause == "rejected" else "error"
        self._biller_latency(result).observe(seconds)
        if error_cause is not None and error_cause != "rejected":
            self._biller_errors(error_cause).inc()

    def ledger(self, stats: LedgerStats, now: float, *, alert_after_s: float | None = None) -> None:
        age = 0.0 if stats.oldest_pending_at is None else max(0.0, now - stats.oldest_pending_at)
        self._pending.set(stats.pending)
        self._pending_units.set(stats.units_pending)
        self._oldest_pending.set(age)
        self._parked_entries.set(stats.parked)
        self._sent_entries.set(stats.sent)
        if alert_after_s is not None:
            self._pending_stale.set(1 if age > alert_after_s else 0)

    def store_up(self, up: bool) -> None:
        self._store_up.set(1 if up else 0)

    def report(self, source: str, result: HandleResult) -> None:
        """One notification of Stripe's handled (app layer: the webhook and the poller)."""
        self._reports(source, result.status.value).inc()
        if result.status is Handled.APPLIED:
            for code, count in result.errors_by_code.items():
                self._report_errors(code if _CODE.match(code) else "other").inc(count)
            self._report_parked.inc(result.parked)

    def report_failed(self, source: str, status: str) -> None:
        """A notification refused (bad signature) or not handled for now (Stripe or the store unavailable)."""
        self._reports(source, status).inc()

    def reconciled(self, totals: ReconcileTotals | None, now: float) -> None:
        """The last periodic reconciliation's totals; None when the biller or the store could not be asked."""
        self._reconcile_up.set(0 if totals is None else 1)
        if totals is None:
            return
        self._reconcile_at.set(now)
        for verdict in Verdict:
            self._reconcile_windows.labels(verdict.value).set(totals.windows_by_verdict.get(verdict, 0))
            self._reconcile_units.labels(verdict.value).set(totals.units_by_verdict.get(verdict, 0))

    def dispatcher_paused(self, reason: str, paused: bool) -> None:
        self._paused.labels(reason).set(1 if paused else 0)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)


def metrics_route(metrics: Callable[[], PrometheusMetrics], sweep: Callable[[], Sweep]) -> HTTPRouteHandler:
    """`GET /metrics`: refresh the ledger gauges from the store, then render the registry.

    The refresh reads `Ledger.stats()` at scrape time, so the gauges describe the ledger now even if the sweep
    has not run lately (or does not run in this process: `gateway serve --no-dispatcher`).
    """

    @get(
        "/metrics",
        media_type=CONTENT_TYPE,
        tags=["operations"],
        summary="Prometheus metrics",
        description="Prometheus text exposition (version 0.0.4); metric names: docs/operations.md in the repository.",
        cache=False,
    )
    async def prometheus_metrics() -> Response[bytes]:
        await sweep().measure()
        return Response(metrics().render(), media_type=CONTENT_TYPE)

    return prometheus_metrics
