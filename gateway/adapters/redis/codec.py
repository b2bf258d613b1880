"""Values and replies: msgspec structs as msgpack, and redis-py's reply types narrowed to what this client gets.

Values are msgpack-encoded msgspec structs with their field names: Decimals travel as strings, bytes bodies as
msgpack bin (byte-exact, non-UTF-8 included), floats as float64 (exact), and replicas of two versions can read each
other's records during a rolling upgrade (unknown fields are ignored, missing ones take their default).
"""

from __future__ import annotations

from typing import cast

import msgspec

from gateway.domain.ledger import Entry, Parked
from gateway.domain.ports import MeterEvent

encode = msgspec.msgpack.Encoder().encode
decode_entry = msgspec.msgpack.Decoder(Entry).decode
decode_parked = msgspec.msgpack.Decoder(Parked).decode
decode_meter_event = msgspec.msgpack.Decoder(MeterEvent).decode


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def members(reply: object) -> list[str]:
    """ZRANGE without scores answers a list of members (redis-py's return type covers every ZRANGE form)."""
    return [text(member) for member in cast("list[bytes | str]", reply)]


def glob_escape(literal: str) -> str:
    """A literal prefix in a SCAN MATCH pattern: glob's special characters escaped."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in literal)


def raw(value: bytes | str) -> bytes:
    """The client never decodes replies (no decode_responses), but redis-py's types cannot know it."""
    return value if isinstance(value, bytes) else value.encode()
