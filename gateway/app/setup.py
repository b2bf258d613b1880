"""Set-up commands: the Stripe meter, product and metered price (`gateway stripe-setup`) and the Ringside webhook
registration (`gateway ringside-register`). Steps 1 and 2 of the tutorial, one command each, safe to run twice.

Stripe is reached through the official SDK (CONTRACT 2), Ringside through httpx. Vendor errors are translated here
into SetupError, whose message is one line an operator can act on; nothing named `stripe.*` or `httpx.*` leaves.
"""

from __future__ import annotations

import decimal
import os
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import stripe

from gateway.domain.errors import GatewayError

# Stripe: `unit_amount_decimal` is "a decimal value in cents ... with at most 12 decimal places" (OpenAPI excerpt).
MAX_PRICE_PLACES = 12
# What the gateway puts in each meter event's payload (CONTRACT 2); the meter must read the same keys.
CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"
# Set on the product and the price so that a second run finds what the first one created.
METADATA_KEY = "ringside_gateway_event_name"
WEBHOOK_PATH = "/webhooks/ringside"
# Ringside's webhooks reference names POST /v1/webhook_endpoints; its docs also name POST /v1/webhooks (issue 7).
RINGSIDE_PATHS = ("/v1/webhook_endpoints", "/v1/webhooks")
DEFAULT_EVENTS = ("chat.completion.finished",)

Action = Literal["found", "created", "would_create", "replaced", "would_replace"]

_EXACT = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero])


class SetupError(GatewayError):
    code = "setup_failed"
    default_message = "set-up failed"


# -- the price arithmetic ---------------------------------------------------------------------------------------


def unit_amount_decimal(units_per_usd: int, markup: Decimal) -> Decimal:
    """The price of one meter unit in cents: 100 cents x markup / units per dollar, exactly.

    At 100,000 units per USD and markup 1.3, one unit costs 0.0013 cents. Raises SetupError when the result is not
    a decimal with at most 12 places (Stripe's limit), rather than rounding: a rounded price would bill every
    customer a little more or less than the markup says, on every unit.
    """
    if not markup.is_finite() or markup <= 0:
        raise SetupError(f"the markup must be a positive number, not {markup}")
    if units_per_usd <= 0:
        raise SetupError("GATEWAY_UNITS_PER_USD must be a positive integer")
    try:
        cents = _EXACT.divide(_EXACT.multiply(Decimal(100), markup), Decimal(units_per_usd))
    except decimal.Inexact:
        cents = None
    places = None if cents is None else _places(cents)
    if cents is None or places is None or places > MAX_PRICE_PLACES:
        raise SetupError(
            f"100 cents x markup {markup} / {units_per_usd} units per USD is not a decimal with at most "
            f"{MAX_PRICE_PLACES} places (Stripe's limit for unit_amount_decimal); pick GATEWAY_UNITS_PER_USD and "
            "--markup so that it is (a power of ten for the units works with any markup of a few decimals)"
        )
    return cents.normalize() if places > 0 else cents.quantize(Decimal(1))


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def plain(value: Decimal) -> str:
    """A decimal without exponent: Stripe reads "0.0013", and a person reads it better than "1.3E-3"."""
    return format(value, "f")


# -- Stripe: meter, product, price ------------------------------------------------------------------------------


class PricePlan(msgspec.Struct, frozen=True):
    """What `stripe-setup` makes sure exists."""

    event_name: str
    currency: str
    units_per_usd: int
    markup: Decimal
    unit_amount_decimal: Decimal

    @property
    def lookup_key(self) -> str:
        return f"ringside_gateway_{self.event_name}_{self.currency}"


class Resource(msgspec.Struct, frozen=True):
    """One Stripe object of the set-up: its id (None when a dry run would create it) and what was done."""

    kind: str
    id: str | None
    action: Action
    detail: str


class SetupReport(msgspec.Struct, frozen=True):
    mode: str
    meter: Resource
    product: Resource
    price: Resource
    environment: dict[str, str]

    @property
    def resources(self) -> tuple[Resource, Resource, Resource]:
        return (self.meter, self.product, self.price)

    @property
    def created_nothing(self) -> bool:
        return all(resource.action == "found" for resource in self.resources)


