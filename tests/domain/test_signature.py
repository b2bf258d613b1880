"""Specification of Ringside's webhook signature check (docs/design.md, "Signature").

`X-FC-Signature: t=<unix seconds>,v1=<lowercase hex>`, `v1 = hex(HMAC-SHA256(secret, "<t>." + raw body))`, valid
when any `v1` matches any live secret and `|now - t| <= tolerance`. The expected digests below are computed with
`hmac` directly, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.errors import (
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    SignatureError,
    TimestampOutOfTolerance,
)
from gateway.domain.signature import DEFAULT_TOLERANCE_S, SignatureVerifier, sign

NOW = 1_700_000_000
SECRET = "whsec_NEW_4f1c0ffee"
OLD_SECRET = "whsec_OLD_0badcafe"
UNKNOWN_SECRET = "whsec_NOT_CONFIGURED"
BODY = (
    b'{"id":"evt_SIGNED","type":"chat.completion.finished","data":{"cost_usd":"0.0125","customer_id":"cus_RINGSIDE"}}'
)


def v1(body: bytes = BODY, secret: str = SECRET, t: int = NOW) -> str:
    """What Ringside puts in `v1=` for `body` signed at `t`."""
    return hmac.new(secret.encode("utf-8"), b"%d." % t + body, hashlib.sha256).hexdigest()


GOOD = v1()
DECOY = "0" * 64
RESERIALISED = json.dumps(json.loads(BODY), indent=2, sort_keys=True).encode()
FLIPPED = BODY[:10] + bytes([BODY[10] ^ 0x01]) + BODY[11:]
ARABIC_INDIC_NOW = str(NOW).translate({ord(d): 0x0660 + int(d) for d in "0123456789"})
FULLWIDTH_NOW = str(NOW).translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
assert int(ARABIC_INDIC_NOW) == int(FULLWIDTH_NOW) == NOW
assert RESERIALISED != BODY and json.loads(RESERIALISED) == json.loads(BODY)


@dataclass(frozen=True)
class Delivery:
    header: str | None
    body: bytes = BODY
    now: float = NOW
    secrets: tuple[str, ...] = (SECRET,)
    tolerance_s: int | None = None  # None: the verifier's default, which the contract fixes at 300 s


def verify(delivery: Delivery) -> int:
    if delivery.tolerance_s is None:
        verifier = SignatureVerifier(delivery.secrets)
    else:
        verifier = SignatureVerifier(delivery.secrets, tolerance_s=delivery.tolerance_s)
    return verifier.verify(delivery.header, delivery.body, delivery.now)


VALID: dict[str, Delivery] = {
    "plain t then v1": Delivery(f"t={NOW},v1={GOOD}"),
    "v1 before t": Delivery(f"v1={GOOD},t={NOW}"),
    "spaces after the commas": Delivery(f"t={NOW}, v1={GOOD}"),
    "unknown fields ignored": Delivery(f"kid=2024-rotation,t={NOW},v0=deadbeef,v1={GOOD},alg=sha256"),
    "field without '=' ignored": Delivery(f"t={NOW},garbage,v1={GOOD}"),
    "t exactly 300 s in the past": Delivery(f"t={NOW},v1={GOOD}", now=NOW + 300),
    "t exactly 300 s in the future": Delivery(f"t={NOW},v1={GOOD}", now=NOW - 300),
    "custom tolerance: t exactly 60 s in the past": Delivery(f"t={NOW},v1={GOOD}", now=NOW + 60, tolerance_s=60),
    "custom tolerance: t exactly 60 s in the future": Delivery(f"t={NOW},v1={GOOD}", now=NOW - 60, tolerance_s=60),
    "rotation: old secret signs, both live": Delivery(
        f"t={NOW},v1={v1(secret=OLD_SECRET)}", secrets=(OLD_SECRET, SECRET)
    ),
    "rotation: new secret signs, both live": Delivery(f"t={NOW},v1={GOOD}", secrets=(OLD_SECRET, SECRET)),
    "rotation: one v1 per secret": Delivery(
        f"t={NOW},v1={v1(secret=OLD_SECRET)},v1={GOOD}", secrets=(OLD_SECRET, SECRET)
    ),
    "decoy v1 values before the right one": Delivery(f"t={NOW},v1={DECOY},v1={v1(secret=UNKNOWN_SECRET)},v1={GOOD}"),
    "decoy v1 values after the right one": Delivery(f"t={NOW},v1={GOOD},v1={DECOY},v1={v1(secret=UNKNOWN_SECRET)}"),
    "decoys on both sides": Delivery(f"t={NOW},v1=not-hex,v1={GOOD},v1=é"),
    "empty body": Delivery(f"t={NOW},v1={v1(body=b'')}", body=b""),
}


@pytest.mark.parametrize("delivery", VALID.values(), ids=VALID.keys())
def test_verify_returns_the_signed_timestamp_when_a_v1_matches_a_live_secret_in_time(delivery: Delivery) -> None:
    # Arrange: `delivery`. Act:
    signed_at = verify(delivery)

    # Assert
    assert signed_at == NOW


REFUSED: dict[str, tuple[Delivery, type[SignatureError]]] = {
    # -- missing ------------------------------------------------------------------------------------------------
    "header absent": (Delivery(None), MissingSignature),
    "header empty": (Delivery(""), MissingSignature),
    "header blank": (Delivery("   "), MissingSignature),
    # -- malformed ----------------------------------------------------------------------------------------------
    "no t field": (Delivery(f"v1={GOOD}"), MalformedSignature),
    "no v1 field": (Delivery(f"t={NOW}"), MalformedSignature),
    "v1 without '='": (Delivery(f"t={NOW},v1"), MalformedSignature),
    "neither field": (Delivery("hello"), MalformedSignature),
    "only separators": (Delivery(",,=,"), MalformedSignature),
    "t empty": (Delivery(f"t=,v1={GOOD}"), MalformedSignature),
    "t not a number": (Delivery(f"t=yesterday,v1={GOOD}"), MalformedSignature),
    "t as a decimal": (Delivery(f"t={NOW}.0,v1={GOOD}"), MalformedSignature),
    "t with a plus sign": (Delivery(f"t=+{NOW},v1={GOOD}"), MalformedSignature),
    "t with a minus sign": (Delivery(f"t=-{NOW},v1={GOOD}"), MalformedSignature),
    "t with a leading space": (Delivery(f"t= {NOW},v1={GOOD}"), MalformedSignature),
    "t with an inner space": (Delivery(f"t=1700 000000,v1={GOOD}"), MalformedSignature),
    "t with underscores": (Delivery(f"t=1_700_000_000,v1={GOOD}"), MalformedSignature),
    # int() would accept these as 1700000000; the contract wants unix seconds in plain ASCII digits.
    "t in Arabic-Indic digits": (Delivery(f"t={ARABIC_INDIC_NOW},v1={GOOD}"), MalformedSignature),
    "t in fullwidth digits": (Delivery(f"t={FULLWIDTH_NOW},v1={GOOD}"), MalformedSignature),
    "t in superscript digits": (Delivery(f"t=\u00b9\u00b2,v1={GOOD}"), MalformedSignature),
    "header over 4096 characters": (Delivery(f"t={NOW},v1={GOOD}," + "x" * 5000), MalformedSignature),
    # Which `t` was signed would be a guess: the one signed (first) and another one after it.
    "two t fields, the signed one first": (Delivery(f"t={NOW},t={NOW + 1},v1={GOOD}"), MalformedSignature),
    "two t fields, the signed one last": (Delivery(f"t={NOW + 1},v1={GOOD},t={NOW}"), MalformedSignature),
    "two identical t fields": (Delivery(f"t={NOW},v1={GOOD},t={NOW}"), MalformedSignature),
    "right v1 buried in an overlong header": (
        Delivery(f"t={NOW}," + f"v1={DECOY}," * 70 + f"v1={GOOD}"),
        MalformedSignature,
    ),
    # -- out of tolerance ---------------------------------------------------------------------------------------
    "t 301 s in the past": (Delivery(f"t={NOW},v1={GOOD}", now=NOW + 301), TimestampOutOfTolerance),
    "t 301 s in the future": (Delivery(f"t={NOW},v1={GOOD}", now=NOW - 301), TimestampOutOfTolerance),
    "t half a second past the tolerance": (Delivery(f"t={NOW},v1={GOOD}", now=NOW + 300.5), TimestampOutOfTolerance),
    "t a day in the past": (Delivery(f"t={NOW},v1={GOOD}", now=NOW + 86_400), TimestampOutOfTolerance),
    "custom tolerance: t 61 s in the past": (
        Delivery(f"t={NOW},v1={GOOD}", now=NOW + 61, tolerance_s=60),
        TimestampOutOfTolerance,
    ),
    "custom tolerance: t 61 s in the future": (
        Delivery(f"t={NOW},v1={GOOD}", now=NOW - 61, tolerance_s=60),
        TimestampOutOfTolerance,
    ),
    # -- invalid ------------------------------------------------------------------------------------------------
    "wrong secret": (Delivery(f"t={NOW},v1={v1(secret=UNKNOWN_SECRET)}"), InvalidSignature),
    "old secret signs, only the new one live": (
        Delivery(f"t={NOW},v1={v1(secret=OLD_SECRET)}", secrets=(SECRET,)),
        InvalidSignature,
    ),
    "only decoys": (Delivery(f"t={NOW},v1={DECOY},v1={v1(secret=UNKNOWN_SECRET)}"), InvalidSignature),
    "v1 signed for another t": (Delivery(f"t={NOW + 1},v1={GOOD}", now=NOW + 1), InvalidSignature),
    "v1 empty": (Delivery(f"t={NOW},v1="), InvalidSignature),
    "v1 not hex": (Delivery(f"t={NOW},v1={'z' * 64}"), InvalidSignature),
    "v1 truncated": (Delivery(f"t={NOW},v1={GOOD[:-1]}"), InvalidSignature),
    "v1 non-ASCII": (Delivery(f"t={NOW},v1={'é' * 64}"), InvalidSignature),
    "v1 in CJK": (Delivery(f"t={NOW},v1=署名"), InvalidSignature),
    "v1 with an escaped surrogate": (Delivery(f"t={NOW},v1=\udcff"), InvalidSignature),
    "v1 with a lone surrogate": (Delivery(f"t={NOW},v1=\ud800"), InvalidSignature),
    "body re-serialised (same JSON, other whitespace and key order)": (
        Delivery(f"t={NOW},v1={GOOD}", body=RESERIALISED),
        InvalidSignature,
    ),
    "one body byte flipped": (Delivery(f"t={NOW},v1={GOOD}", body=FLIPPED), InvalidSignature),
    "trailing newline added to the body": (Delivery(f"t={NOW},v1={GOOD}", body=BODY + b"\n"), InvalidSignature),
    "wrong signature with a stale t: signature is checked first": (
        Delivery(f"t={NOW},v1={v1(secret=UNKNOWN_SECRET)}", now=NOW + 86_400),
        InvalidSignature,
    ),
}


@pytest.mark.parametrize(("delivery", "error"), REFUSED.values(), ids=REFUSED.keys())
def test_verify_raises_the_contract_error_when_the_signature_is_not_acceptable(
    delivery: Delivery, error: type[SignatureError]
) -> None:
    # Arrange: `delivery`. Act / Assert: the exact class, never a crash or a broader error.
    with pytest.raises(SignatureError) as raised:
        verify(delivery)

    assert type(raised.value) is error


def test_signature_errors_carry_the_contract_codes_when_raised() -> None:
    # Arrange
    errors = (MissingSignature, MalformedSignature, TimestampOutOfTolerance, InvalidSignature)

    # Act
    codes = {error: error().code for error in errors}

    # Assert: the 401 error codes of docs/design.md, "Responses".
    assert codes == {
        MissingSignature: "missing_signature",
        MalformedSignature: "malformed_signature",
        TimestampOutOfTolerance: "timestamp_out_of_tolerance",
        InvalidSignature: "invalid_signature",
    }


def test_default_tolerance_is_300_seconds_when_none_is_configured() -> None:
    assert DEFAULT_TOLERANCE_S == 300


def test_repr_never_shows_a_secret_when_the_verifier_is_printed() -> None:
    # Arrange
    verifier = SignatureVerifier([OLD_SECRET, SECRET], tolerance_s=120)

    # Act
    printed = [repr(verifier), str(verifier), f"{verifier!r}", f"{verifier}"]

    # Assert
    for text in printed:
        assert OLD_SECRET not in text
        assert SECRET not in text


def test_verifier_refuses_to_start_when_no_secret_is_configured() -> None:
    with pytest.raises(ValueError):
        SignatureVerifier([])


def test_sign_produces_ringsides_header_when_given_a_body_secret_and_time() -> None:
    # Act
    header = sign(BODY, SECRET, NOW)

    # Assert
    assert header == f"t={NOW},v1={GOOD}"


def test_sign_output_verifies_when_round_tripped() -> None:
    # Arrange
    header = sign(BODY, SECRET, NOW)

    # Act
    signed_at = SignatureVerifier([SECRET]).verify(header, BODY, NOW)

    # Assert
    assert signed_at == NOW


secrets = st.text(min_size=1, max_size=64)
timestamps = st.integers(min_value=0, max_value=10**12 - 1)


@given(body=st.binary(max_size=2048), secret=secrets, timestamp=timestamps)
def test_sign_then_verify_succeeds_when_body_and_secret_are_arbitrary(body: bytes, secret: str, timestamp: int) -> None:
    # Arrange
    header = sign(body, secret, timestamp)

    # Act
    signed_at = SignatureVerifier([secret]).verify(header, body, timestamp)

    # Assert
    assert signed_at == timestamp


@given(
    body=st.binary(min_size=1, max_size=2048),
    secret=secrets,
    timestamp=timestamps,
    position=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=255),
)
def test_verify_fails_when_any_single_body_byte_changes(
    body: bytes, secret: str, timestamp: int, position: int, delta: int
) -> None:
    # Arrange
    header = sign(body, secret, timestamp)
    index = position % len(body)
    tampered = body[:index] + bytes([(body[index] + delta) % 256]) + body[index + 1 :]

    # Act / Assert
    with pytest.raises(InvalidSignature):
        SignatureVerifier([secret]).verify(header, tampered, timestamp)


def test_signed_bytes_use_the_timestamp_text_as_sent_when_it_has_leading_zeros() -> None:
    body = b'{"id":"evt_ZEROS"}'
    text = "0" + str(NOW)
    as_sent = hmac.new(b"s3cret", text.encode() + b"." + body, hashlib.sha256).hexdigest()
    verifier = SignatureVerifier(["s3cret"])

    assert verifier.verify(f"t={text},v1={as_sent}", body, NOW) == NOW


# -- screening a header before the body arrives ------------------------------------------------------------------


def test_screen_lets_a_well_formed_header_in_tolerance_through_whatever_its_v1() -> None:
    verifier = SignatureVerifier([SECRET])

    verifier.screen(f"t={NOW},v1={DECOY}", NOW + 300)
    verifier.screen(f"t={NOW},v1={GOOD}", NOW - 300)


@pytest.mark.parametrize(
    ("header", "now", "error"),
    [
        pytest.param(None, NOW, MissingSignature, id="missing"),
        pytest.param(f"v1={GOOD}", NOW, MalformedSignature, id="no t"),
        pytest.param(f"t={ARABIC_INDIC_NOW},v1={GOOD}", NOW, MalformedSignature, id="non-ASCII t"),
        pytest.param(f"t={NOW}", NOW, MalformedSignature, id="no v1"),
        pytest.param(f"t={NOW},v1={GOOD}", NOW + 301, TimestampOutOfTolerance, id="stale"),
        pytest.param(f"t={NOW},v1={GOOD}", NOW - 301, TimestampOutOfTolerance, id="future"),
    ],
)
def test_screen_refuses_a_header_no_body_could_make_valid(
    header: str | None, now: float, error: type[SignatureError]
) -> None:
    with pytest.raises(error):
        SignatureVerifier([SECRET]).screen(header, now)
