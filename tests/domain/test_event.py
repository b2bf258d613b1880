"""Specification of the tolerant Ringside event parser (docs/design.md, "Event").

Ringside documents `{"id", "type", "data"}` and no example payload: every field we need is looked up in each place
the contract allows, everything else is ignored, and money is an exact decimal, never a float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from gateway.domain.event import (
    MAX_EVENT_ID_CHARS,
    Event,
    InvalidEvent,
    body_key,
    parse_event,
)

BILLABLE = "chat.completion.finished"


def envelope(event_id: str = "evt_PARSED", data: Any = None, **fields: Any) -> bytes:
    """A Ringside delivery body; `fields` are extra top-level keys."""
    document: dict[str, Any] = {"id": event_id, "type": BILLABLE, **fields}
    if data is not None:
        document["data"] = data
    return json.dumps(document).encode()


# -- cost ------------------------------------------------------------------------------------------------------


def test_cost_is_an_exact_decimal_when_given_as_a_json_number() -> None:
    # Arrange
    body = b'{"id":"evt_COST_NUMBER","type":"chat.completion.finished","data":{"cost_usd":0.0125}}'

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal("0.0125")


def test_cost_keeps_every_digit_when_the_json_number_is_longer_than_a_float() -> None:
    # Arrange: a float would read this as 0.1.
    body = (
        b'{"id":"evt_COST_DIGITS","type":"chat.completion.finished",'
        b'"data":{"cost_usd":0.1000000000000000055511151231257827}}'
    )

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal("0.1000000000000000055511151231257827")


def test_cost_is_an_exact_decimal_when_given_as_an_exponent_number() -> None:
    # Arrange
    body = b'{"id":"evt_COST_EXPONENT","type":"chat.completion.finished","data":{"cost_usd":1.25e-5}}'

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal("0.0000125")


def test_cost_is_an_exact_decimal_when_given_as_a_decimal_string() -> None:
    # Arrange
    body = envelope("evt_COST_STRING", {"cost_usd": "0.00000123456789012345678901234567890123"})

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal("0.00000123456789012345678901234567890123")


def test_billable_amount_is_the_cost_when_cost_usd_is_absent() -> None:
    # Arrange
    body = envelope("evt_BILLABLE_AMOUNT", {"billable_amount_usd": "0.75"})

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal("0.75")


def test_cost_usd_wins_when_billable_amount_is_also_present() -> None:
    # Arrange
    body = envelope("evt_BOTH_AMOUNTS", {"cost_usd": "0.5", "billable_amount_usd": "0.75"})

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal("0.5")


def test_billable_amount_is_the_cost_when_cost_usd_is_null() -> None:
    # Arrange
    body = envelope("evt_COST_NULL", {"cost_usd": None, "billable_amount_usd": 2})

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal(2)


def test_cost_is_none_when_no_amount_is_present() -> None:
    # Arrange: the policy parks it; the parser only reports what is there.
    body = envelope("evt_NO_COST", {"customer_id": "cus_RINGSIDE"})

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd is None


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-1"], ids=["nan", "infinity", "negative"])
def test_cost_is_passed_on_for_the_policy_to_judge_when_the_decimal_string_is_not_billable(text: str) -> None:
    # Arrange
    body = envelope("evt_COST_ODD", {"cost_usd": text})

    # Act
    event = parse_event(body)

    # Assert: parsed as written; `assess` parks it as invalid_payload.
    assert str(event.cost_usd) == str(Decimal(text))


NOT_ASCII_DECIMALS = {
    "underscores": "1_000",
    "Arabic-Indic digits": "\u0661\u0662",
    "fullwidth digits": "\uff11",
    "leading space": " 1",
    "trailing space": "1 ",
    "surrounding tabs and newlines": "\t1.5\n",
    "empty": "",
    "two points": "0.1.2",
}


@pytest.mark.parametrize("text", NOT_ASCII_DECIMALS.values(), ids=NOT_ASCII_DECIMALS.keys())
@pytest.mark.parametrize("field", ["cost_usd", "billable_amount_usd"])
def test_event_is_invalid_under_its_id_when_the_cost_string_is_not_an_ascii_decimal(field: str, text: str) -> None:
    # Arrange: Decimal() itself would read most of these as numbers.
    body = envelope("evt_COST_LENIENT", {field: text})

    # Act
    with pytest.raises(InvalidEvent) as raised:
        parse_event(body)

    # Assert: parked invalid_payload under the event's own id.
    assert raised.value.key == "evt_COST_LENIENT"
    assert raised.value.event_type == BILLABLE
    assert "cost" in raised.value.message


@pytest.mark.parametrize("value", [True, [1], {"usd": 1}], ids=["boolean", "array", "object"])
def test_event_is_invalid_when_the_cost_is_neither_a_number_nor_a_string(value: Any) -> None:
    # Arrange
    body = envelope("evt_COST_ODD_TYPE", {"cost_usd": value})

    # Act / Assert
    with pytest.raises(InvalidEvent):
        parse_event(body)


@pytest.mark.parametrize("text", ["1", "+1.5", "-0.25", "1.", ".5", "1e3", "1.25E-5", "0"])
def test_cost_is_parsed_when_the_string_is_an_ascii_decimal_with_optional_sign_and_exponent(text: str) -> None:
    # Arrange
    body = envelope("evt_COST_ASCII", {"cost_usd": text})

    # Act
    event = parse_event(body)

    # Assert
    assert event.cost_usd == Decimal(text)


# -- customer --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"customer_id": "cus_RINGSIDE"},
        {"customer": "cus_RINGSIDE"},
        {"customer": {"id": "cus_RINGSIDE"}},
        {"customer_id": "cus_RINGSIDE", "customer": {"id": "cus_OTHER"}},
        {"customer_id": "cus_RINGSIDE", "customer": "cus_OTHER"},
    ],
    ids=[
        "data.customer_id",
        "data.customer as a string",
        "data.customer.id",
        "customer_id wins over customer.id",
        "customer_id wins over the customer string",
    ],
)
def test_ringside_customer_is_found_when_named_in_any_allowed_place(data: dict[str, Any]) -> None:
    # Arrange
    body = envelope("evt_CUSTOMER", data)

    # Act
    event = parse_event(body)

    # Assert
    assert event.ringside_customer == "cus_RINGSIDE"


def test_ringside_customer_is_none_when_no_place_names_one() -> None:
    # Arrange
    body = envelope("evt_NO_CUSTOMER", {"cost_usd": "1", "customer": {"metadata": {}}})

    # Act
    event = parse_event(body)

    # Assert
    assert event.ringside_customer is None


def test_stripe_customer_is_taken_from_metadata_when_the_event_carries_one() -> None:
    # Arrange
    body = envelope(
        "evt_STRIPE_METADATA",
        {"customer": {"id": "cus_RINGSIDE", "metadata": {"stripe_customer_id": "cus_Stripe123"}}},
    )

    # Act
    event = parse_event(body)

    # Assert
    assert (event.ringside_customer, event.stripe_customer) == ("cus_RINGSIDE", "cus_Stripe123")


@pytest.mark.parametrize(
    "customer",
    [
        "cus_RINGSIDE",
        {"id": "cus_RINGSIDE"},
        {"id": "cus_RINGSIDE", "metadata": None},
        {"id": "cus_RINGSIDE", "metadata": {"plan": "pro"}},
        {"id": "cus_RINGSIDE", "metadata": {"stripe_customer_id": ""}},
        {"id": "cus_RINGSIDE", "metadata": {"stripe_customer_id": 42}},
    ],
    ids=["customer string", "no metadata", "null metadata", "other metadata", "empty stripe id", "numeric stripe id"],
)
def test_stripe_customer_is_none_when_the_metadata_holds_no_usable_id(customer: Any) -> None:
    # Arrange
    body = envelope("evt_NO_STRIPE_ID", {"customer": customer})

    # Act
    event = parse_event(body)

    # Assert: the customer store or Ringside's API will be asked instead.
    assert event.stripe_customer is None


# -- envelope --------------------------------------------------------------------------------------------------


def test_event_carries_id_type_and_created_when_all_are_present() -> None:
    # Arrange
    body = envelope("evt_FULL", {"cost_usd": "0.01", "customer_id": "cus_RINGSIDE"}, created=1_700_000_000)

    # Act
    event = parse_event(body)

    # Assert
    assert event == Event(
        id="evt_FULL",
        type=BILLABLE,
        created=1_700_000_000,
        cost_usd=Decimal("0.01"),
        ringside_customer="cus_RINGSIDE",
        stripe_customer=None,
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"evt_BARE","type":"chat.completion.finished"}',
        b'{"id":"evt_BARE","type":"chat.completion.finished","data":null,"created":null}',
        b'{"id":"evt_BARE","type":"chat.completion.finished","data":{}}',
    ],
    ids=["no data, no created", "null data and created", "empty data"],
)
def test_optional_fields_are_none_when_absent_or_null(body: bytes) -> None:
    # Act
    event = parse_event(body)

    # Assert
    assert event == Event(
        id="evt_BARE", type=BILLABLE, created=None, cost_usd=None, ringside_customer=None, stripe_customer=None
    )


def test_unknown_fields_are_ignored_when_present_at_every_level() -> None:
    # Arrange
    body = json.dumps(
        {
            "id": "evt_UNKNOWN_FIELDS",
            "object": "event",
            "api_version": "2099-01-01",
            "type": BILLABLE,
            "livemode": False,
            "data": {
                "cost_usd": "0.02",
                "model": "gpt-x",
                "tokens": {"input": 10, "output": [1, 2, 3]},
                "customer": {
                    "id": "cus_RINGSIDE",
                    "email": "ada@example.com",
                    "metadata": {"stripe_customer_id": "cus_Stripe123", "tier": {"nested": True}},
                },
            },
            "request": None,
        }
    ).encode()

    # Act
    event = parse_event(body)

    # Assert
    assert event == Event(
        id="evt_UNKNOWN_FIELDS",
        type=BILLABLE,
        created=None,
        cost_usd=Decimal("0.02"),
        ringside_customer="cus_RINGSIDE",
        stripe_customer="cus_Stripe123",
    )


def test_last_value_wins_when_a_json_key_is_duplicated() -> None:
    # Arrange: RFC 8259 leaves duplicates undefined; we read them as Python's json module does.
    body = (
        b'{"id":"evt_FIRST","type":"chat.completion.finished","id":"evt_DUPLICATE",'
        b'"data":{"cost_usd":"1","customer_id":"cus_A","cost_usd":"2","customer_id":"cus_B"}}'
    )
    reference = json.loads(body)

    # Act
    event = parse_event(body)

    # Assert
    assert (event.id, event.cost_usd, event.ringside_customer) == (
        reference["id"],
        Decimal(reference["data"]["cost_usd"]),
        reference["data"]["customer_id"],
    )
    assert event.id == "evt_DUPLICATE"


def test_id_is_accepted_when_exactly_255_characters_long() -> None:
    # Arrange
    event_id = "evt_" + "X" * (MAX_EVENT_ID_CHARS - 4)

    # Act
    event = parse_event(envelope(event_id))

    # Assert
    assert event.id == event_id


# -- invalid events ---------------------------------------------------------------------------------------------
# The key is what the delivery is de-duplicated and parked under: the event's own id when it can be salvaged,
# else a digest of the body, so that redeliveries of the same bytes still meet the same parked record.

NO_ID = object()  # marks "key is body_key(body)"
UNASSERTED = object()  # the salvaged type is not specified for this case

INVALID: dict[str, tuple[bytes, object, object, str]] = {
    # name: (body, expected key or NO_ID, expected salvaged type, a fragment of the message)
    "not JSON": (b"not json at all", NO_ID, None, "malformed"),
    "empty body": (b"", NO_ID, None, "invalid event"),
    "truncated JSON": (b'{"id":"evt_TRUNCATED","type":"chat.comp', NO_ID, None, "invalid event"),
    "non-UTF-8 bytes": (b"\xff\xfe{\x00}\x00", NO_ID, None, "invalid event"),
    "non-UTF-8 bytes inside the id": (
        b'{"id":"evt_\xff\xfe","type":"chat.completion.finished"}',
        NO_ID,
        None,
        "invalid event",
    ),
    "JSON array": (b'[{"id":"evt_IN_ARRAY","type":"chat.completion.finished"}]', NO_ID, None, "array"),
    "JSON string": (b'"evt_STRING"', NO_ID, None, "invalid event"),
    "JSON null": (b"null", NO_ID, None, "invalid event"),
    "missing id": (b'{"type":"chat.completion.finished","data":{"cost_usd":"1"}}', NO_ID, BILLABLE, "id"),
    "null id": (b'{"id":null,"type":"chat.completion.finished"}', NO_ID, BILLABLE, "id"),
    "numeric id": (b'{"id":12345,"type":"chat.completion.finished"}', NO_ID, BILLABLE, "id"),
    "empty id": (b'{"id":"","type":"chat.completion.finished"}', NO_ID, UNASSERTED, "id"),
    "id with a control character": (b'{"id":"evt_\\n","type":"chat.completion.finished"}', NO_ID, UNASSERTED, "id"),
    "id of 256 characters": (envelope("evt_" + "X" * (MAX_EVENT_ID_CHARS - 3)), NO_ID, UNASSERTED, "255"),
    "missing type": (b'{"id":"evt_NO_TYPE"}', "evt_NO_TYPE", None, "type"),
    "type not a string": (b'{"id":"evt_TYPE_NUMBER","type":7}', "evt_TYPE_NUMBER", None, "$.type"),
    "created as text": (envelope("evt_CREATED_TEXT", created="yesterday"), "evt_CREATED_TEXT", BILLABLE, "$.created"),
    "created as a float": (envelope("evt_CREATED_FLOAT", created=1.5), "evt_CREATED_FLOAT", BILLABLE, "$.created"),
    "created as a boolean": (envelope("evt_CREATED_BOOL", created=True), "evt_CREATED_BOOL", BILLABLE, "$.created"),
    "data as a list": (envelope("evt_DATA_LIST", data=[1, 2]), "evt_DATA_LIST", BILLABLE, "$.data"),
    "cost as a boolean": (
        envelope("evt_COST_BOOL", {"cost_usd": True}),
        "evt_COST_BOOL",
        BILLABLE,
        "$.data.cost_usd",
    ),
    "cost as an object": (
        envelope("evt_COST_OBJECT", {"cost_usd": {"amount": 1}}),
        "evt_COST_OBJECT",
        BILLABLE,
        "$.data.cost_usd",
    ),
    "cost not a decimal": (
        envelope("evt_COST_COMMA", {"cost_usd": "12,50"}),
        "evt_COST_COMMA",
        BILLABLE,
        "$.data.cost_usd",
    ),
    "billable amount as a list": (
        envelope("evt_AMOUNT_LIST", {"billable_amount_usd": [1]}),
        "evt_AMOUNT_LIST",
        BILLABLE,
        "$.data.billable_amount_usd",
    ),
    "customer as a number": (
        envelope("evt_CUSTOMER_NUMBER", {"customer": 5}),
        "evt_CUSTOMER_NUMBER",
        BILLABLE,
        "$.data.customer",
    ),
    "customer_id as a number": (
        envelope("evt_CUSTOMER_ID_NUMBER", {"customer_id": 5}),
        "evt_CUSTOMER_ID_NUMBER",
        BILLABLE,
        "$.data.customer_id",
    ),
    "metadata as a list": (
        envelope("evt_METADATA_LIST", {"customer": {"id": "cus_RINGSIDE", "metadata": []}}),
        "evt_METADATA_LIST",
        BILLABLE,
        "$.data.customer.metadata",
    ),
}


@pytest.mark.parametrize(("body", "key", "event_type", "fragment"), INVALID.values(), ids=INVALID.keys())
def test_invalid_event_is_raised_with_its_park_key_when_the_body_is_not_a_usable_event(
    body: bytes, key: object, event_type: object, fragment: str
) -> None:
    # Arrange
    expected_key = body_key(body) if key is NO_ID else key

    # Act
    with pytest.raises(InvalidEvent) as raised:
        parse_event(body)

    # Assert
    assert raised.value.key == expected_key
    if event_type is not UNASSERTED:
        assert raised.value.event_type == event_type
    assert fragment.lower() in raised.value.message.lower()


def test_invalid_event_is_raised_when_a_data_string_holds_non_utf8_bytes() -> None:
    # Arrange: the id is fine, but the document as a whole is not UTF-8 and therefore not JSON.
    body = b'{"id":"evt_BAD_UTF8","type":"chat.completion.finished","data":{"customer_id":"cus_\xff"}}'

    # Act / Assert: refused as an event (parked), never an unexpected crash (a 500 that Ringside retries forever).
    with pytest.raises(InvalidEvent) as raised:
        parse_event(body)

    assert raised.value.key in {"evt_BAD_UTF8", body_key(body)}


def test_body_key_is_the_same_when_the_same_bytes_are_redelivered() -> None:
    # Arrange
    body = b'{"type":"chat.completion.finished"}'

    # Act
    keys = {body_key(body), body_key(bytes(body))}

    # Assert
    assert len(keys) == 1
    assert body_key(body) != body_key(body + b" ")
