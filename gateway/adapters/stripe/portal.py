"""Stripe's customer portal behind the BillingPortal port, through the official SDK.

`POST /v1/billing_portal/sessions` with `customer`, `return_url`, optional `configuration` (PORTAL_CONFIGURATION_ID;
without it Stripe uses the account's default portal configuration) and optional `flow_data` (a deep link, Stripe
docs: customer-management/portal-deep-links). The response's `url` is short-lived and single-use, and it is a
credential: it opens the customer's billing details to whoever holds it, so it is returned, never logged.

Invariants:
- The session is always for the `billing_customer` passed in; nothing from a request reaches `customer`.
- A user is waiting on the other end, so one call is bounded by `timeout_s` as a whole and the SDK does not retry
  (`max_network_retries=0`): a failure is a prompt 503 and the user clicks again.
- Errors are translated by gateway/adapters/stripe/errors.py; nothing named `stripe.*` leaves. Unknown customer
  (Stripe's `resource_missing` on `customer`: the mapping points at a customer deleted or from the other mode) is
  NoBillingAccount, i.e. the same 404 as no mapping at all: from the user's side there is no billing account, and
  the operator sees the warning in the log. Transient failures (connection, timeout, 5xx, 409, 429, and a bad API
  key, which only the operator can fix) are BillerUnavailable; any other refusal is BillerRejected.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import stripe
import structlog

from gateway.adapters.stripe import errors
from gateway.adapters.stripe.connection import StripeConnection
from gateway.domain.errors import GatewayError, NoBillingAccount, PortalFlowUnavailable
from gateway.domain.portal import PortalFlow
from gateway.domain.ports import BillingPortal

if TYPE_CHECKING:
    from stripe.params.billing_portal import SessionCreateParams, SessionCreateParamsFlowData

log = structlog.get_logger("gateway.portal")

# Subscriptions a cancel/update deep link can act on. Stripe's list without `status` returns every subscription
# that is not canceled, which still includes `incomplete` and `incomplete_expired` ones (docs: api/subscriptions/list,
# billing/subscriptions/overview#subscription-statuses); those have nothing to cancel or change yet.
_LIVE_SUBSCRIPTIONS = frozenset({"active", "trialing", "past_due", "unpaid", "paused"})


class StripeBillingPortal(BillingPortal):
    """Opens Stripe customer portal sessions. Building one does no I/O; `close` releases its connection pool."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        timeout_s: float = 10.0,
        configuration_id: str | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._configuration_id = configuration_id
        self._connection = StripeConnection(api_key, api_base=api_base, timeout_s=timeout_s)
        self._client = self._connection.client

    async def session_url(self, billing_customer: str, return_url: str, flow: PortalFlow | None) -> str:
        """A new portal session's URL for `billing_customer`; see the BillingPortal port for the errors."""
        try:
            async with asyncio.timeout(self._timeout_s):
                params: SessionCreateParams = {"customer": billing_customer, "return_url": return_url}
                if self._configuration_id:
                    params["configuration"] = self._configuration_id
                if flow is not None:
                    params["flow_data"] = await self._flow_data(billing_customer, flow, return_url)
                session = await self._client.v1.billing_portal.sessions.create_async(params)
        except GatewayError:
            raise
        except stripe.StripeError as exc:
            error = errors.portal_error(exc)
            if isinstance(error, NoBillingAccount):
                log.warning("portal.unknown_billing_customer", billing_customer=billing_customer)
            raise error from exc
        except TimeoutError as exc:
            raise errors.timed_out(self._timeout_s) from exc
        except Exception as exc:  # the boundary: whatever else goes wrong is the biller being unavailable
            raise errors.unexpected(exc) from exc
        return session.url

    async def _flow_data(self, billing_customer: str, flow: PortalFlow, return_url: str) -> SessionCreateParamsFlowData:
        # After the flow, go straight back to the host application rather than to the portal's home page: a user
        # who followed "update my card" from the app expects to land back in the app (flow_data.after_completion).
        data: SessionCreateParamsFlowData = {
            "type": flow.value,
            "after_completion": {"type": "redirect", "redirect": {"return_url": return_url}},
        }
        if flow.needs_subscription:
            subscription = await self._only_subscription(billing_customer, flow)
            if flow is PortalFlow.SUBSCRIPTION_CANCEL:
                data["subscription_cancel"] = {"subscription": subscription}
            else:
                data["subscription_update"] = {"subscription": subscription}
        return data

    async def _only_subscription(self, billing_customer: str, flow: PortalFlow) -> str:
        """The customer's one live subscription: Stripe's cancel and update deep links each act on a named one.

        None, or several (which one would the user mean?), is PortalFlowUnavailable: the portal's home page, opened
        without a flow, lists them all.
        """
        page = await self._client.v1.subscriptions.list_async({"customer": billing_customer, "limit": 10})
        live = [sub.id for sub in page.data if sub.status in _LIVE_SUBSCRIPTIONS]
        if len(live) == 1:
            return live[0]
        action = "cancel" if flow is PortalFlow.SUBSCRIPTION_CANCEL else "update"
        if not live:
            raise PortalFlowUnavailable(f"there is no active subscription to {action}")
        raise PortalFlowUnavailable(f"there are several subscriptions: open the portal without a flow to {action} one")

    async def close(self) -> None:
        """Close the SDK's httpx.AsyncClient."""
        await self._connection.close()
