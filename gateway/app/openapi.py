"""The OpenAPI description of the public routes, served at `/schema` (UI) and `/schema/openapi.json`.

The webhook is a raw ASGI route (gateway.app.webhook: it reads the raw body, which it must verify over the exact
bytes before parsing anything), which Litestar's schema generation does not see at all: its operation
(request body, signature header, responses) is described here by hand from docs/design.md ("The wire contract")
and added to the document by `document_webhook`. Responses are documented with
msgspec Structs whose fields mirror the bodies the handlers build: the schema documents the wire contract, and the
OpenAPI-driven fuzz test (tests/app/test_openapi_fuzz.py) checks the app against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIResponse,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec import OpenAPIMediaType as MediaTypeObject
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
    """Every error the gateway answers: `{"error": {"code", "message"}}` (docs/design.md, "Responses")."""

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
    """`ok`, `unavailable: <why>`, or `not durable: <the setting to change>`."""
    biller: str
    """The biller's name: `stripe`, `lago`, or the local ledger biller (`ledger`, `memory`)."""
    biller_configured: bool
    """True when meter events go to a real biller (Stripe, Lago); False for the local ledger biller."""


class Readiness(msgspec.Struct, frozen=True):
    status: str
    """`ready` or `not_ready`."""
    checks: ReadyChecks


# The webhook's answers (docs/design.md, "Responses"): the Struct each body mirrors, and when it is sent.
_WEBHOOK_BODIES: dict[int, tuple[type[msgspec.Struct], str]] = {
    200: (Acknowledged, "Accepted (durably recorded; the meter event follows), duplicate, or ignored."),
    202: (ParkedAck, "Parked: unknown_customer, invalid_payload, too_old or unknown_type. Ringside stops retrying."),
    400: (ErrorBody, "The request is malformed at the HTTP level."),
    401: (ErrorBody, "missing_signature, malformed_signature, timestamp_out_of_tolerance or invalid_signature."),
    405: (ErrorBody, "method_not_allowed: only POST is served here."),
    408: (ErrorBody, "body_timeout: the body did not arrive within GATEWAY_BODY_TIMEOUT_S; the connection is closed."),
    413: (ErrorBody, "payload_too_large: the body is over GATEWAY_MAX_BODY_BYTES."),
    500: (ErrorBody, "internal_error: an unexpected failure; nothing was acknowledged, so Ringside retries."),
    503: (ErrorBody, "store_unavailable: nothing was recorded; retry after Retry-After seconds."),
}
READY_RESPONSES: dict[int, ResponseSpec] = {
    503: ResponseSpec(data_container=Readiness, description="The ledger cannot be written.", generate_examples=False),
}

_string = Schema(type=OpenAPIType.STRING)
_money = Schema(
    one_of=[Schema(type=OpenAPIType.NUMBER), Schema(type=OpenAPIType.STRING)],
    description="US dollars, a JSON number or a decimal string; parsed exactly, never as a float. Finite, >= 0.",
)
# docs/design.md, "Event": Ringside documents {"id", "type", "data"}; everything else is optional and unknown fields are
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


WEBHOOK_PATH = "/webhooks/ringside"


def document_webhook(openapi: OpenAPI) -> None:
    """Add `POST /webhooks/ringside` to the app's OpenAPI document, which cannot see it: it is a raw ASGI route
    (gateway.app.webhook says why). Its responses are documented from the same msgspec Structs as before, their
    JSON Schemas made by msgspec and added to the components the other routes have not already defined."""
    components = msgspec.json.schema_components(
        [container for container, _ in _WEBHOOK_BODIES.values()], ref_template="#/components/schemas/{name}"
    )[1]
    schemas = openapi.components.schemas
    for name, component in components.items():
        # A plain JSON Schema dict: Litestar's OpenAPI.to_schema() passes dicts through as they are.
        schemas.setdefault(name, component)
    responses: dict[str, OpenAPIResponse | Reference] = {
        str(status): OpenAPIResponse(
            description=description,
            content={
                "application/json": MediaTypeObject(schema=Reference(ref=f"#/components/schemas/{container.__name__}"))
            },
        )
        for status, (container, description) in _WEBHOOK_BODIES.items()
    }
    operation = WebhookOperation(
        tags=["webhooks"],
        summary="Receive a signed Ringside delivery",
        description="Verify the X-FC-Signature over the raw body, record the event in the ledger, acknowledge. "
        "Exactly one meter event follows per event id, however often it is delivered.",
        operation_id="WebhooksRingsideRingsideWebhook",
        responses=responses,
    )
    paths = openapi.paths if openapi.paths is not None else {}
    paths[WEBHOOK_PATH] = PathItem(post=operation)
    openapi.paths = paths


def openapi_config() -> OpenAPIConfig:
    """OpenAPI for the public routes: the UI at /schema, the document at /schema/openapi.json."""
    return OpenAPIConfig(
        title="Ringside to Stripe billing gateway",
        version=__version__,
        description="Signed Ringside usage webhooks in, exactly one Stripe meter event per event out.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
    )
