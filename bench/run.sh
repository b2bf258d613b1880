#!/usr/bin/env bash
# The ingest benchmark table: bare HMAC endpoint vs the gateway (SQLite, Redis; 1 and 2 workers). See bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench.run "$@"
