"""Ringside's own API: the customer lookup behind the customer store, and the webhook registration."""
