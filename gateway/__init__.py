"""Ringside -> Stripe billing gateway: signed usage webhooks in, metered billing out, exactly once."""

__version__ = "0.1.0"
