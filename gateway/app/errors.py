"""The one mapping from the gateway's errors to HTTP: status, body and headers (docs/design.md, "Responses";
docs/billers.md, "Customer billing portal").

Litestar's exception handlers (gateway.app.http) and the raw ASGI webhook route (gateway.app.webhook) both answer
through it, so an error reads the same whichever route raised it.
"""

from __future__ import annotations

from typing import Any

from gateway.domain.errors import (
    BillerRejected,
    BillerUnavailable,
    BodyTimeout,
    GatewayError,
    InvalidPortalRequest,
    InvalidReturnUrl,
    MissingToken,
    NoBillingAccount,
    PayloadTooLarge,
    PortalAuthError,
    PortalFlowUnavailable,
    PortalNotConfigured,
    SignatureError,
    StoreUnavailable,
    StripeWebhookNotConfigured,
)

STORE_RETRY_AFTER_S = 5
PORTAL_REALM = "billing-portal"
_STATUS_OF: dict[type[GatewayError], int] = {
    SignatureError: 401,
    PayloadTooLarge: 413,
    BodyTimeout: 408,
    StoreUnavailable: 503,
    # The portal (docs/billers.md, "Customer billing portal"). A biller's refusal there is not the user's fault:
    # 502, never a 4xx or a 500.
    PortalAuthError: 401,
    InvalidReturnUrl: 400,
    InvalidPortalRequest: 400,
    NoBillingAccount: 404,
    PortalFlowUnavailable: 409,
    PortalNotConfigured: 503,
    BillerUnavailable: 503,
    BillerRejected: 502,
    StripeWebhookNotConfigured: 503,
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def unexpected_error_body() -> dict[str, Any]:
    """What a request that failed for no reason the gateway knows is answered (500): never an acknowledgement."""
    return error_body("internal_error", "unexpected error; nothing was acknowledged")


def status_of(exc: GatewayError) -> int:
    """The HTTP status of a gateway error; an error the table does not name is the client's (400)."""
    return next((code for kind, code in _STATUS_OF.items() if isinstance(exc, kind)), 400)


def headers_of(exc: GatewayError) -> dict[str, str] | None:
    if isinstance(exc, StoreUnavailable):
        return {"Retry-After": str(STORE_RETRY_AFTER_S)}
    if isinstance(exc, PortalAuthError):
        # RFC 6750 3 / 3.1: a request without a token gets a bare challenge; a bad one gets error="invalid_token".
        if isinstance(exc, MissingToken):
            return {"WWW-Authenticate": f'Bearer realm="{PORTAL_REALM}"'}
        description = exc.message.replace('"', "'").replace("\\", "/")
        return {
            "WWW-Authenticate": f'Bearer realm="{PORTAL_REALM}", error="invalid_token", '
            f'error_description="{description}"'
        }
    if isinstance(exc, BillerUnavailable) and exc.retry_after_s is not None:
        return {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    return None