def plan_price(event_name: str, currency: str, units_per_usd: int, markup: Decimal) -> PricePlan:
    currency = currency.strip().lower()
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise SetupError(f"--currency must be a three-letter ISO code such as usd, not {currency!r}")
    return PricePlan(event_name, currency, units_per_usd, markup, unit_amount_decimal(units_per_usd, markup))


def stripe_client(api_key: str, api_base: str | None, timeout_s: float) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        # Set-up calls are few and safe to retry: the SDK keeps one Idempotency-Key across its own retries of a
        # create, so a retried create after a dropped connection cannot make a second meter, product or price.
        max_network_retries=2,
        http_client=stripe.HTTPXClient(timeout=timeout_s, allow_sync_methods=True),
    )


class StripeSetup:
    """Find-or-create the meter, the product and the metered price of a PricePlan.

    Invariants: objects are found by listing (the meter by `event_name` among active meters, the product by our
    metadata, the price by its lookup key), so a second run creates nothing; a dry run only lists; an existing
    object that does not fit (a meter reading other payload keys, a price with another amount) is never changed
    silently: the run stops with a SetupError, or, for the price and with `replace_price`, creates a new price and
    moves the lookup key to it (Stripe prices are immutable).
    """

    def __init__(self, client: stripe.StripeClient, *, live: bool) -> None:
        self._client = client
        self._mode = "live" if live else "test"

    def run(self, plan: PricePlan, *, dry_run: bool = False, replace_price: bool = False) -> SetupReport:
        try:
            meter = self._meter(plan, dry_run)
            product = self._product(plan, dry_run)
            price = self._price(plan, meter.id, product.id, dry_run, replace_price)
        except stripe.AuthenticationError as exc:
            raise SetupError(f"Stripe refused STRIPE_API_KEY: {_stripe_message(exc)}") from None
        except stripe.APIConnectionError as exc:
            raise SetupError(f"cannot reach Stripe: {_stripe_message(exc)}") from None
        except stripe.StripeError as exc:
            raise SetupError(f"Stripe refused the request: {_stripe_message(exc)}") from None
        environment = {
            "GATEWAY_METER_EVENT_NAME": plan.event_name,
            # The price assumes this scale: the gateway must convert dollars to units with the same number.
            "GATEWAY_UNITS_PER_USD": str(plan.units_per_usd),
        }
        return SetupReport(self._mode, meter, product, price, environment)

    def _meter(self, plan: PricePlan, dry_run: bool) -> Resource:
        listed = self._client.v1.billing.meters.list({"status": "active", "limit": 100})
        found = next((m for m in _all(listed) if m.get("event_name") == plan.event_name), None)
        detail = f"event_name {plan.event_name}: sum of {VALUE_KEY} per {CUSTOMER_KEY}"
        if found is not None:
            _check_meter(found)
            return Resource("meter", found["id"], "found", detail)
        if dry_run:
            return Resource("meter", None, "would_create", detail)
        created = self._client.v1.billing.meters.create(
            {
                "display_name": "Ringside spend",
                "event_name": plan.event_name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"type": "by_id", "event_payload_key": CUSTOMER_KEY},
                "value_settings": {"event_payload_key": VALUE_KEY},
            }
        )
        return Resource("meter", created.id, "created", detail)

    def _product(self, plan: PricePlan, dry_run: bool) -> Resource:
        listed = self._client.v1.products.list({"active": True, "limit": 100})
        found = next((p for p in _all(listed) if (p.get("metadata") or {}).get(METADATA_KEY) == plan.event_name), None)
        if found is not None:
            return Resource("product", found["id"], "found", str(found.get("name")))
        if dry_run:
            return Resource("product", None, "would_create", "Ringside usage")
        created = self._client.v1.products.create(
            {"name": "Ringside usage", "metadata": {METADATA_KEY: plan.event_name}}
        )
        return Resource("product", created.id, "created", "Ringside usage")

    def _price(
        self, plan: PricePlan, meter_id: str | None, product_id: str | None, dry_run: bool, replace: bool
    ) -> Resource:
        amount = plain(plan.unit_amount_decimal)
        detail = (
            f"{amount} cents per unit ({plan.currency.upper()}, monthly, metered; "
            f"{plan.units_per_usd} units per USD x markup {plain(plan.markup)})"
        )
        listed = self._client.v1.prices.list({"lookup_keys": [plan.lookup_key], "active": True, "limit": 10})
        found = next(iter(_all(listed)), None)
        if found is not None:
            differences = _price_differences(found, plan, meter_id, product_id)
            if not differences:
                return Resource("price", found["id"], "found", detail)
            if not replace:
                raise SetupError(
                    f"price {found['id']} (lookup key {plan.lookup_key}) differs: {'; '.join(differences)}. Prices "
                    "cannot be changed: rerun with --replace-price to create a new one and move the lookup key to it "
                    "(existing subscriptions keep the old price until you migrate them)"
                )
        action: Action = "created" if found is None else "replaced"
        if dry_run or meter_id is None or product_id is None:
            return Resource("price", None, "would_create" if found is None else "would_replace", detail)
        created = self._client.v1.prices.create(
            {
                "currency": plan.currency,
                "product": product_id,
                "billing_scheme": "per_unit",
                # A plain string on purpose: the SDK sends a Decimal as str(), and str(Decimal("1E-10")) is "1E-10".
                "unit_amount_decimal": amount,  # type: ignore[typeddict-item]
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
                "lookup_key": plan.lookup_key,
                # An archived price may still hold the key; the active one was handled above.
                "transfer_lookup_key": True,
                "nickname": f"Ringside spend x {plain(plan.markup)}",
                "metadata": {
                    METADATA_KEY: plan.event_name,
                    "units_per_usd": str(plan.units_per_usd),
                    "markup": plain(plan.markup),
                },
            }
        )
        return Resource("price", created.id, action, detail)


