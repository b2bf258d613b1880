"""The key layout: every Redis key the gateway uses, under one prefix P (default "gw:").

Per-record keys and index keys have distinct first segments, so an event id can never collide with an index:

    P e:<event id>       string  msgpack Entry, the claim of a billable event. Expires GATEWAY_DEDUPE_TTL_S after it
                                 is sent; pending and biller-rejected entries never expire.
    P p:<key>            string  msgpack Parked, the claim of a parked delivery (kept until it is replayed).
    P c:<customer>       string  the customer's carry, a Decimal in plain text (str(Decimal), exact).
    P q:due              zset    pending ids not leased, scored by next_attempt_at.
    P q:leased           zset    pending ids leased by a dispatcher, scored by the lease's deadline.
    P q:held             hash    leased id -> its next_attempt_at, restored to q:due when the lease ends.
    P q:age              zset    every pending id, scored by created_at (pending count, oldest pending).
                                 The three queues also hold scripts.ANCHOR at +inf: never an event id.
    P ix:parked          zset    every parked key, scored by parked_at; P ix:parked:<reason> the same per reason.
    P stats              hash    counters kept by the scripts: sent, units_sent, units_pending (stats is O(1)).
    P customers          hash    Ringside customer id -> billing customer id; P ix:customers (zset, score 0) keeps
                                 the ids in byte order for list().
    P m:<identifier>     string  the local ledger biller's claim on a meter event identifier;
    P meter_events       list    its meter events (msgpack MeterEvent) in the order they were first sent.
    P heartbeat          string  a counter ping() increments: the write that proves Redis accepts writes.

The biller's feedback (docs/notes/reconcile.md):

    P fr:<report id>     string  the claim of an error report reject_sent applied. Expires GATEWAY_DEDUPE_TTL_S after.
    P cursors            hash    polling cursor name -> its value (a float); a script moves it only upward.
    P ix:sent            zset    sent event ids scored by sent_at (sent_between); ids sent more than
                                 GATEWAY_DEDUPE_TTL_S ago (their entries expired) are trimmed as new ones are added.
    P h:<hour>           hash    per hour of the event timestamp (the window's start, unix seconds): `s:<customer>`
                                 the units of its sent entries, `r:<customer>` those of its entries parked
                                 biller_rejected; kept by the scripts that move entries between those states, a
                                 field deleted at 0. Expires GATEWAY_DEDUPE_TTL_S after its last change.
    P ix:hours           zset    every hour that has (or had) an h:<hour>, scored by the hour (24 members a day).
    P fixes              hash    correction identifier -> msgpack Correction (the first one recorded wins).
    P ix:fixes           zset    correction identifiers scored by their window's start.
    P mh:<customer>      hash    the local ledger biller's units per hour of the event timestamp (BillerTotals).

The record and lease scripts also build entry, parked and carry keys themselves, from the prefixes passed to them
(`entry("")`, `parked("")`, `carry("")`), as the scripts that count units per hour build `h:` and `mh:` keys.
"""

from __future__ import annotations

from typing import Final

from gateway.domain.ledger import ParkReason

DEFAULT_PREFIX: Final = "gw:"


class Keys:
    """The key layout of this module's docstring, under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def entry(self, event_id: str) -> str:
        return f"{self.prefix}e:{event_id}"

    def parked(self, key: str) -> str:
        return f"{self.prefix}p:{key}"

    def carry(self, customer: str) -> str:
        return f"{self.prefix}c:{customer}"

    def meter_event(self, identifier: str) -> str:
        return f"{self.prefix}m:{identifier}"

    def parked_index(self, reason: ParkReason | None = None) -> str:
        return f"{self.prefix}ix:parked" if reason is None else f"{self.prefix}ix:parked:{reason.value}"

    def every_reason_index(self) -> list[str]:
        return [self.parked_index(reason) for reason in ParkReason]

    def report(self, report_id: str) -> str:
        return f"{self.prefix}fr:{report_id}"

    def window(self, hour: int | str) -> str:
        return f"{self.prefix}h:{hour}"

    def meter_hours(self, customer: str) -> str:
        return f"{self.prefix}mh:{customer}"

    @property
    def cursors(self) -> str:
        return f"{self.prefix}cursors"

    @property
    def sent_index(self) -> str:
        return f"{self.prefix}ix:sent"

    @property
    def hours(self) -> str:
        return f"{self.prefix}ix:hours"

    @property
    def fixes(self) -> str:
        return f"{self.prefix}fixes"

    @property
    def fix_index(self) -> str:
        return f"{self.prefix}ix:fixes"

    @property
    def due(self) -> str:
        return f"{self.prefix}q:due"

    @property
    def leased(self) -> str:
        return f"{self.prefix}q:leased"

    @property
    def held(self) -> str:
        return f"{self.prefix}q:held"

    @property
    def age(self) -> str:
        return f"{self.prefix}q:age"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def customers(self) -> str:
        return f"{self.prefix}customers"

    @property
    def customer_index(self) -> str:
        return f"{self.prefix}ix:customers"

    @property
    def meter_events(self) -> str:
        return f"{self.prefix}meter_events"

    @property
    def heartbeat(self) -> str:
        return f"{self.prefix}heartbeat"
