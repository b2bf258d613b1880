"""The BillingPortal contract, for every biller with a portal: each adapter against its biller's fake server.

A known billing id gets a URL the biller issued; an unknown one is NoBillingAccount (the user's 404); a biller that
is down, rate limiting or refusing our key is BillerUnavailable (a 503 the user can retry), never NoBillingAccount.
A new biller joins with one fixture in conftest.py (a `BillerPortal`) and one name below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gateway.domain.errors import BillerRateLimited, BillerUnavailable, NoBillingAccount

if TYPE_CHECKING:
    from tests.contract.conftest import BillerPortal

RETURN_URL = "https://app.example.com/account"


@pytest.fixture(params=["stripe_portal", "lago_portal"])
def biller(request: pytest.FixtureRequest) -> BillerPortal:
    under_test: BillerPortal = request.getfixturevalue(request.param)
    return under_test


async def test_session_url_is_the_url_the_biller_issued_when_the_customer_is_known(biller: BillerPortal) -> None:
    url = await biller.portal.session_url(biller.known, RETURN_URL, None)

    assert url.startswith(("https://", "http://"))
    assert biller.issued() == [url]


async def test_each_request_gets_the_url_the_biller_issued_for_it(biller: BillerPortal) -> None:
    first = await biller.portal.session_url(biller.known, RETURN_URL, None)
    second = await biller.portal.session_url(biller.known, RETURN_URL, None)

    assert biller.issued() == [first, second]


async def test_no_billing_account_when_the_biller_does_not_know_the_customer(biller: BillerPortal) -> None:
    with pytest.raises(NoBillingAccount):
        await biller.portal.session_url(biller.unknown, RETURN_URL, None)

    assert biller.issued() == []


async def test_biller_unavailable_when_the_biller_fails_with_a_5xx(biller: BillerPortal) -> None:
    biller.fail_next(503, None)

    with pytest.raises(BillerUnavailable) as raised:
        await biller.portal.session_url(biller.known, RETURN_URL, None)

    assert raised.value.cause == "server_error"
    assert biller.issued() == []


async def test_biller_rate_limited_with_its_retry_after_when_the_biller_answers_429(biller: BillerPortal) -> None:
    biller.fail_next(429, 7)

    with pytest.raises(BillerRateLimited) as raised:
        await biller.portal.session_url(biller.known, RETURN_URL, None)

    assert raised.value.retry_after_s == 7


async def test_biller_unavailable_not_no_account_when_the_biller_refuses_our_key(biller: BillerPortal) -> None:
    biller.fail_next(401, None)

    with pytest.raises(BillerUnavailable) as raised:
        await biller.portal.session_url(biller.known, RETURN_URL, None)

    assert raised.value.cause == "auth"


async def test_a_failure_does_not_stick_when_the_biller_recovers(biller: BillerPortal) -> None:
    biller.fail_next(500, None)
    with pytest.raises(BillerUnavailable):
        await biller.portal.session_url(biller.known, RETURN_URL, None)

    url = await biller.portal.session_url(biller.known, RETURN_URL, None)

    assert biller.issued() == [url]
