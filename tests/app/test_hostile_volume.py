"""Ten thousand hostile requests at the webhook and the portal, none of them with a valid signature or token.

The Hypothesis suites (test_hostile_input.py, test_openapi_fuzz.py) search the input space cleverly but slowly, a
few hundred examples each. This suite is the volume: HOSTILE_INPUTS requests (default 10,000; 60 % webhook, 40 %
portal) built by a seeded generator from the pieces that broke parsers elsewhere (wrong keys, stale and future
times, `alg: none`, overlong and non-ASCII values, torn JSON, duplicate fields), sent straight to the ASGI app.
For every one: never a 5xx; a JSON error body; a 401 (or 400/413 on the webhook); and, after all of them, the
ledger, the parked records and the customer store are exactly as they were. The seed is HOSTILE_SEED.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from typing import Any

import jwt
import msgspec
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryCustomers, MemoryLedger
from gateway.app.container import build_container
from gateway.app.server import create_app
from gateway.domain.signature import sign
from tests import hostile_tally
from tests.builders import BILLABLE, SECRET, encode, event
from tests.builders import settings as gateway_settings

HOSTILE_INPUTS = int(os.environ.get("HOSTILE_INPUTS", "10000"))
HOSTILE_SEED = int(os.environ.get("HOSTILE_SEED", "20261203"))
NOW = int(time.time())  # the portal's tokens are checked against the wall clock
PORTAL_SECRET = "portal-secret-for-the-hostile-suite-" + "0" * 32
AUDIENCE, ISSUER = "billing-gateway", "https://app.example.com"
WEBHOOK_URL, PORTAL_URL = "/webhooks/ringside", "/api/portal"
JUNK = ["", " ", "\x00", "é", "\u202e", "null", "[]", "{}", "=", ",", "t=", "v1=", "%00", "../", "\\", "a" * 5000]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(rng: random.Random) -> dict[str, Any]:
    """Claims that are each wrong in at least one way the gateway must refuse."""
    good: dict[str, Any] = {"sub": "cust_ALICE", "iat": NOW, "exp": NOW + 300, "aud": AUDIENCE, "iss": ISSUER}
    flaw = rng.choice(
        ["expired", "lifetime", "future", "aud", "iss", "no_aud", "no_iss", "no_sub", "long_sub", "types"]
    )
    if flaw == "expired":
        good["exp"] = NOW - rng.randint(31, 10**6)
    elif flaw == "lifetime":
        good["iat"], good["exp"] = NOW - 10, NOW + rng.choice([86_400, 365 * 86_400, 10**9])
    elif flaw == "future":
        good["iat"] = NOW + rng.randint(31, 10**6)
    elif flaw == "aud":
        good["aud"] = rng.choice(["other-app", "", AUDIENCE + " ", AUDIENCE.upper()])
    elif flaw == "iss":
        good["iss"] = rng.choice(["https://evil.example", "", ISSUER + "/"])
    elif flaw in ("no_aud", "no_iss", "no_sub"):
        del good[flaw[3:]]
    elif flaw == "long_sub":
        good["sub"] = "c" * rng.randint(256, 5000)
    else:
        field = rng.choice(["sub", "exp", "iat"])
        good[field] = rng.choice([None, [], {}, 7] if field == "sub" else [None, [], {}, "soon", 1e400, -1])
    return good


def _verifies(token: str) -> bool:
    try:
        jwt.decode(token, PORTAL_SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    except jwt.InvalidTokenError:
        return False
    return True


def _token(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:  # right key, claims wrong in some way
        return jwt.encode(_claims(rng), PORTAL_SECRET, algorithm="HS256")
    if kind == 1:  # right claims, wrong key or algorithm
        claims = {"sub": "cust_ALICE", "iat": NOW, "exp": NOW + 300, "aud": AUDIENCE, "iss": ISSUER}
        secret, algorithm = rng.choice([(PORTAL_SECRET[::-1], "HS256"), (PORTAL_SECRET, "HS512"), ("x" * 32, "HS256")])
        return jwt.encode(claims, secret, algorithm=algorithm)
    if kind == 2:  # alg none and friends
        header = {"alg": rng.choice(["none", "None", "HS256 ", ""]), "typ": "JWT"}
        claims = {"sub": "cust_ALICE", "iat": NOW, "exp": NOW + 300, "aud": AUDIENCE, "iss": ISSUER}
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{rng.choice(['', 'sig'])}"
    if kind == 3:  # a valid token, torn
        token = jwt.encode(
            {"sub": "cust_ALICE", "iat": NOW, "exp": NOW + 300, "aud": AUDIENCE, "iss": ISSUER}, PORTAL_SECRET
        )
        while True:
            cut = rng.randrange(len(token))
            torn = token[:cut] + rng.choice(["", "x", ".", "=="]) + token[cut + 1 :]
            # A segment's last base64 character carries unused bits: changing only those leaves the token valid.
            if not _verifies(torn):
                return torn
    if kind == 4:
        return ".".join(_b64(rng.randbytes(rng.randrange(40))) for _ in range(rng.choice([1, 2, 3, 4])))
    return rng.choice(JUNK)


def _signature(rng: random.Random, body: bytes) -> str | None:
    kind = rng.randrange(7)
    if kind == 0:
        return None
    if kind == 1:
        return sign(body, "whsec_not_ours", NOW)
    if kind == 2:
        return sign(body + b" ", SECRET, NOW)
    if kind == 3:  # our secret, over these bytes, at a time out of tolerance
        return sign(body, SECRET, NOW + rng.choice([-1, 1]) * rng.randint(301, 10**8))
    if kind == 4:
        return f"t={rng.choice([str(NOW), '', '-1', '1e9', str(NOW) + '.0', '٣'])},v1={rng.randbytes(32).hex()}"
    if kind == 5:
        digest = sign(body, SECRET, NOW).split("v1=")[1]
        return rng.choice([f"v1={digest}", f"t={NOW}", digest, f"t={NOW};v1={digest}", f"T={NOW},V1={digest}"])
    return rng.choice(JUNK)


def _body(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return encode(event(f"evt_{rng.randrange(10**9)}", cost=rng.choice(["0.01", "NaN", "1e308", "-1", "1_000"])))
    if kind == 1:
        raw = encode(event("evt_TORN"))
        return raw[: rng.randrange(len(raw))]
    if kind == 2:
        return rng.randbytes(rng.randrange(300))
    if kind == 3:
        return b'{"id":"evt_DUP","id":"evt_OTHER","type":"' + BILLABLE.encode() + b'","data":{"cost_usd":"1"}}'
    return b"[" * rng.randrange(1, 5000)


def _header_value(text: str) -> bytes:
    return text.encode("utf-8")  # a server receives bytes; non-latin-1 text arrives as its UTF-8 bytes


class Client:
    """Requests straight into the ASGI app: any header bytes at all, and no client library in the way."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes, query: bytes = b""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        headers = [*headers, (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query,
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await self.app(scope, receive, send)
        chunks = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return int(sent[0]["status"]), dict(sent[0]["headers"]), chunks


