"""Every error the gateway raises on purpose has one root and a stable machine-readable code."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the gateway's own errors. `code` is stable and goes on the wire; `message` is for people."""

    code = "gateway_error"
    default_message = "gateway error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


# -- Inbound signature (401 with one of these codes; nothing is parsed, stored or billed) ------------------------------


class SignatureError(GatewayError):
    code = "invalid_signature"


class MissingSignature(SignatureError):
    code = "missing_signature"
    default_message = "X-FC-Signature header is missing"


class MalformedSignature(SignatureError):
    code = "malformed_signature"
    default_message = "X-FC-Signature must look like t=<unix seconds>,v1=<hex>"


class TimestampOutOfTolerance(SignatureError):
    code = "timestamp_out_of_tolerance"
    default_message = "signature timestamp is outside the allowed tolerance"


class InvalidSignature(SignatureError):
    code = "invalid_signature"
    default_message = "no v1 signature matches a configured secret"


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"
    default_message = "request body is larger than the configured limit"


class BodyTimeout(GatewayError):
    code = "body_timeout"
    default_message = "the request body did not arrive in time"


# -- Stores -----------------------------------------------------------------------------------------------------


class StoreUnavailable(GatewayError):
    """The ledger could not be written: nothing was recorded, the sender should retry."""

    code = "store_unavailable"
    default_message = "the ledger cannot be written right now; nothing was recorded"


# -- Billers (raised by BillingSink adapters, translated from vendor errors at the boundary) -------------------


class BillerError(GatewayError):
    code = "biller_error"


class BillerRejected(BillerError):
    """A permanent refusal: retrying the same request can never succeed. The entry is parked."""

    code = "biller_rejected"
    default_message = "the biller rejected the meter event"


class BillerUnavailable(BillerError):
    """A transient failure (5xx, timeout, connection, 429): the entry stays pending and is retried."""

    code = "biller_unavailable"
    default_message = "the biller is unavailable"

    def __init__(
        self,
        message: str | None = None,
        *,
        cause: str = "unavailable",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_after_s = retry_after_s


class BillerMisconfigured(BillerUnavailable):
    """The biller refuses this deployment's set-up (Stripe: a v2 meter event session refused with a 4xx), so every
    call would fail alike: the entries stay pending, untouched, and the dispatcher pauses until the biller accepts
    it again. Never a rejection of the events."""

    code = "biller_misconfigured"
    default_message = "the biller refuses this gateway's configuration"

    def __init__(self, message: str | None = None, *, cause: str = "configuration") -> None:
        super().__init__(message, cause=cause)


class BillerRateLimited(BillerUnavailable):
    code = "biller_rate_limited"
    default_message = "the biller asked us to slow down (429)"

    def __init__(self, message: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, cause="rate_limited", retry_after_s=retry_after_s)


class NoBillingAccount(GatewayError):
    code = "no_billing_account"
    default_message = "no billing account is linked to this customer"


# -- Customer billing portal (docs/billers.md) -------------------------------------------------------------------------


class PortalNotConfigured(GatewayError):
    """The portal cannot serve anyone: no PORTAL_JWT_SECRET, or no biller that offers a portal (503)."""

    code = "portal_not_configured"
    default_message = "the billing portal is not configured on this gateway"


class StripeWebhookNotConfigured(GatewayError):
    """`POST /webhooks/stripe` without STRIPE_WEBHOOK_SECRET: nothing could verify a notification (503)."""

    code = "stripe_webhook_not_configured"
    default_message = "the Stripe event destination is not configured on this gateway (set STRIPE_WEBHOOK_SECRET)"


class PortalAuthError(GatewayError):
    """The request does not prove a signed-in user (401, with a `WWW-Authenticate: Bearer` challenge)."""

    code = "invalid_token"
    default_message = "the bearer token is not valid"


class MissingToken(PortalAuthError):
    code = "missing_token"
    default_message = "an Authorization: Bearer <token> header is required"


class ExpiredToken(PortalAuthError):
    code = "token_expired"
    default_message = "the bearer token has expired"


class InvalidReturnUrl(GatewayError):
    """A requested return_url is not under an allow-listed prefix, or is not a plain http(s) URL (400)."""

    code = "invalid_return_url"
    default_message = "return_url is not allowed"


class InvalidPortalRequest(GatewayError):
    """The request's options cannot be read: a malformed body or an unknown flow (400)."""

    code = "invalid_request"
    default_message = "the portal request is malformed"


class PortalFlowUnavailable(GatewayError):
    """The requested flow cannot apply to this customer, e.g. a cancellation without a subscription (409)."""

    code = "flow_unavailable"
    default_message = "this portal flow is not available for this customer"


# -- Set-up commands --------------------------------------------------------------------------------------------


class SetupError(GatewayError):
    """A set-up command (`stripe-setup`, `ringside-register`) cannot go on; the message says what to do."""

    code = "setup_failed"
    default_message = "set-up failed"
