"""The OpenAPI description of the public routes, served at `/schema` (UI) and `/schema/openapi.json`.

The webhook handler reads the raw body (it must verify the signature over the exact bytes before parsing anything,
CONTRACT 1), so Litestar cannot infer its request body or its signature header from the handler's signature; they
are described here by hand, from CONTRACT 1, and attached with `operation_class`. Responses are documented with
msgspec Structs whose fields mirror the bodies the handlers build: the schema documents the wire contract, and the
OpenAPI-driven fuzz test (tests/app/test_openapi_fuzz.py) checks the app against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import OpenAPIMediaType as MediaTypeObject
from litestar.openapi.spec import Operation, Parameter, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

from gateway import __version__
from gateway.domain.event import MAX_EVENT_ID_CHARS
from gateway.domain.signature import HEADER


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    """A stable machine-readable code, e.g. `invalid_signature`, `payload_too_large`, `store_unavailable`."""
    message: str
    """What went wrong, for people."""


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error the gateway answers: `{"error": {"code", "message"}}` (CONTRACT 1, "Responses")."""

    error: ErrorDetail


class AckStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


class Acknowledged(msgspec.Struct, frozen=True):
    """200: the delivery is durably recorded (`accepted`, with its units), was seen before, or is not billable."""

    status: AckStatus
    event_id: str
    units: int | None = None


class ParkedStatus(StrEnum):
    PARKED = "parked"


class ParkedAck(msgspec.Struct, frozen=True):
    """202: signed but not billable as it is; kept whole in the parked store for `gateway parked replay`."""

    status: ParkedStatus
    event_id: str
    reason: str | None
    message: str | None = None


class Health(msgspec.Struct, frozen=True):
    status: str


class ReadyChecks(msgspec.Struct, frozen=True):
    store: str
    """`ok`, or `unavailable: <why>`."""
    biller: str
    """The biller's name: `stripe`, `lago`, or the local ledger biller (`ledger`, `memory`)."""
    biller_configured: bool
    """True when meter events go to a real biller (Stripe, Lago); False for the local ledger biller."""


class Readiness(msgspec.Struct, frozen=True):
    status: str
    """`ready` or `not_ready`."""
    checks: ReadyChecks


def error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


WEBHOOK_RESPONSES: dict[int, ResponseSpec] = {
    200: ResponseSpec(
        data_container=Acknowledged,
        description="Accepted (durably recorded; the meter event follows), duplicate, or ignored.",
        generate_examples=False,
    ),
    202: ResponseSpec(
        data_container=ParkedAck,
        description="Parked: unknown_customer, invalid_payload or too_old. Ringside stops retrying.",
        generate_examples=False,
    ),
    400: error("The request is malformed at the HTTP level."),
    401: error("missing_signature, malformed_signature, timestamp_out_of_tolerance or invalid_signature."),
    413: error("payload_too_large: the body is over GATEWAY_MAX_BODY_BYTES."),
    503: error("store_unavailable: nothing was recorded; retry after Retry-After seconds."),
}
READY_RESPONSES: dict[int, ResponseSpec] = {
    503: ResponseSpec(data_container=Readiness, description="The ledger cannot be written.", generate_examples=False),
}

_string = Schema(type=OpenAPIType.STRING)
_money = Schema(
    one_of=[Schema(type=OpenAPIType.NUMBER), Schema(type=OpenAPIType.STRING)],
    description="US dollars, a JSON number or a decimal string; parsed exactly, never as a float. Finite, >= 0.",
)
# CONTRACT 1, "Event": Ringside documents {"id", "type", "data"}; everything else is optional and unknown fields are
# ignored everywhere, hence additionalProperties everywhere.
EVENT_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    title="RingsideEvent",
    required=["id", "type"],
    properties={
        "id": Schema(
            type=OpenAPIType.STRING,
            min_length=1,
            max_length=MAX_EVENT_ID_CHARS,
            description="The idempotency key: retries and re-emits of one event share it.",
        ),
        "type": Schema(
            type=OpenAPIType.STRING,
            description="Billable types come from GATEWAY_BILLABLE_EVENTS (default chat.completion.finished).",
        ),
        "created": Schema(type=OpenAPIType.INTEGER, description="Unix seconds; the meter event's timestamp."),
        "data": Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "cost_usd": _money,
                "billable_amount_usd": _money,
                "customer_id": _string,
                "customer": Schema(
                    one_of=[
                        _string,
                        Schema(
                            type=OpenAPIType.OBJECT,
                            properties={
                                "id": _string,
                                "metadata": Schema(type=OpenAPIType.OBJECT, properties={"stripe_customer_id": _string}),
                            },
                        ),
                    ]
                ),
            },
        ),
    },
)
SIGNATURE_PARAMETER = Parameter(
    name=HEADER,
    param_in="header",
    required=True,
    description='`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + raw body>`; several v1 fields are allowed.',
    schema=Schema(type=OpenAPIType.STRING, max_length=4096),
)


@dataclass
class WebhookOperation(Operation):
    """The webhook's operation, with the request body and the signature header the handler reads by hand."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={"application/json": MediaTypeObject(schema=EVENT_SCHEMA)},
            required=True,
            description="A Ringside event, signed over its exact bytes.",
        )
        self.parameters = [*(self.parameters or []), SIGNATURE_PARAMETER]


def openapi_config() -> OpenAPIConfig:
    """OpenAPI for the public routes: the UI at /schema, the document at /schema/openapi.json."""
    return OpenAPIConfig(
        title="Ringside to Stripe billing gateway",
        version=__version__,
        description="Signed Ringside usage webhooks in, exactly one Stripe meter event per event out.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
    )
