"""Adapters: one module per technology, each implementing ports from gateway.domain.ports and nothing more."""
