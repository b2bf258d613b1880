"""The customer mapping file of `gateway customers import FILE.csv`: Ringside customer id, Stripe customer id.

    ringside_id,stripe_customer_id      <- optional header
    cus_42,cus_Q1hZ3xYz
    # comments and blank lines are skipped

Invariant: the whole file is validated before anything is written, and the first bad row stops the import with
its line number, so a file is imported whole or not at all (the write itself is one atomic `set_many`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

import msgspec

from gateway.app.billers import MAX_ID_CHARS, Biller, profile
from gateway.domain.errors import GatewayError

_HEADER_FIRST = {"ringside_id", "ringside_customer_id", "ringside_customer", "ringside"}
_HEADER_SECOND = {"stripe_id", "stripe_customer_id", "stripe_customer", "stripe", "billing_id"}


class CustomerFileError(GatewayError):
    code = "invalid_customer_file"
    default_message = "the customer file is not valid"


class CustomerRow(msgspec.Struct, frozen=True):
    line: int
    ringside_id: str
    stripe_id: str


def check_ringside_id(value: str) -> str:
    """A Ringside customer id as the gateway stores it; ValueError saying what is wrong."""
    value = value.strip()
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"Ringside customer id {value!r} must be 1 to {MAX_ID_CHARS} characters without spaces")
    return value


def check_billing_id(value: str, biller: Biller) -> str:
    """The billing id a Ringside customer maps to, as `biller` names its customers (its profile's rule)."""
    return profile(biller).check_billing_id(value)


def read_rows(lines: Iterable[str], biller: Biller = Biller.STRIPE) -> Iterator[CustomerRow]:
    """Validated rows, in file order. Raises CustomerFileError naming the line of the first bad row.

    A Ringside id mapped twice to different Stripe ids is an error (which one was meant?); the same pair twice is
    one mapping.
    """
    reader = csv.reader(lines)
    seen: dict[str, tuple[int, str]] = {}
    first = True
    for fields in reader:
        line = reader.line_num
        cells = [cell.strip() for cell in fields]
        while cells and not cells[-1]:
            cells.pop()
        if not cells or cells[0].startswith("#"):
            continue
        if first and len(cells) == 2 and cells[0].lower() in _HEADER_FIRST and cells[1].lower() in _HEADER_SECOND:
            first = False
            continue
        first = False
        if len(cells) != 2:
            raise CustomerFileError(
                f"line {line}: expected 2 columns (Ringside customer id, Stripe customer id), found {len(cells)}"
            )
        try:
            ringside_id, stripe_id = check_ringside_id(cells[0]), check_billing_id(cells[1], biller)
        except ValueError as exc:
            raise CustomerFileError(f"line {line}: {exc}") from None
        earlier = seen.get(ringside_id)
        if earlier is not None and earlier[1] != stripe_id:
            raise CustomerFileError(
                f"line {line}: {ringside_id} is mapped to {earlier[1]} on line {earlier[0]} and to {stripe_id} here"
            )
        if earlier is None:
            seen[ringside_id] = (line, stripe_id)
            yield CustomerRow(line, ringside_id, stripe_id)
