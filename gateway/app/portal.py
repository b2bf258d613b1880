"""The customer billing portal API (docs/billers.md, "Customer billing portal"): `POST /api/portal` -> 200
{"url"}, `GET /api/portal` -> 303.

Who the user is comes only from a JWT the host application signs for its signed-in user: HS256 with
PORTAL_JWT_SECRET, claims `sub` (the user's Ringside customer id), `exp` and `iat`. Which Stripe customer that is
comes only from the customer store. Nothing in the request body or query can name another customer.
`iat` is required, so that a token's lifetime (`exp - iat`) is known: one minted for longer than PORTAL_JWT_MAX_AGE_S
(default a day) is refused. With PORTAL_JWT_AUDIENCE and PORTAL_JWT_ISSUER set, a token must also carry that `aud`
and that `iss`, so a token the host application minted for another of its services does not open the portal.

Why Litestar's `Token.decode` in a dependency rather than its `JWTAuth` middleware: the middleware is meant for
the whole app (it would guard the webhook and health routes unless excluded), reads only a header (a plain link
cannot send one, see below), does not check the `Bearer` scheme, and raises one undifferentiated
NotAuthorizedException, where RFC 6750 wants a challenge saying whether a token was missing or bad. The token
checks themselves stay Litestar's: `Token.decode` with the algorithm pinned (`algorithms=["HS256"]`, so `alg:
none`, HS512, RS256 and the rest are refused before any key is used), required claims, and a subclass that adds
clock leeway through `decode_payload`, the hook Litestar documents for customising validation (docs:
usage/security/jwt, "custom_decode_payload").

Tokens in URLs. `GET /api/portal` is for a plain link or a `<form method="get">` that works without JavaScript, and
neither can send an Authorization header, so GET also accepts `?token=`. A URL leaks into browser history and
into the access logs of every proxy on the way, so such a token must expire within PORTAL_LINK_TOKEN_MAX_TTL_S
(default 5 minutes) of now: mint it when rendering the page. POST takes the header only.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any, ClassVar, TypeAlias

import jwt
import msgspec
import structlog
from litestar import Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ImproperlyConfiguredException, NotAuthorizedException
from litestar.params import FromQuery, SkipValidation
from litestar.response import Redirect
from litestar.security.jwt import Token
from litestar.security.jwt.token import JWTDecodeOptions

from gateway.app.container import Container
from gateway.domain.errors import (
    ExpiredToken,
    GatewayError,
    InvalidPortalRequest,
    MissingToken,
    PortalAuthError,
    PortalNotConfigured,
)
from gateway.domain.portal import PortalFlow, TokenLifetime
from gateway.service.portal import PortalSessions

log = structlog.get_logger("gateway.portal")

PATH = "/api/portal"
ALGORITHM = "HS256"
# `iat` too: Litestar's Token requires it, and it lets the host application's logs line up with ours.
REQUIRED_CLAIMS = ("exp", "iat", "sub")
MAX_SUBJECT_CHARS = 255  # a Ringside customer id; longer is not one
# The session URL is a credential to the user's billing details: never cache it (RFC 9111 5.2.2.5), and do not
# let the browser tell Stripe which page of the host application the user came from.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

PortalSessionsDependency: TypeAlias = NamedDependency[SkipValidation[PortalSessions]]
RingsideCustomer: TypeAlias = NamedDependency[str]
"""The authenticated user's Ringside customer id: the token's `sub`, from the `ringside_customer` dependency."""


@dataclasses.dataclass
class PortalToken(Token):
    """Litestar's Token with clock leeway on `exp`, `iat` and `nbf`.

    Invariant: a token is accepted only if PyJWT verified it with `algorithms=[ALGORITHM]` and the leeway; the
    leeway is a class attribute because `decode_payload` is a classmethod, so `with_leeway` makes a subclass.
    """

    leeway_s: ClassVar[float] = 0.0

    @classmethod
    @functools.cache
    def with_leeway(cls, leeway_s: float) -> type[PortalToken]:
        return dataclasses.dataclass(type("PortalToken", (cls,), {"leeway_s": leeway_s}))

    @classmethod
    def decode_payload(
        cls,
        encoded_token: str,
        secret: str,
        algorithms: list[str],
        issuer: str | Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        options: JWTDecodeOptions | None = None,
    ) -> Any:
        return jwt.decode(
            encoded_token,
            key=secret,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            options=options,  # type: ignore[arg-type]  # Litestar's TypedDict is a subset of PyJWT's
            leeway=cls.leeway_s,
        )

    def __post_init__(self) -> None:
        # Token.__post_init__ re-checks exp and iat against the clock without any leeway, which would refuse a token
        # that expired a second ago although PyJWT has just accepted it under the leeway. PyJWT's checks stand.
        if not self.sub:
            raise ImproperlyConfiguredException("sub must be a non-empty string")


class PortalTokenVerifier:
    """A bearer token in, the signed-in user's Ringside customer id out; PortalAuthError for anything else."""

    def __init__(
        self,
        secret: str,
        *,
        leeway_s: float,
        lifetime: TokenLifetime,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self._secret = secret
        self._token_cls = PortalToken.with_leeway(leeway_s)
        self._lifetime = lifetime
        self._audience = audience
        self._issuer = issuer
        # PyJWT checks `aud` and `iss` only when told which to expect, and then requires them.
        self._required = REQUIRED_CLAIMS + (("aud",) if audience else ()) + (("iss",) if issuer else ())

    def subject(self, token: str | None, *, in_url: bool = False) -> str:
        """The token's `sub`. With `in_url`, the token must also expire within the link-token lifetime."""
        if not token:
            raise MissingToken()
        try:
            decoded = self._token_cls.decode(
                token,
                secret=self._secret,
                algorithm=ALGORITHM,
                audience=self._audience,
                issuer=self._issuer,
                require_claims=self._required,
            )
        except NotAuthorizedException as exc:
            raise _refusal(exc.__cause__) from None
        if len(decoded.sub) > MAX_SUBJECT_CHARS:
            raise PortalAuthError(f"the token's sub is longer than {MAX_SUBJECT_CHARS} characters")
        self._lifetime.check(decoded.iat.timestamp(), decoded.exp.timestamp(), time.time(), in_url=in_url)
        return decoded.sub


def _refusal(cause: BaseException | None) -> PortalAuthError:
    """Say what was wrong with a token: the host application's developer needs it, an attacker learns nothing."""
    if isinstance(cause, jwt.ExpiredSignatureError):
        return ExpiredToken()
    if isinstance(cause, jwt.InvalidAlgorithmError):
        return PortalAuthError(f"the token must be signed with {ALGORITHM}")
    if isinstance(cause, jwt.InvalidSignatureError):
        return PortalAuthError("the token's signature does not verify")
    if isinstance(cause, jwt.MissingRequiredClaimError):
        return PortalAuthError(f"the token has no {cause.claim!r} claim")
    if isinstance(cause, jwt.InvalidAudienceError):
        return PortalAuthError("the token's aud is not this gateway's audience (PORTAL_JWT_AUDIENCE)")
    if isinstance(cause, jwt.InvalidIssuerError):
        return PortalAuthError("the token's iss is not the expected issuer (PORTAL_JWT_ISSUER)")
    if isinstance(cause, jwt.ImmatureSignatureError):
        return PortalAuthError("the token is not valid yet (iat or nbf is in the future)")
    if isinstance(cause, jwt.DecodeError):
        return PortalAuthError("the token is malformed")
    return PortalAuthError()


def _bearer(request: Request[Any, Any, State]) -> tuple[str | None, bool]:
    """(token, whether it came from the URL). The Authorization header wins; GET alone may use `?token=`."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        # RFC 7235 2.1: the auth-scheme is case-insensitive.
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise PortalAuthError("the Authorization header must be 'Bearer <token>'")
        return token.strip(), False
    if request.method == "GET":
        return request.query_params.get("token"), True
    return None, False


class PortalOptions(msgspec.Struct, frozen=True):
    """The POST body, all optional; unknown fields are ignored."""

    return_url: str | None = None
    flow: str | None = None


_OPTIONS = msgspec.json.Decoder(PortalOptions)


def _options(body: bytes) -> PortalOptions:
    if not body.strip():
        return PortalOptions()
    try:
        return _OPTIONS.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise InvalidPortalRequest(f"the body must be a JSON object with optional return_url, flow: {exc}") from None


def _flow(value: str | None) -> PortalFlow | None:
    try:
        return PortalFlow.parse(value)
    except ValueError as exc:
        raise InvalidPortalRequest(str(exc)) from None


async def _open(
    sessions: PortalSessions, ringside_customer: str, return_url: str | None, flow: str | None, method: str
) -> str:
    try:
        parsed = _flow(flow)
        url = await sessions.open(ringside_customer, return_url, parsed)
    except GatewayError as exc:
        log.warning("portal.refused", ringside_customer=ringside_customer, method=method, outcome=exc.code)
        raise
    # Never the URL: it opens the customer's billing details to whoever holds it.
    log.info("portal.session_opened", ringside_customer=ringside_customer, method=method, flow=parsed)
    return url


@post("/", status_code=200)
async def open_portal(
    request: Request[Any, Any, State], ringside_customer: RingsideCustomer, portal_sessions: PortalSessionsDependency
) -> Response[dict[str, str]]:
    """`{"url": ...}` of a new portal session for the token's user. Body (optional JSON): return_url, flow."""
    options = _options(await request.body())
    url = await _open(portal_sessions, ringside_customer, options.return_url, options.flow, "POST")
    return Response({"url": url}, headers=_PRIVATE)


@get("/", status_code=303)
async def redirect_to_portal(
    ringside_customer: RingsideCustomer,
    portal_sessions: PortalSessionsDependency,
    return_url: FromQuery[str | None] = None,
    flow: FromQuery[str | None] = None,
) -> Redirect:
    """303 to a new portal session for the token's user, for plain links and forms. Query: return_url, flow."""
    url = await _open(portal_sessions, ringside_customer, return_url, flow, "GET")
    return Redirect(url, status_code=303, headers=_PRIVATE)


def portal_router(container: Container) -> Router:
    """The portal routes under PATH. Without PORTAL_JWT_SECRET they stay mounted and answer 503
    portal_not_configured, so a host developer who calls them learns what is missing instead of seeing a 404."""
    settings = container.settings()
    verifier = (
        PortalTokenVerifier(
            settings.portal_jwt_secret.reveal(),
            leeway_s=settings.portal_jwt_leeway_s,
            lifetime=TokenLifetime(settings.portal_jwt_max_age_s, settings.portal_link_token_max_ttl_s),
            audience=settings.portal_jwt_audience,
            issuer=settings.portal_jwt_issuer,
        )
        if settings.portal_jwt_secret is not None
        else None
    )

    async def provide_ringside_customer(request: Request[Any, Any, State]) -> str:
        if verifier is None:
            raise PortalNotConfigured("the billing portal is not configured (set PORTAL_JWT_SECRET)")
        try:
            token, in_url = _bearer(request)
            return verifier.subject(token, in_url=in_url)
        except PortalAuthError as exc:
            log.warning("portal.unauthenticated", method=request.method, outcome=exc.code, reason=exc.message)
            raise

    async def provide_portal_sessions(ringside_customer: RingsideCustomer) -> PortalSessions:
        # Depends on the caller's identity only to be resolved after it: authentication (and "not configured")
        # answers first, whatever order Litestar would otherwise resolve the two in.
        del ringside_customer
        return container.portal_sessions()

    return Router(
        path=PATH,
        route_handlers=[open_portal, redirect_to_portal],
        dependencies={
            "ringside_customer": Provide(provide_ringside_customer),
            "portal_sessions": Provide(provide_portal_sessions),
        },
    )
