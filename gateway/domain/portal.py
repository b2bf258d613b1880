"""The customer billing portal's domain rules (docs/billers.md): which flows a user may ask for, where they may return.

Pure: standard library only, no I/O. The HTTP layer and the biller adapters speak these types.

The return-URL rule exists to prevent an open redirect: the biller sends the user's browser to `return_url` when
they leave the portal, so an attacker who could choose it would get a trusted link (ours, then Stripe's) that ends
on their site. A requested URL is therefore accepted only when it lies under an allow-listed prefix, compared the
way a browser will read it: same scheme, same host, same port (defaults made explicit), and a path under the
prefix's path on a segment boundary. Anything a browser and `urllib` might read differently (backslashes, control
characters, userinfo, dot segments, percent-encoded separators) is refused outright rather than interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import SplitResult, unquote, urlsplit

from gateway.domain.errors import InvalidReturnUrl, PortalAuthError

# Long enough for any real page with a query string; short enough that nobody stuffs a payload through it.
MAX_RETURN_URL_CHARS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}


class PortalFlow(StrEnum):
    """The deep-link flows of Stripe's customer portal a user can start with nothing but their identity.

    Stripe: `flow_data[type]` of `POST /v1/billing_portal/sessions` (docs: customer-management/portal-deep-links).
    `subscription_update_confirm` is left out: it needs the new prices and quantities, so it is not a shortcut.
    """

    PAYMENT_METHOD_UPDATE = "payment_method_update"
    SUBSCRIPTION_CANCEL = "subscription_cancel"
    SUBSCRIPTION_UPDATE = "subscription_update"

    @property
    def needs_subscription(self) -> bool:
        """Stripe requires `flow_data[<type>][subscription]` for these: the biller must find the user's one."""
        return self in (PortalFlow.SUBSCRIPTION_CANCEL, PortalFlow.SUBSCRIPTION_UPDATE)

    @classmethod
    def parse(cls, value: str | None) -> PortalFlow | None:
        """None or "" means no flow (the portal's home page). Raise ValueError naming the choices otherwise."""
        if value is None or value == "":
            return None
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(flow.value for flow in cls)
            raise ValueError(f"flow must be one of: {choices}") from None


@dataclass(frozen=True, slots=True)
class TokenLifetime:
    """How long a verified portal token may live, beyond its own `exp`.

    Invariant: an accepted token was minted for at most `max_age_s` (`exp - iat`), so a token minted for a year, or
    for some other purpose, does not open the portal for a year; a token carried in a URL, which leaks into
    browser history and proxy logs, also expires within `link_max_ttl_s` of now.
    """

    max_age_s: float
    link_max_ttl_s: float

    def check(self, issued_at: float, expires_at: float, now: float, *, in_url: bool) -> None:
        """Raise PortalAuthError (saying which limit) when the token lives longer than allowed."""
        if expires_at - issued_at > self.max_age_s:
            raise PortalAuthError(
                f"the token lives longer than {self.max_age_s:g}s (exp - iat); mint short-lived tokens"
            )
        if in_url and expires_at - now > self.link_max_ttl_s:
            raise PortalAuthError(
                f"a token passed in a URL must expire within {self.link_max_ttl_s:g}s; mint one per link"
            )


@dataclass(frozen=True, slots=True)
class UrlPrefix:
    """An allow-list entry: an absolute http(s) origin plus a path prefix, normalised for comparison."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> UrlPrefix:
        """Parse an operator-supplied entry; raise ValueError when it is not a plain absolute http(s) URL.

        Entries may not carry userinfo, a query or a fragment: they name a place, not a page state.
        """
        parts = _split_plain(url)
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise ValueError("an allowed return URL may not have a query or a fragment")
        return cls(parts.scheme, _host(parts), _port(parts), parts.path or "/")

    def admits(self, candidate: SplitResult) -> bool:
        """True when `candidate` (already checked by `_split_plain`) is under this prefix.

        The path matches on a segment boundary: `/billing` admits `/billing` and `/billing/x`, never `/billingx`.
        A prefix ending in `/` admits only what lies below it.
        """
        if (candidate.scheme, _host(candidate), _port(candidate)) != (self.scheme, self.host, self.port):
            return False
        path = candidate.path or "/"
        if self.path.endswith("/"):
            return path.startswith(self.path) or path + "/" == self.path
        return path == self.path or path.startswith(self.path + "/")


@dataclass(frozen=True, slots=True)
class ReturnUrlPolicy:
    """Where the biller may send a user back to (no open redirect).

    Invariant: `resolve` returns either `default` or a URL admitted by one of `allowed`; it never returns a URL
    whose origin is not the default's or an allow-listed one.
    """

    default: str
    allowed: tuple[UrlPrefix, ...] = ()

    @classmethod
    def build(cls, default: str, allowed: tuple[str, ...] | list[str] = ()) -> ReturnUrlPolicy:
        """From settings. Raise ValueError when the default or an allow-list entry is not a plain http(s) URL."""
        try:
            _split_plain(default)
        except ValueError as exc:
            raise ValueError(f"{default!r}: {exc}") from None
        prefixes = []
        for entry in allowed:
            try:
                prefixes.append(UrlPrefix.parse(entry))
            except ValueError as exc:
                raise ValueError(f"{entry!r}: {exc}") from None
        return cls(default, tuple(prefixes))

    def resolve(self, requested: str | None) -> str:
        """The URL to give the biller: the default when none is requested, else the requested one if admitted.

        Raise InvalidReturnUrl (with a reason fit for the host application's developer) otherwise. The default
        itself is always accepted when requested verbatim.
        """
        if requested is None or requested == "":
            return self.default
        if requested == self.default:
            return requested
        try:
            candidate = _split_plain(requested)
        except ValueError as exc:
            raise InvalidReturnUrl(f"return_url refused: {exc}") from None
        if not any(prefix.admits(candidate) for prefix in self.allowed):
            raise InvalidReturnUrl("return_url refused: it is not under an entry of PORTAL_ALLOWED_RETURN_URLS")
        return requested


def _split_plain(url: str) -> SplitResult:
    """Split an absolute http(s) URL, refusing every shape that browsers and urllib could read differently.

    Raise ValueError with the reason. Refused: over-long URLs; whitespace, control or non-ASCII characters (WHATWG
    URL parsing strips tabs and newlines, so `https://good.example\\n.evil` is not what it looks like); backslashes
    (a browser reads `\\` as `/` in http(s) URLs, urllib does not); schemes other than http and https, including
    scheme-relative `//host`; userinfo (`https://good.example.com@evil.net` goes to evil.net); a missing host or
    a bad port; and `.`/`..` path segments, also percent-encoded (a browser resolves them, escaping the prefix).
    """
    if len(url) > MAX_RETURN_URL_CHARS:
        raise ValueError(f"longer than {MAX_RETURN_URL_CHARS} characters")
    if not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        raise ValueError("only printable ASCII without spaces is allowed (percent-encode the rest)")
    if "\\" in url:
        raise ValueError("backslashes are not allowed")
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError("must be an absolute http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("credentials (user@host) are not allowed")
    if not parts.hostname:
        raise ValueError("has no host")
    _port(parts)
    segments = unquote(parts.path).replace("\\", "/").split("/")
    if any(segment in (".", "..") for segment in segments):
        raise ValueError("'.' and '..' path segments are not allowed")
    return parts


def _host(parts: SplitResult) -> str:
    assert parts.hostname is not None  # checked by _split_plain
    return parts.hostname.lower()


def _port(parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return port if port is not None else _DEFAULT_PORTS[parts.scheme]
