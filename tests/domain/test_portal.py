"""The portal's return-URL rule and flows: no open redirect, whatever shape the URL takes."""

from __future__ import annotations

import pytest

from gateway.domain.errors import InvalidReturnUrl, PortalAuthError
from gateway.domain.portal import PortalFlow, ReturnUrlPolicy, TokenLifetime, UrlPrefix

DEFAULT = "https://good.example.com/account"
POLICY = ReturnUrlPolicy.build(
    DEFAULT,
    ["https://good.example.com/billing", "https://app.example.com:8443/", "http://localhost:3000/dev/"],
)


def test_resolves_to_the_default_when_none_is_requested() -> None:
    assert POLICY.resolve(None) == DEFAULT
    assert POLICY.resolve("") == DEFAULT


def test_accepts_the_default_itself_when_requested_verbatim() -> None:
    assert ReturnUrlPolicy.build(DEFAULT).resolve(DEFAULT) == DEFAULT


@pytest.mark.parametrize(
    "url",
    [
        "https://good.example.com/billing",
        "https://good.example.com/billing/",
        "https://good.example.com/billing/invoices?tab=2#top",
        "https://good.example.com/billing?from=portal",
        "https://GOOD.Example.COM/billing",
        "HTTPS://good.example.com/billing",
        "https://good.example.com:443/billing",
        "https://app.example.com:8443/",
        "https://app.example.com:8443",
        "https://app.example.com:8443/anything/below",
        "http://localhost:3000/dev/page",
        "http://localhost:3000/dev",
    ],
)
def test_accepts_urls_under_an_allowed_prefix(url: str) -> None:
    assert POLICY.resolve(url) == url


@pytest.mark.parametrize(
    "url",
    [
        # another host, however it is dressed up
        "https://evil.net/billing",
        "https://good.example.com.evil.net/billing",
        "https://evilgood.example.com/billing",
        "https://sub.good.example.com/billing",
        "https://good.example.com@evil.net/billing",
        "https://good.example.com:443@evil.net/billing",
        "https://user:pass@good.example.com/billing",
        "https://good.example.com\\@evil.net/billing",
        "https://good.example.com\\.evil.net/billing",
        "https://good%2eexample.com/billing",
        "https://good.example.com./billing",
        # scheme and port changes
        "http://good.example.com/billing",
        "javascript://good.example.com/billing%0aalert(1)",
        "ftp://good.example.com/billing",
        "https://good.example.com:8443/billing",
        "https://app.example.com/",
        "https://good.example.com:notaport/billing",
        # relative and scheme-relative
        "//evil.net/billing",
        "///evil.net/billing",
        "/billing",
        "billing",
        "https:evil.net/billing",
        "https:/good.example.com/billing",
        # outside the path prefix
        "https://good.example.com/",
        "https://good.example.com/billingx",
        "https://good.example.com/billing-evil",
        "https://good.example.com/Billing",
        "https://good.example.com/admin",
        "https://good.example.com/account/other",
        "http://localhost:3000/devx",
        # dot segments a browser would resolve out of the prefix, plain or encoded
        "https://good.example.com/billing/../admin",
        "https://good.example.com/billing/%2e%2e/admin",
        "https://good.example.com/billing/%2E%2E%2Fadmin",
        "https://good.example.com/billing%2F..%2Fadmin",
        "https://good.example.com/billing/./x",
        # characters browsers strip or reinterpret
        "https://good.example.com/billing\t",
        "https://good.example.com/bil\nling",
        " https://good.example.com/billing",
        "https://good.example.com/billing/ x",
        "https://good.example.com/billing/\u00e9",
        "https://good.example.com/billing/" + "a" * 2100,
    ],
)
def test_refuses_urls_outside_every_allowed_prefix(url: str) -> None:
    with pytest.raises(InvalidReturnUrl) as refused:
        POLICY.resolve(url)

    assert refused.value.code == "invalid_return_url"


def test_refuses_every_requested_url_but_the_default_when_the_allow_list_is_empty() -> None:
    policy = ReturnUrlPolicy.build(DEFAULT)

    with pytest.raises(InvalidReturnUrl):
        policy.resolve("https://good.example.com/account/sub")


def test_prefix_with_trailing_slash_admits_only_what_lies_below_it() -> None:
    prefix = UrlPrefix.parse("https://good.example.com/billing/")
    policy = ReturnUrlPolicy(DEFAULT, (prefix,))

    assert policy.resolve("https://good.example.com/billing/x") == "https://good.example.com/billing/x"
    with pytest.raises(InvalidReturnUrl):
        policy.resolve("https://good.example.com/billingx")


@pytest.mark.parametrize(
    "entry",
    [
        "good.example.com/billing",
        "//good.example.com",
        "https://good.example.com/billing?x=1",
        "https://good.example.com/billing#frag",
        "https://user@good.example.com/",
        "ftp://good.example.com/",
        "https:///nohost",
    ],
)
def test_refuses_to_build_from_an_entry_that_is_not_a_plain_http_url(entry: str) -> None:
    with pytest.raises(ValueError, match=r"good\.example\.com|nohost"):
        ReturnUrlPolicy.build(DEFAULT, [entry])


def test_refuses_to_build_when_the_default_is_not_absolute() -> None:
    with pytest.raises(ValueError, match="/account"):
        ReturnUrlPolicy.build("/account")


@pytest.mark.parametrize(
    ("value", "flow"), [(None, None), ("", None), ("payment_method_update", PortalFlow.PAYMENT_METHOD_UPDATE)]
)
def test_parses_flow_names(value: str | None, flow: PortalFlow | None) -> None:
    assert PortalFlow.parse(value) is flow


def test_refuses_unknown_flow_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="payment_method_update, subscription_cancel, subscription_update"):
        PortalFlow.parse("subscription_update_confirm")


def test_only_subscription_flows_need_a_subscription() -> None:
    assert [flow for flow in PortalFlow if flow.needs_subscription] == [
        PortalFlow.SUBSCRIPTION_CANCEL,
        PortalFlow.SUBSCRIPTION_UPDATE,
    ]


# -- token lifetime --------------------------------------------------------------------------------------------------


def test_token_lifetime_refuses_a_token_minted_for_longer_than_the_maximum() -> None:
    lifetime = TokenLifetime(max_age_s=86_400, link_max_ttl_s=300)

    lifetime.check(issued_at=1_000, expires_at=1_000 + 86_400, now=1_000, in_url=False)
    with pytest.raises(PortalAuthError, match="86400"):
        lifetime.check(issued_at=1_000, expires_at=1_000 + 86_401, now=1_000, in_url=False)


def test_token_lifetime_holds_a_url_token_to_the_link_lifetime_from_now() -> None:
    lifetime = TokenLifetime(max_age_s=86_400, link_max_ttl_s=300)

    lifetime.check(issued_at=1_000, expires_at=1_300, now=1_000, in_url=True)
    with pytest.raises(PortalAuthError, match="URL"):
        lifetime.check(issued_at=1_000, expires_at=1_301, now=1_000, in_url=True)
