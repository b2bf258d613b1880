"""Benchmarks: load generator, server orchestration, domain and dispatch micro-benchmarks. Figures live here only."""
