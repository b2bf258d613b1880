"""The customer billing portal API (README, "Customer billing portal") through the HTTP app and the fake Stripe."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from dependency_injector import providers
from litestar.testing import TestClient

from gateway.adapters.clock import FrozenClock
from gateway.app.container import Container, build_container
from gateway.app.environment import load_settings
from gateway.app.server import create_app
from gateway.app.settings_checks import SettingsError
from tests.builders import settings
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

URL = "/api/portal"
SESSIONS = "/v1/billing_portal/sessions"
# 64 bytes: long enough that minting the HS512 and HS384 tokens the gateway must refuse draws no key-length warning.
PORTAL_SECRET = "portal-secret-for-tests-only-" + "0123456789abcdef" * 2 + "012345"
RETURN_URL = "https://app.example.com/account"
ALLOWED = "https://app.example.com/billing, https://app.example.com:8443/"
ALICE, ALICE_STRIPE = "cust_ALICE", "cus_ALICE"
BOB, BOB_STRIPE = "cust_BOB", "cus_BOB"


def mint(
    sub: str | None = ALICE,
    *,
    secret: str = PORTAL_SECRET,
    algorithm: str = "HS256",
    ttl: int = 300,
    iat_offset: int = 0,
    drop: tuple[str, ...] = (),
    **extra: Any,
) -> str:
    """A token as the host application mints it (README): HS256 over sub, iat, exp (and `extra` claims)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now + iat_offset, "exp": now + ttl, **extra}
    for name in drop:
        claims.pop(name)
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(sub: str = ALICE) -> str:
    """An `alg: none` token: header and claims, and an empty signature."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': sub, 'iat': now, 'exp': now + 300})}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Portal:
    """The app under test and the fake Stripe it talks to."""

    def __init__(self, client: TestClient[Any], stripe: FakeStripe, container: Container) -> None:
        self.client = client
        self.stripe = stripe
        self.container = container

    def post(self, token: str | None = None, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        headers = bearer(token) if token is not None else {}
        headers.update(kwargs.pop("headers", {}))
        return self.client.post(URL, json=body, headers=headers, **kwargs)

    def get(self, token: str | None = None, **params: str) -> httpx.Response:
        headers = bearer(token) if token is not None else {}
        return self.client.get(URL, params=params, headers=headers, follow_redirects=False)

    def follow_link(self, token: str, **params: str) -> httpx.Response:
        """A plain link: the token in the query string, no Authorization header."""
        return self.client.get(URL, params={"token": token, **params}, follow_redirects=False)

    def customers_of_sessions(self) -> list[str]:
        return [session["customer"] for session in self.stripe.portal_sessions]


def _container(clock: FrozenClock, server: FakeStripe | None, **overrides: Any) -> Container:
    stripe: dict[str, Any] = {"timeout_s": 2.0}
    if server is not None:
        stripe |= {"api_key": FAKE_API_KEY, "api_base": server.url}
    overrides["stripe"] = stripe | overrides.get("stripe", {})
    overrides.setdefault("portal_jwt_secret", PORTAL_SECRET)
    overrides.setdefault("portal_return_url", RETURN_URL)
    overrides.setdefault("portal_allowed_return_urls", [u.strip() for u in ALLOWED.split(",")])
    container = build_container(settings(**overrides))
    container.clock.override(providers.Object(clock))
    customers = container.customers()
    asyncio.run(customers.set(ALICE, ALICE_STRIPE))
    asyncio.run(customers.set(BOB, BOB_STRIPE))
    return container


@pytest.fixture
def portal(clock: FrozenClock, fake_stripe: FakeStripe) -> Iterator[Portal]:
    container = _container(clock, fake_stripe)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        yield Portal(client, fake_stripe, container)


def _assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


# -- happy paths ---------------------------------------------------------------------------------------------------


def test_post_returns_the_session_url_for_the_token_users_own_customer(portal: Portal) -> None:
    response = portal.post(mint(ALICE))

    assert response.status_code == 200
    [session] = portal.stripe.portal_sessions
    assert response.json() == {"url": session["url"]}
    assert session["customer"] == ALICE_STRIPE
    assert session["return_url"] == RETURN_URL
    assert session["flow"] is None
    assert response.headers["Cache-Control"] == "no-store"
    assert portal.stripe.invalid_requests == []


def test_get_redirects_303_to_the_session_when_the_token_is_in_the_header(portal: Portal) -> None:
    response = portal.get(mint(ALICE))

    assert response.status_code == 303
    [session] = portal.stripe.portal_sessions
    assert response.headers["Location"] == session["url"]
    assert session["customer"] == ALICE_STRIPE
    assert session["return_url"] == RETURN_URL
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert portal.stripe.invalid_requests == []


def test_get_redirects_303_when_a_short_lived_token_is_in_the_link(portal: Portal) -> None:
    response = portal.follow_link(mint(ALICE, ttl=120))

    assert response.status_code == 303
    assert portal.customers_of_sessions() == [ALICE_STRIPE]
    assert portal.stripe.invalid_requests == []


def test_uses_an_allowed_requested_return_url_and_flow(portal: Portal) -> None:
    wanted = "https://app.example.com/billing/invoices?tab=paid"

    response = portal.post(mint(ALICE), {"return_url": wanted, "flow": "payment_method_update"})

    assert response.status_code == 200
    [session] = portal.stripe.portal_sessions
    assert session["return_url"] == wanted
    assert session["flow"]["type"] == "payment_method_update"
    assert session["flow"]["after_completion"]["type"] == "redirect"
    assert session["flow"]["after_completion"]["redirect"] == {"return_url": wanted}
    assert portal.stripe.invalid_requests == []


def test_get_takes_return_url_and_flow_from_the_query(portal: Portal) -> None:
    wanted = "https://app.example.com:8443/settings"

    response = portal.get(mint(ALICE), return_url=wanted, flow="payment_method_update")

    assert response.status_code == 303
    [session] = portal.stripe.portal_sessions
    assert (session["return_url"], session["flow"]["type"]) == (wanted, "payment_method_update")


def test_cancel_flow_targets_the_customers_only_live_subscription(portal: Portal) -> None:
    portal.stripe.subscriptions += [
        {"id": "sub_OLD", "customer": ALICE_STRIPE, "status": "canceled"},
        {"id": "sub_ALICE", "customer": ALICE_STRIPE, "status": "active"},
        {"id": "sub_BOB", "customer": BOB_STRIPE, "status": "active"},
    ]

    response = portal.post(mint(ALICE), {"flow": "subscription_cancel"})

    assert response.status_code == 200
    [session] = portal.stripe.portal_sessions
    assert session["flow"]["type"] == "subscription_cancel"
    assert session["flow"]["subscription_cancel"] == {"subscription": "sub_ALICE"}
    assert portal.stripe.invalid_requests == []


def test_passes_the_configured_portal_configuration(clock: FrozenClock, fake_stripe: FakeStripe) -> None:
    container = _container(clock, fake_stripe, stripe={"portal_configuration_id": "bpc_CONFIGURED"})
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        response = client.post(URL, headers=bearer(mint(ALICE)))

    assert response.status_code == 200
    assert [s["configuration"] for s in fake_stripe.portal_sessions] == ["bpc_CONFIGURED"]
    assert fake_stripe.invalid_requests == []


def test_accepts_a_token_that_expired_within_the_leeway(portal: Portal) -> None:
    response = portal.post(mint(ALICE, ttl=-10))

    assert response.status_code == 200


# -- who the user is -----------------------------------------------------------------------------------------------


def test_a_token_for_one_user_never_yields_a_session_for_another(portal: Portal) -> None:
    smuggled = {"customer": BOB_STRIPE, "customer_id": BOB, "sub": BOB, "billing_customer": BOB_STRIPE}

    posted = portal.post(mint(ALICE), smuggled)
    got = portal.client.get(
        URL, params={"customer": BOB_STRIPE, "sub": BOB}, headers=bearer(mint(ALICE)), follow_redirects=False
    )
    bobs = portal.post(mint(BOB))

    assert (posted.status_code, got.status_code, bobs.status_code) == (200, 303, 200)
    assert portal.customers_of_sessions() == [ALICE_STRIPE, ALICE_STRIPE, BOB_STRIPE]


def test_the_header_token_wins_over_a_token_in_the_query(portal: Portal) -> None:
    response = portal.client.get(URL, params={"token": mint(BOB)}, headers=bearer(mint(ALICE)), follow_redirects=False)

    assert response.status_code == 303
    assert portal.customers_of_sessions() == [ALICE_STRIPE]


# -- refusals: authentication --------------------------------------------------------------------------------------


def test_refuses_401_with_a_bare_challenge_when_the_header_is_missing(portal: Portal) -> None:
    response = portal.post()

    _assert_refused(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="billing-portal"'
    assert portal.stripe.requests == []


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        pytest.param("Bearer not-a-jwt", "invalid_token", id="malformed"),
        pytest.param("Bearer a.b.c", "invalid_token", id="malformed-segments"),
        pytest.param("Bearer ", "invalid_token", id="empty"),
        pytest.param(f"Basic {mint(ALICE)}", "invalid_token", id="not-bearer"),
        pytest.param(mint(ALICE), "invalid_token", id="no-scheme"),
        pytest.param(f"Bearer {mint(ALICE, ttl=-3600)}", "token_expired", id="expired"),
        pytest.param(f"Bearer {mint(ALICE, secret=PORTAL_SECRET[::-1])}", "invalid_token", id="wrong-key"),
        pytest.param(f"Bearer {unsigned(ALICE)}", "invalid_token", id="alg-none"),
        pytest.param(f"Bearer {mint(ALICE, algorithm='HS512')}", "invalid_token", id="HS512"),
        pytest.param(f"Bearer {mint(ALICE, algorithm='HS384')}", "invalid_token", id="HS384"),
        pytest.param(f"Bearer {mint(ALICE, drop=('exp',))}", "invalid_token", id="no-exp"),
        pytest.param(f"Bearer {mint(ALICE, drop=('iat',))}", "invalid_token", id="no-iat"),
        pytest.param(f"Bearer {mint(None)}", "invalid_token", id="null-sub"),
        pytest.param(f"Bearer {mint('')}", "invalid_token", id="empty-sub"),
        pytest.param(f"Bearer {mint(ALICE, drop=('sub',))}", "invalid_token", id="no-sub"),
        pytest.param(f"Bearer {mint(ALICE, iat_offset=600)}", "invalid_token", id="issued-in-the-future"),
    ],
)
def test_refuses_401_with_an_invalid_token_challenge_when_the_token_is_bad(
    portal: Portal, authorization: str, code: str
) -> None:
    posted = portal.post(headers={"Authorization": authorization})
    got = portal.client.get(URL, headers={"Authorization": authorization}, follow_redirects=False)

    for response in (posted, got):
        _assert_refused(response, 401, code)
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="billing-portal", error="invalid_token"')
    assert portal.stripe.requests == []


def test_says_which_algorithm_is_expected_when_alg_is_none(portal: Portal) -> None:
    response = portal.post(unsigned(ALICE))

    assert "HS256" in response.json()["error"]["message"]


def test_refuses_a_long_lived_token_in_a_link(portal: Portal) -> None:
    response = portal.follow_link(mint(ALICE, ttl=3600))

    _assert_refused(response, 401, "invalid_token")
    assert portal.stripe.requests == []


def test_refuses_a_header_token_whose_lifetime_exceeds_the_maximum(portal: Portal) -> None:
    a_year = 365 * 86_400

    posted = portal.post(mint(ALICE, ttl=a_year))
    got = portal.get(mint(ALICE, ttl=a_year))

    for response in (posted, got):
        _assert_refused(response, 401, "invalid_token")
        assert "86400" in response.json()["error"]["message"]
    assert portal.stripe.requests == []


def test_accepts_a_header_token_whose_lifetime_is_exactly_the_maximum(portal: Portal) -> None:
    response = portal.post(mint(ALICE, ttl=86_400))

    assert response.status_code == 200, response.text


def test_the_maximum_lifetime_is_configurable(clock: FrozenClock, fake_stripe: FakeStripe) -> None:
    container = _container(clock, fake_stripe, portal_jwt_max_age_s=600)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        refused = client.post(URL, headers=bearer(mint(ALICE, ttl=601)))
        accepted = client.post(URL, headers=bearer(mint(ALICE, ttl=600)))

    _assert_refused(refused, 401, "invalid_token")
    assert accepted.status_code == 200, accepted.text


@pytest.fixture
def strict_portal(clock: FrozenClock, fake_stripe: FakeStripe) -> Iterator[Portal]:
    """A portal whose tokens must name this gateway as their audience and the host application as their issuer."""
    container = _container(clock, fake_stripe, portal_jwt_audience="billing-gateway", portal_jwt_issuer="app.example")
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        yield Portal(client, fake_stripe, container)


def test_accepts_a_token_for_the_configured_audience_and_issuer(strict_portal: Portal) -> None:
    response = strict_portal.post(mint(ALICE, aud="billing-gateway", iss="app.example"))

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("claims", "fragment"),
    [
        pytest.param({"aud": "other-app", "iss": "app.example"}, "audience", id="other-audience"),
        pytest.param({"iss": "app.example"}, "'aud'", id="no-audience"),
        pytest.param({"aud": "billing-gateway", "iss": "evil.example"}, "issuer", id="other-issuer"),
        pytest.param({"aud": "billing-gateway"}, "'iss'", id="no-issuer"),
    ],
)
def test_refuses_a_token_minted_for_another_audience_or_by_another_issuer(
    strict_portal: Portal, claims: dict[str, str], fragment: str
) -> None:
    response = strict_portal.post(mint(ALICE, **claims))

    _assert_refused(response, 401, "invalid_token")
    assert fragment in response.json()["error"]["message"]
    assert strict_portal.stripe.requests == []


def test_ignores_aud_and_iss_when_no_audience_or_issuer_is_configured(portal: Portal) -> None:
    response = portal.post(mint(ALICE, aud="other-app", iss="anyone"))

    assert response.status_code == 200, response.text


def test_post_never_reads_a_token_from_the_query(portal: Portal) -> None:
    response = portal.client.post(URL, params={"token": mint(ALICE)})

    _assert_refused(response, 401, "missing_token")
    assert portal.stripe.requests == []


# -- refusals: the request and the customer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "return_url",
    [
        "https://evil.net/",
        "https://app.example.com.evil.net/billing",
        "https://app.example.com@evil.net/billing",
        "https://app.example.com\\@evil.net/billing",
        "http://app.example.com/billing",
        "https://app.example.com/billingx",
        "https://app.example.com/billing/../admin",
        "//evil.net/billing",
        "/billing",
        "javascript:alert(1)",
    ],
)
def test_refuses_400_when_the_return_url_is_hostile(portal: Portal, return_url: str) -> None:
    posted = portal.post(mint(ALICE), {"return_url": return_url})
    got = portal.get(mint(ALICE), return_url=return_url)

    _assert_refused(posted, 400, "invalid_return_url")
    _assert_refused(got, 400, "invalid_return_url")
    assert "Location" not in got.headers
    assert portal.stripe.requests == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"return_url": 42}', b'{"flow": "subscription_update_confirm"}', b'{"flow": 1}'],
)
def test_refuses_400_when_the_options_cannot_be_read(portal: Portal, body: bytes) -> None:
    response = portal.post(mint(ALICE), content=body, headers={"Content-Type": "application/json"})

    _assert_refused(response, 400, "invalid_request")
    assert portal.stripe.requests == []


def test_refuses_404_when_the_user_has_no_billing_account(portal: Portal) -> None:
    response = portal.post(mint("cust_UNMAPPED"))

    _assert_refused(response, 404, "no_billing_account")
    assert portal.stripe.requests == []


def test_refuses_404_when_stripe_does_not_know_the_mapped_customer(portal: Portal) -> None:
    portal.stripe.known_customers = {BOB_STRIPE}

    response = portal.post(mint(ALICE))

    _assert_refused(response, 404, "no_billing_account")
    assert portal.stripe.portal_sessions == []


def test_refuses_409_when_there_is_no_subscription_to_cancel(portal: Portal) -> None:
    portal.stripe.subscriptions.append({"id": "sub_BOB", "customer": BOB_STRIPE, "status": "active"})

    response = portal.post(mint(ALICE), {"flow": "subscription_cancel"})

    _assert_refused(response, 409, "flow_unavailable")
    assert portal.stripe.portal_sessions == []


# -- refusals: Stripe and configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_answers_503_when_stripe_fails(portal: Portal, status: int) -> None:
    portal.stripe.fail_next(1, status=status, path=SESSIONS)

    response = portal.post(mint(ALICE))

    _assert_refused(response, 503, "biller_unavailable")
    assert portal.stripe.portal_sessions == []


def test_answers_503_with_retry_after_when_stripe_rate_limits(portal: Portal) -> None:
    portal.stripe.fail_next(1, status=429, retry_after=7, path=SESSIONS)

    response = portal.get(mint(ALICE))

    _assert_refused(response, 503, "biller_rate_limited")
    assert response.headers["Retry-After"] == "7"


def test_answers_503_promptly_when_stripe_hangs(clock: FrozenClock, fake_stripe: FakeStripe) -> None:
    fake_stripe.hang_next(1, seconds=10, path=SESSIONS)
    container = _container(clock, fake_stripe, stripe={"timeout_s": 0.3})
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        started = time.monotonic()
        response = client.post(URL, headers=bearer(mint(ALICE)))
        elapsed = time.monotonic() - started

    _assert_refused(response, 503, "biller_unavailable")
    assert elapsed < 3


def test_answers_503_when_stripe_is_unreachable(clock: FrozenClock) -> None:
    container = _container(clock, None, stripe={"api_key": FAKE_API_KEY, "api_base": "http://127.0.0.1:9"})
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        response = client.post(URL, headers=bearer(mint(ALICE)))

    _assert_refused(response, 503, "biller_unavailable")


def test_answers_503_portal_not_configured_without_a_jwt_secret(clock: FrozenClock, fake_stripe: FakeStripe) -> None:
    container = _container(clock, fake_stripe, portal_jwt_secret=None, portal_return_url=None)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        response = client.post(URL, headers=bearer(mint(ALICE)))

    _assert_refused(response, 503, "portal_not_configured")
    assert "PORTAL_JWT_SECRET" in response.json()["error"]["message"]
    assert fake_stripe.requests == []


def test_answers_503_portal_not_configured_without_a_stripe_key(clock: FrozenClock) -> None:
    container = _container(clock, None)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        response = client.get(URL, headers=bearer(mint(ALICE)), follow_redirects=False)

    _assert_refused(response, 503, "portal_not_configured")
    assert "STRIPE_API_KEY" in response.json()["error"]["message"]


# -- settings ------------------------------------------------------------------------------------------------------


def test_reads_portal_settings_from_the_environment() -> None:
    loaded = load_settings(
        {
            "PORTAL_JWT_SECRET": PORTAL_SECRET,
            "PORTAL_RETURN_URL": RETURN_URL,
            "PORTAL_ALLOWED_RETURN_URLS": ALLOWED,
            "PORTAL_CONFIGURATION_ID": "bpc_1",
            "PORTAL_JWT_LEEWAY_S": "5",
            "PORTAL_LINK_TOKEN_MAX_TTL_S": "60",
            "PORTAL_JWT_AUDIENCE": "billing-gateway",
            "PORTAL_JWT_ISSUER": "https://app.example.com",
            "PORTAL_JWT_MAX_AGE_S": "3600",
        }
    )

    assert loaded.portal_jwt_secret is not None and loaded.portal_jwt_secret.reveal() == PORTAL_SECRET
    assert PORTAL_SECRET not in repr(loaded)
    assert loaded.portal_allowed_return_urls == ("https://app.example.com/billing", "https://app.example.com:8443/")
    assert (loaded.stripe.portal_configuration_id, loaded.portal_jwt_leeway_s, loaded.portal_link_token_max_ttl_s) == (
        "bpc_1",
        5.0,
        60,
    )
    assert (loaded.portal_jwt_audience, loaded.portal_jwt_issuer, loaded.portal_jwt_max_age_s) == (
        "billing-gateway",
        "https://app.example.com",
        3600,
    )


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"PORTAL_JWT_SECRET": "short", "PORTAL_RETURN_URL": RETURN_URL}, "32 bytes"),
        ({"PORTAL_JWT_SECRET": PORTAL_SECRET}, "PORTAL_RETURN_URL is required"),
        ({"PORTAL_JWT_SECRET": PORTAL_SECRET, "PORTAL_RETURN_URL": "/relative"}, "/relative"),
        (
            {"PORTAL_JWT_SECRET": PORTAL_SECRET, "PORTAL_RETURN_URL": RETURN_URL, "PORTAL_ALLOWED_RETURN_URLS": "//x"},
            "//x",
        ),
        ({"PORTAL_JWT_LEEWAY_S": "3600"}, "PORTAL_JWT_LEEWAY_S"),
        ({"PORTAL_JWT_MAX_AGE_S": "0"}, "PORTAL_JWT_MAX_AGE_S"),
    ],
)
def test_refuses_unusable_portal_settings(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        load_settings(environ)


def test_answers_502_when_stripe_refuses_for_another_reason(portal: Portal) -> None:
    portal.stripe.fail_next(1, status=400, message="No such configuration: 'bpc_gone'", path=SESSIONS)

    response = portal.post(mint(ALICE))

    _assert_refused(response, 502, "biller_rejected")


def test_answers_503_when_the_stripe_key_is_refused(clock: FrozenClock, fake_stripe: FakeStripe) -> None:
    container = _container(clock, fake_stripe, stripe={"api_key": "sk_test_revoked"})
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        response = client.post(URL, headers=bearer(mint(ALICE)))

    _assert_refused(response, 503, "biller_unavailable")
