"""Pytest fixtures for the fakes. Import them into a conftest: `from tests.fakes.fixtures import fake_stripe`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lago_server import FAKE_LAGO_KEY, FakeLago
from .ringside_server import FAKE_RINGSIDE_KEY, FakeRingside
from .stripe_server import FAKE_API_KEY, FakeStripe


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    """A fresh fake Stripe per test, API key `sk_test_fake`, at `fake_stripe.url`; stopped after the test."""
    with FakeStripe(api_key=FAKE_API_KEY) as server:
        yield server


@pytest.fixture
def fake_ringside() -> Iterator[FakeRingside]:
    """A fresh fake Ringside API per test, API key `rs_test_fake_key`, at `fake_ringside.url`; stopped after."""
    with FakeRingside(api_key=FAKE_RINGSIDE_KEY) as server:
        yield server


@pytest.fixture
def fake_lago() -> Iterator[FakeLago]:
    """A fresh fake Lago per test, API key `lago_test_key_fake`, at `fake_lago.url`; stopped after the test."""
    with FakeLago(api_key=FAKE_LAGO_KEY) as server:
        yield server
