"""Use cases that orchestrate the domain through its ports: ingest a delivery, dispatch the ledger."""
