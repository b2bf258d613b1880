"""Test doubles that are real servers: a fake Stripe (stripe_server.py) validating requests against Stripe's OpenAPI."""

from .stripe_server import FAKE_API_KEY, FakeStripe, RecordedRequest

__all__ = ["FAKE_API_KEY", "FakeStripe", "RecordedRequest"]