def _assert_json_error(status: int, body: bytes, allowed: set[int], request: str) -> None:
    assert status in allowed, f"{status} for {request}: {body[:300]!r}"
    error = msgspec.json.decode(body)["error"]
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), request


async def test_ten_thousand_unsigned_or_untokened_requests_change_nothing_and_never_get_a_5xx() -> None:
    container = build_container(
        gateway_settings(
            stripe_api_key="sk_test_hostile",
            stripe_api_base="http://127.0.0.1:9",  # never reached: a request that got there would answer 503
            portal_jwt_secret=PORTAL_SECRET,
            portal_return_url="https://app.example.com/account",
            portal_jwt_audience=AUDIENCE,
            portal_jwt_issuer=ISSUER,
        )
    )
    container.clock.override(providers.Object(FrozenClock(NOW)))
    ledger: MemoryLedger = container.ledger()
    customers: MemoryCustomers = container.customers()
    await customers.set("cust_ALICE", "cus_ALICE")
    before = (dict(ledger.entries), dict(ledger.parked), dict(customers.mapping))
    rng = random.Random(HOSTILE_SEED)
    app = create_app(container, run_dispatcher=False)

    async with AsyncTestClient(app):  # runs the lifespan; the requests go straight to the app
        client = Client(app)
        for n in range(HOSTILE_INPUTS):
            if n % 5 < 3:
                body = _body(rng)
                signature = _signature(rng, body)
                headers = [(b"content-type", _header_value(rng.choice(["application/json", *JUNK[:6]])))]
                if signature is not None:
                    headers.append((b"x-fc-signature", _header_value(signature)))
                status, _, answer = await client.request("POST", WEBHOOK_URL, headers, body)
                hostile_tally.tried(hostile_tally.WEBHOOK)
                _assert_json_error(status, answer, {400, 401, 413}, f"webhook {signature!r} {body[:80]!r}")
            else:
                token = _token(rng)
                method = rng.choice(["GET", "POST"])
                in_query = method == "GET" and rng.random() < 0.5
                headers = [] if in_query else [(b"authorization", _header_value(rng.choice(["Bearer ", ""]) + token))]
                query = b"token=" + token.encode("utf-8", "replace") if in_query else b""
                body = rng.choice([b"", b"{}", b'{"return_url":"https://evil.example"}', rng.randbytes(50)])
                status, _, answer = await client.request(method, PORTAL_URL, headers, body, query)
                hostile_tally.tried(hostile_tally.PORTAL)
                _assert_json_error(status, answer, {401}, f"portal {method} {token[:120]!r}")

    assert (dict(ledger.entries), dict(ledger.parked), dict(customers.mapping)) == before
