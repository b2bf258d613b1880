"""The billing portal of a gateway without a biller that has one (no STRIPE_API_KEY): it answers 503, plainly.

Why not a local stand-in page, the way the local ledger biller stands in for Stripe's meter? The ledger biller
keeps usage safe until a real biller is configured; a portal has nothing to stand in for: there are no invoices,
cards or subscriptions to show, and a pretend portal in front of a real end user would mislead them. A clear
`503 portal_not_configured` tells the host application's developer exactly what is missing.
"""

from __future__ import annotations

from gateway.domain.errors import PortalNotConfigured
from gateway.domain.portal import PortalFlow
from gateway.domain.ports import BillingPortal


class DisabledBillingPortal(BillingPortal):
    """Every `session_url` raises PortalNotConfigured; nothing is opened, nothing is held."""

    name = "none"

    async def session_url(self, billing_customer: str, return_url: str, flow: PortalFlow | None) -> str:
        raise PortalNotConfigured("no biller with a customer portal is set (STRIPE_API_KEY or GATEWAY_BILLER=lago)")

    async def close(self) -> None:
        return None
