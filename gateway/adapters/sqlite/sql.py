"""Statement shapes shared by the stores: lookups by a set of keys, and inserts of many rows at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

# Rows per multi-row INSERT: one statement step for them all. executemany steps once per row, and each step lets
# go of the GIL and takes it back, which costs a thread switch whenever the event loop is waiting for it.
ROWS_PER_INSERT = 64


def in_list(keys: Sequence[str]) -> tuple[str, list[str]]:
    """The `?, ?, ...` marks and parameters of `IN (...)` over `keys` (at least one).

    The number of keys is rounded up to a power of two (the first key repeated), so that a handful of statement
    texts stay in the connection's statement cache.
    """
    size = 1 << max(0, len(keys) - 1).bit_length()
    return ", ".join("?" * size), [*keys, *[keys[0]] * (size - len(keys))]


def insert_rows(connection: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """`sql` with `{rows}` standing for the VALUES list, run over `rows` in multi-row statements."""
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        row = f"({', '.join('?' * len(chunk[0]))})"
        connection.execute(sql.format(rows=", ".join([row] * len(chunk))), [value for r in chunk for value in r])
