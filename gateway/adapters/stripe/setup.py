"""`gateway stripe-setup` against Stripe: find or create the meter, the product and the metered price.

Reached through the official SDK; SDK errors become SetupError, whose message is one line an operator can act on.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal

import msgspec
import stripe

from gateway.adapters.stripe.errors import operator_message
from gateway.adapters.stripe.meter import CUSTOMER_KEY, VALUE_KEY
from gateway.adapters.stripe.price_plan import PricePlan, plain
from gateway.domain.errors import SetupError

# Set on the product and the price so that a second run finds what the first one created.
METADATA_KEY = "ringside_gateway_event_name"

Action = Literal["found", "created", "would_create", "replaced", "would_replace"]


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
            raise SetupError(f"Stripe refused STRIPE_API_KEY: {operator_message(exc)}") from None
        except stripe.APIConnectionError as exc:
            raise SetupError(f"cannot reach Stripe: {operator_message(exc)}") from None
        except stripe.StripeError as exc:
            raise SetupError(f"Stripe refused the request: {operator_message(exc)}") from None
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
