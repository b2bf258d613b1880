"""Stripe: the v1 meter event sink, the v2 meter event stream sink, the customer portal and `stripe-setup`."""