def _all(listed: Any) -> Iterator[dict[str, Any]]:
    """Every object of a Stripe list, across pages, as plain dicts."""
    for item in listed.auto_paging_iter():
        yield item.to_dict()


def _check_meter(meter: dict[str, Any]) -> None:
    mapping = meter.get("customer_mapping") or {}
    values = meter.get("value_settings") or {}
    formula = (meter.get("default_aggregation") or {}).get("formula")
    problems = []
    if mapping.get("event_payload_key", CUSTOMER_KEY) != CUSTOMER_KEY:
        problems.append(f"it maps customers by {mapping.get('event_payload_key')!r}, not {CUSTOMER_KEY!r}")
    if values.get("event_payload_key", VALUE_KEY) != VALUE_KEY:
        problems.append(f"it reads values from {values.get('event_payload_key')!r}, not {VALUE_KEY!r}")
    if formula != "sum":
        problems.append(f"it aggregates with {formula!r}, not 'sum'")
    if problems:
        raise SetupError(
            f"meter {meter['id']} (event_name {meter.get('event_name')}) does not fit the gateway: "
            f"{'; '.join(problems)}. Deactivate it in Stripe or set GATEWAY_METER_EVENT_NAME to another name"
        )


def _price_differences(
    price: dict[str, Any], plan: PricePlan, meter_id: str | None, product_id: str | None
) -> list[str]:
    recurring = price.get("recurring") or {}
    differences = []
    found_amount = price.get("unit_amount_decimal")
    if found_amount is None or Decimal(str(found_amount)) != plan.unit_amount_decimal:
        differences.append(f"{found_amount} cents per unit, not {plain(plan.unit_amount_decimal)}")
    if recurring.get("meter") != meter_id:
        differences.append(f"meter {recurring.get('meter')}, not {meter_id or 'a new one'}")
    if price.get("product") != product_id:
        differences.append(f"product {price.get('product')}, not {product_id or 'a new one'}")
    if recurring.get("usage_type") != "metered" or recurring.get("interval") != "month":
        differences.append("not a monthly metered price")
    if str(price.get("currency", "")).lower() != plan.currency:
        differences.append(f"currency {price.get('currency')}, not {plan.currency}")
    return differences


def _stripe_message(exc: stripe.StripeError) -> str:
    message = exc.user_message or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


# -- Ringside: webhook endpoint registration --------------------------------------------------------------------


class RegisteredEndpoint(msgspec.Struct, frozen=True):
    """A Ringside webhook endpoint. The signing secret is deliberately not part of it (see `register`)."""

    id: str
    url: str
    events: list[str]
    created_with: str


