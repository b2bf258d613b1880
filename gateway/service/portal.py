"""Opening a billing portal session for an authenticated user (docs/billers.md, "Customer billing portal").

The caller (the HTTP layer) has already proved who the user is; this module decides everything else, in an order
that never reveals more than it must: the return URL is vetted before any store or biller is asked, and the
billing customer comes from the customer store, keyed by the authenticated Ringside id and nothing else.
"""

from __future__ import annotations

from gateway.domain.errors import NoBillingAccount
from gateway.domain.portal import PortalFlow, ReturnUrlPolicy
from gateway.domain.ports import BillingPortal, CustomerStore


class PortalSessions:
    def __init__(self, customers: CustomerStore, portal: BillingPortal, return_urls: ReturnUrlPolicy) -> None:
        self._customers = customers
        self._portal = portal
        self._return_urls = return_urls

    async def open(self, ringside_customer: str, requested_return_url: str | None, flow: PortalFlow | None) -> str:
        """The URL of a new portal session for `ringside_customer`'s own billing customer.

        Raises InvalidReturnUrl (nothing else was asked), NoBillingAccount when the customer store maps no billing
        customer, StoreUnavailable when the store cannot be read, and the BillingPortal port's errors.
        """
        return_url = self._return_urls.resolve(requested_return_url)
        billing_customer = await self._customers.get(ringside_customer)
        if not billing_customer:
            raise NoBillingAccount()
        return await self._portal.session_url(billing_customer, return_url, flow)
