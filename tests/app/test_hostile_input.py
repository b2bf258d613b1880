"""Hostile input through the whole app (Litestar's test client): whatever arrives, the gateway answers clearly.

Properties, for any generated request:
- never a 5xx;
- every non-2xx answer is JSON with `error.code` and `error.message`;
- without a valid signature nothing changes: no entry, no parked record (the ledger is compared before and after);
- a signed body, however odd (non-UTF-8, NaN and Infinity as strings, 1e308 and negative costs, huge numbers, deep
  nesting, duplicate keys, 10,000-char ids), is accepted, ignored, a duplicate, or parked: always a 2xx with a
  status, because Ringside would otherwise retry it forever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.app.container import build_container
from gateway.app.server import create_app
from gateway.domain.signature import sign
from tests import hostile_tally
from tests.builders import BILLABLE, SECRET
from tests.builders import settings as gateway_settings

URL = "/webhooks/ringside"
NOW = 1_800_000_000
MAX_BODY = 1024 * 1024  # the default; the largest generated body is ~100 KB
EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


class Target:
    def __init__(self, client: TestClient[Any], ledger: MemoryLedger) -> None:
        self.client = client
        self.ledger = ledger

    def state(self) -> tuple[int, int]:
        return len(self.ledger.entries), len(self.ledger.parked)

    def post(self, body: bytes, headers: dict[str, str]) -> Any:
        # As bytes: a hostile header may hold any latin-1 character, which httpx refuses in a str.
        raw = {name: value.encode("latin-1") for name, value in headers.items()}
        hostile_tally.tried(hostile_tally.WEBHOOK)
        response = self.client.post(URL, content=body, headers=raw)
        _assert_clear_answer(response)
        return response


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    container = build_container(gateway_settings(max_body_bytes=MAX_BODY))
    container.clock.override(providers.Object(FrozenClock(NOW)))
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        yield Target(client, container.ledger())


def _assert_clear_answer(response: Any) -> None:
    assert response.status_code < 500, response.text
    body = response.json()  # always JSON
    if response.status_code >= 300:
        assert isinstance(body["error"]["code"], str) and body["error"]["code"]
        assert isinstance(body["error"]["message"], str)
    else:
        assert body["status"] in {"accepted", "duplicate", "ignored", "parked"}
        assert isinstance(body["event_id"], str) and body["event_id"]


# -- strategies ----------------------------------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300)
hex_digest = st.text("0123456789abcdef", min_size=0, max_size=80)
timestamps = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str), st.just(str(NOW)), header_text.map(lambda t: t[:20])
)
signature_headers = st.one_of(
    header_text,
    st.builds(lambda t, v: f"t={t},v1={v}", timestamps, hex_digest),
    st.builds(lambda t, v, extra: f"{extra},t={t},v1={v},v1={v}", timestamps, hex_digest, header_text),
    st.just("t=,v1="),
    st.just("=" * 5000),
)
costs: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e308", "-1e308", "1e-400", "-0", "0", "-1", " 1", "1_0", ""]
    ),
    st.sampled_from([1e308, -1e308, 5e-324, -1, 0, 10**400, -(10**400)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=12).map(str),
    st.integers(),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)
ids: st.SearchStrategy[Any] = st.one_of(
    st.text(min_size=1, max_size=40).map(lambda s: f"evt_{s}"),
    st.just("x" * 10_000),
    st.just(""),
    st.text(st.characters(codec="utf-8"), max_size=300),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
customers: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.fixed_dictionaries(
        {"id": st.one_of(st.none(), st.text(max_size=20))},
        optional={"metadata": st.one_of(json_values, st.fixed_dictionaries({"stripe_customer_id": ids}))},
    ),
    json_values,
)


@st.composite
def events(draw: st.DrawFn) -> bytes:
    """A JSON object shaped more or less like a Ringside event, with the fields we read at their worst."""
    data: dict[str, Any] = {"cost_usd": draw(costs), "customer": draw(customers)}
    if draw(st.booleans()):
        data["billable_amount_usd"] = draw(costs)
    if draw(st.booleans()):
        data["extra"] = draw(json_values)
    envelope: dict[str, Any] = {
        "id": draw(ids),
        "type": draw(st.one_of(st.just(BILLABLE), st.text(max_size=30), st.integers())),
        "data": draw(st.one_of(st.just(data), json_values)),
    }
    if draw(st.booleans()):
        envelope["created"] = draw(st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=10)))
    text = json.dumps(envelope, ensure_ascii=draw(st.booleans()))
    return text.encode()


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Bytes a hostile or broken sender could sign: odd events, and bodies that are barely JSON or not at all."""
    kind = draw(st.sampled_from(["event", "bytes", "nested", "duplicate_keys", "non_utf8", "huge_number", "nan"]))
    if kind == "event":
        return draw(events())
    if kind == "bytes":
        return draw(st.binary(max_size=500))
    if kind == "nested":
        depth = draw(st.integers(min_value=1, max_value=20_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        inner = opener * depth + b"1" + closer * depth if opener != b"[" else opener * depth + closer * depth
        return b'{"id":"evt_DEEP","type":"' + BILLABLE.encode() + b'","data":{"junk":' + inner + b"}}"
    if kind == "duplicate_keys":
        first, second = draw(ids), draw(costs)
        return (
            b'{"id":"evt_DUP","id":'
            + json.dumps(first).encode()
            + b',"type":"'
            + BILLABLE.encode()
            + b'","data":{"cost_usd":"0.01","cost_usd":'
            + json.dumps(second).encode()
            + b',"customer":{"id":"c","metadata":{"stripe_customer_id":"cus_X"}}}}'
        )
    if kind == "non_utf8":
        return b'{"id":"evt_\xff\xfe","type":"' + BILLABLE.encode() + b'","data":{"cost_usd":"0.01\xc3"}}'
    if kind == "huge_number":
        digits = draw(st.integers(min_value=300, max_value=20_000))
        return (
            b'{"id":"evt_HUGE","type":"'
            + BILLABLE.encode()
            + b'","data":{"cost_usd":'
            + b"9" * digits
            + b',"customer":{"metadata":{"stripe_customer_id":"cus_X"}}}}'
        )
    token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e99999", b"-0.0e-99999"]))
    return b'{"id":"evt_NAN","type":"' + BILLABLE.encode() + b'","data":{"cost_usd":' + token + b"}}"


# -- properties ----------------------------------------------------------------------------------------------------


@EXAMPLES
@given(body=hostile_bodies(), signature=st.one_of(st.none(), signature_headers), content_type=header_text)
def test_unsigned_or_forged_requests_change_nothing_and_get_a_json_401(
    target: Target, body: bytes, signature: str | None, content_type: str
) -> None:
    before = target.state()
    headers = {"Content-Type": content_type} if content_type else {}
    if signature is not None:
        headers["X-FC-Signature"] = signature

    response = target.post(body, headers)

    assert response.status_code in {400, 401, 413}
    assert target.state() == before


@EXAMPLES
@given(body=hostile_bodies())
def test_signed_hostile_bodies_are_acknowledged_or_parked_never_a_5xx(target: Target, body: bytes) -> None:
    response = target.post(body, {"X-FC-Signature": sign(body, SECRET, NOW), "Content-Type": "application/json"})

    assert response.status_code in {200, 202}, response.text


@EXAMPLES
@given(body=hostile_bodies())
def test_a_signature_over_other_bytes_is_refused(target: Target, body: bytes) -> None:
    before = target.state()
    signature = sign(body + b" ", SECRET, NOW)

    response = target.post(body, {"X-FC-Signature": signature})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert target.state() == before


@EXAMPLES
@given(
    name=st.sampled_from(["X-Request-ID", "X-FC-Signature", "Content-Type", "X-Forwarded-For", "Content-Length"]),
    value=st.one_of(
        header_text,
        st.builds(lambda a, b: f"{a}\r\nSet-Cookie: injected={b}", header_text, header_text),
        st.builds(lambda a: f"{a}\nX-Injected: 1", header_text),
        st.just("x" * 10_000),
    ),
)
def test_hostile_headers_never_reach_the_response_or_the_ledger(target: Target, name: str, value: str) -> None:
    before = target.state()

    try:
        response = target.client.post(URL, content=b"{}", headers={name: value.encode("latin-1")})
        hostile_tally.tried(hostile_tally.WEBHOOK)
    except Exception as exc:  # the test client itself may refuse to send some of these; then nothing was sent
        assert "header" in str(exc).lower() or "content-length" in str(exc).lower(), exc
        return

    _assert_clear_answer(response)
    assert target.state() == before
    assert "set-cookie" not in response.headers and "x-injected" not in response.headers
    request_id = response.headers["x-request-id"]
    assert "\r" not in request_id and "\n" not in request_id and len(request_id) <= 128
