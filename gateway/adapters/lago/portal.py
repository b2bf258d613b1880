"""Lago's customer portal behind the BillingPortal port."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import structlog

from gateway.adapters.lago.client import DEFAULT_API_URL, LagoClient, call, segment
from gateway.adapters.lago.errors import error_body, portal_error
from gateway.domain.errors import (
    BillerRejected,
    BillerUnavailable,
    GatewayError,
    NoBillingAccount,
    PortalFlowUnavailable,
)
from gateway.domain.portal import PortalFlow
from gateway.domain.ports import BillingPortal

log = structlog.get_logger("gateway.lago")

# A subscription's statuses in the order the portal looks for one: `GET /api/v1/subscriptions/{external_id}`
# returns only `active` ones unless `status` says otherwise, one status per call (SubscriptionsController#show).
# A customer whose subscription has not started or has ended still has invoices to see.
_PORTAL_SUBSCRIPTION_STATUSES: tuple[str | None, ...] = (None, "pending", "terminated")


class _Subscription(msgspec.Struct):
    external_customer_id: str


class _SubscriptionReply(msgspec.Struct):
    subscription: _Subscription


class _PortalCustomer(msgspec.Struct):
    portal_url: str


class _PortalReply(msgspec.Struct):
    customer: _PortalCustomer


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
        self._lago = LagoClient(api_key, api_url, timeout_s)

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
        response = await call(self._lago, "GET", f"customers/{segment(customer)}/portal_url")
        if not response.is_success:
            raise _refused(response, billing_customer)
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
            response = await call(self._lago, "GET", f"subscriptions/{segment(billing_customer)}", params=params)
            if response.is_success:
                try:
                    reply = msgspec.json.decode(response.content, type=_SubscriptionReply)
                except msgspec.MsgspecError:
                    raise BillerRejected("Lago's subscription has no external_customer_id") from None
                return reply.subscription.external_customer_id
            if error_body(response).code != "subscription_not_found":
                raise _refused(response, billing_customer)
        log.warning("portal.unknown_billing_customer", billing_customer=billing_customer, biller="lago")
        raise NoBillingAccount("the billing account linked to this customer does not exist at the biller")

    async def close(self) -> None:
        """Close the httpx client's connection pool."""
        await self._lago.close()


def _refused(response: httpx.Response, billing_customer: str) -> GatewayError:
    error = portal_error(response)
    if isinstance(error, NoBillingAccount):
        log.warning("portal.unknown_billing_customer", billing_customer=billing_customer, biller="lago")
    return error