def webhook_url(url: str) -> str:
    """The gateway's webhook URL: `url` itself, or `url` + /webhooks/ringside when it names only a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SetupError(f"--url must be an http(s) URL such as https://billing.example.com, not {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=WEBHOOK_PATH)
    return urlunsplit(parts)


class RingsideRegistration:
    """Registers the gateway's URL with Ringside, which answers with the endpoint's signing secret, once.

    Invariants: the API key and the secret are never logged or put in an exception message; an endpoint already
    registered for the same URL is reported, not duplicated (a second endpoint would deliver every event twice,
    signed with a second secret), unless `force` is given.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def find(self, url: str) -> RegisteredEndpoint | None:
        """The endpoint registered for `url`, when Ringside lists endpoints; None when it does not or none is."""
        for path in RINGSIDE_PATHS:
            response = self._call("GET", path)
            if response.status_code in (404, 405):
                continue
            _raise_for_auth(response)
            if not response.is_success:
                return None
            for item in _items(_json(response)):
                if isinstance(item, dict) and item.get("url") == url:
                    return _endpoint(item, url, path)
            return None
        return None

    def register(self, url: str, events: Sequence[str], description: str) -> tuple[RegisteredEndpoint, str]:
        """Create the endpoint; returns it and its signing secret (shown by Ringside this one time only)."""
        body = {"url": url, "events": list(events), "description": description}
        for path in RINGSIDE_PATHS:
            response = self._call("POST", path, body)
            if response.status_code == 404 and path != RINGSIDE_PATHS[-1]:
                continue  # an API that only knows the other name
            _raise_for_auth(response)
            if response.status_code == 404:
                raise SetupError(
                    f"Ringside answered 404 to POST {' and POST '.join(RINGSIDE_PATHS)}: is RINGSIDE_API_BASE "
                    f"({self._client.base_url}) Ringside's API?"
                )
            if not response.is_success:
                raise SetupError(f"Ringside refused the registration: {_ringside_error(response)}")
            data = _json(response)
            data = data.get("data", data) if isinstance(data, dict) and isinstance(data.get("data"), dict) else data
            if not isinstance(data, dict):
                raise SetupError("Ringside's answer is not a JSON object")
            # Ringside's reference calls it `secret`; accept the common other spelling rather than lose it.
            secret = data.get("secret") or data.get("signing_secret")
            if not isinstance(secret, str) or not secret:
                raise SetupError(
                    f"Ringside registered endpoint {data.get('id')} but its answer has no signing secret: rotate "
                    "the endpoint's secret in Ringside's dashboard"
                )
            return _endpoint(data, url, path, events), secret
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise SetupError(f"cannot reach Ringside at {self._client.base_url}: {type(exc).__name__}") from None


def ringside_client(api_key: str, api_base: str, timeout_s: float = 15.0) -> httpx.Client:
    return httpx.Client(
        base_url=api_base.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        timeout=timeout_s,
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _items(data: Any) -> Iterable[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return list(data["data"])
    return ()


def _endpoint(data: dict[str, Any], url: str, path: str, events: Sequence[str] = ()) -> RegisteredEndpoint:
    listed = data.get("events")
    return RegisteredEndpoint(
        id=str(data.get("id") or "?"),
        url=str(data.get("url") or url),
        events=[str(e) for e in listed] if isinstance(listed, list) else list(events),
        created_with=f"POST {path}",
    )


def _raise_for_auth(response: httpx.Response) -> None:
    if response.status_code in (401, 403):
        raise SetupError(f"Ringside refused RINGSIDE_API_KEY: {_ringside_error(response)}")


def _ringside_error(response: httpx.Response) -> str:
    """`<status> <code>: <message>` from Ringside's error body, whatever its exact shape."""
    data = _json(response)
    error = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        text = ": ".join(str(part) for part in (code, message) if part)
    else:
        text = str(error or response.text[:200])
    return " ".join(f"{response.status_code} {text}".split())


def check_secret_file(path: Path) -> None:
    """Fail before registering, so that a secret shown once is never lost to an unwritable path."""
    if path.exists():
        raise SetupError(f"{path} already exists: refusing to overwrite a signing secret; choose another path")
    if not path.parent.is_dir():
        raise SetupError(f"{path.parent} is not a directory")
    if not os.access(path.parent, os.W_OK):
        raise SetupError(f"{path.parent} is not writable")


def write_secret_file(path: Path, secret: str) -> None:
    """Write `secret` to a new file readable by its owner only (mode 0600), durably.

    O_EXCL: never replaces a file (a live secret could be in it). The mode is given at creation, so the secret is
    never readable by others, not even for an instant, and set again with fchmod in case a umask narrowed it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        # No trailing newline: a file read verbatim (a container secret) would otherwise carry it into the secret.
        os.write(fd, secret.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
