"""Specification of `settle_claims`: a group of claims settled in order against what a store holds, as the SQLite and
PostgreSQL ledgers' group commits use it."""

from __future__ import annotations

from decimal import Decimal

from gateway.domain.ledger import State, pending_entry, settle_claims
from gateway.domain.units import Rounding
from tests.builders import claim

NOW = 1_800_000_000.0


def test_a_group_settles_in_order_carrying_each_customers_remainder_from_claim_to_claim() -> None:
    carries = {"cus_A": Decimal("0.5")}

    settled = settle_claims(
        [
            (claim("evt_1", exact="1.25"), Rounding.CARRY, NOW, None),
            (claim("evt_2", exact="1.25"), Rounding.CARRY, NOW, None),
            (claim("evt_3", exact="0.7", customer="cus_B"), Rounding.CARRY, NOW, None),
        ],
        {},
        set(),
        carries,
    )

    assert [(r.created, r.entry.units if r.entry else None) for r in settled.recorded] == [
        (True, 1),
        (True, 2),
        (True, 0),
    ]
    assert [entry.event_id for entry in settled.created] == ["evt_1", "evt_2", "evt_3"]
    assert all(entry.state is State.PENDING for entry in settled.created)
    assert carries == {"cus_A": Decimal("0"), "cus_B": Decimal("0.7")}
    assert settled.replaced == []


def test_a_claimed_or_parked_id_is_answered_as_a_duplicate_and_a_second_claim_in_the_group_too() -> None:
    held = pending_entry(claim("evt_held"), 1, NOW - 60)
    carries: dict[str, Decimal] = {}

    settled = settle_claims(
        [
            (claim("evt_held"), Rounding.CARRY, NOW, None),
            (claim("evt_parked"), Rounding.CARRY, NOW, None),
            (claim("evt_new"), Rounding.CARRY, NOW, None),
            (claim("evt_new"), Rounding.CARRY, NOW, None),
        ],
        {"evt_held": held},
        {"evt_parked"},
        carries,
    )

    assert [(r.created, r.entry) for r in settled.recorded] == [
        (False, held),
        (False, None),
        (True, settled.created[0]),
        (False, settled.created[0]),
    ]
    assert [entry.event_id for entry in settled.created] == ["evt_new"]


def test_a_replay_takes_the_place_of_the_parked_record_it_replaces() -> None:
    parked = {"evt_parked"}

    settled = settle_claims([(claim("evt_parked", exact="3"), Rounding.CARRY, NOW, "evt_parked")], {}, parked, {})

    assert settled.recorded[0].created
    assert settled.replaced == ["evt_parked"]
    assert parked == set()
