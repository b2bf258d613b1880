"""Adapters: one package or module per technology, each implementing ports from gateway.domain.ports."""
