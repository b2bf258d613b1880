"""`POST /webhooks/stripe`: Stripe's event destination, where its meter error reports come back into the ledger.

Not the hot route (a report arrives now and then), so it is an ordinary Litestar handler, documented in the OpenAPI
document like any other. It reads the raw body, and nothing of it is trusted before a STRIPE_WEBHOOK_SECRET verifies
its `Stripe-Signature` (gateway/adapters/stripe/notifications.py: the SDK's parsing, 300 s tolerance, every secret
live for rotation); a bad signature is 401 with the Ringside webhook's codes. Then the ReportHandler applies the
report once (a redelivery answers `duplicate`, other event types `ignored`, both 200). When Stripe or the store
cannot be reached the answer is 503, nothing changed, and Stripe delivers again later.

Without STRIPE_WEBHOOK_SECRET the route stays mounted and answers 503 `stripe_webhook_not_configured`, so an
operator who points Stripe at it sees what is missing (in Stripe's delivery log and ours) instead of a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from litestar import Request, post
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

from gateway.app.openapi import ErrorBody
from gateway.domain.errors import BillerError, SignatureError, StoreUnavailable, StripeWebhookNotConfigured
from gateway.domain.feedback import Handled

if TYPE_CHECKING:
    from gateway.app.container import Container

PATH = "/webhooks/stripe"
SOURCE = "webhook"
log = structlog.get_logger("gateway.feedback")


class StripeAck(msgspec.Struct, frozen=True):
    """200: the notification is handled: `applied` (its report parked `parked` entries), `duplicate` (applied
    before) or `ignored` (not a meter error report)."""

    status: Handled
    event_id: str
    parked: int = 0


_RESPONSES: dict[int, ResponseSpec] = {
    401: ResponseSpec(
        data_container=ErrorBody,
        description="missing_signature, malformed_signature, timestamp_out_of_tolerance or invalid_signature.",
        generate_examples=False,
    ),
    502: ResponseSpec(
        data_container=ErrorBody,
        description="biller_rejected: Stripe refused to return the announced event; nothing changed.",
        generate_examples=False,
    ),
    503: ResponseSpec(
        data_container=ErrorBody,
        description="stripe_webhook_not_configured (no STRIPE_WEBHOOK_SECRET), store_unavailable, or Stripe could "
        "not be asked for the report; nothing changed, Stripe delivers again.",
        generate_examples=False,
    ),
}


def stripe_webhook_route(container: Container) -> HTTPRouteHandler:
    """The route around the container's verifier and report handler."""

    @post(
        PATH,
        tags=["webhooks"],
        summary="Receive a signed Stripe event notification",
        description="Stripe's event destination (thin events). Verifies Stripe-Signature over the raw body with "
        "STRIPE_WEBHOOK_SECRET; a v1.billing.meter.error_report_triggered or v1.billing.meter.no_meter_found report "
        "is fetched in full and the entries it names are parked biller_rejected, once per report.",
        status_code=200,
        responses=_RESPONSES,
        cache=False,
    )
    async def stripe_webhook(request: Request[Any, Any, State]) -> StripeAck:
        verifier = container.stripe_verifier()
        if verifier is None:
            raise StripeWebhookNotConfigured()
        metrics = container.metrics()
        body = await request.body()
        try:
            notification = verifier.verify(body, request.headers.get("stripe-signature"))
        except SignatureError as exc:
            metrics.report_failed(SOURCE, "refused")
            log.warning("stripe_webhook.refused", outcome=exc.code)
            raise
        try:
            result = await container.report_handler().handle(notification)
        except (BillerError, StoreUnavailable) as exc:
            metrics.report_failed(SOURCE, "unavailable")
            log.warning("stripe_webhook.unavailable", event_id=notification.event_id, outcome=exc.code)
            raise
        metrics.report(SOURCE, result)
        log.info(
            "stripe_webhook.handled",
            event_id=notification.event_id,
            type=notification.event_type,
            outcome=result.status.value,
            parked=result.parked,
        )
        return StripeAck(result.status, result.event_id, result.parked)

    return stripe_webhook
