"""Pytest fixtures for the fakes. Import them into a conftest: `from tests.fakes.fixtures import fake_stripe`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stripe_server import FAKE_API_KEY, FakeStripe


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    """A fresh fake Stripe per test, API key `sk_test_fake`, at `fake_stripe.url`; stopped after the test."""
    with FakeStripe(api_key=FAKE_API_KEY) as server:
        yield server
