"""Run `gateway serve` or the bare endpoint with one of this project's optimisations switched off (bench only).

    python -m bench.ablate --without group-commit,batch-biller -- serve --port 8000
    python -m bench.ablate --without fast-server -- bare --port 8001

So that each optimisation's effect is measured on the code as it is now, side by side with the real thing, rather
than against an old commit that differs in everything else too. Switches (in this process only: with `--workers`
above 1 uvicorn spawns fresh interpreters, which would not inherit them, so ablations are single-worker):
- group-commit: every SQLite write commits alone (MAX_GROUP_COMMIT = 1), as before group commit;
- batch-biller: the dispatcher treats every biller as one-event-per-call (the local ledger biller included);
- fast-server: uvicorn on asyncio's own event loop and the pure-Python h11 parser instead of uvloop and httptools.
With no switch it serves as the real thing does, its threads named to the kernel (bench/threads.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.threads import name_threads

SWITCHES = ("group-commit", "batch-biller", "fast-server")


class _NoBatches:
    """Stands in for BatchBillingSink in the dispatcher's isinstance check: nothing is an instance of it."""


def apply(without: list[str]) -> None:
    unknown = set(without) - set(SWITCHES)
    if unknown:
        raise SystemExit(f"unknown switch(es) {sorted(unknown)}; known: {', '.join(SWITCHES)}")
    if "group-commit" in without:
        import gateway.adapters.sqlite.group_commit

        gateway.adapters.sqlite.group_commit.MAX_GROUP_COMMIT = 1
        from gateway.adapters.postgres import PostgresLedger

        # PostgreSQL: every record() its own transaction (and its own commit) instead of sharing one.
        defaults = PostgresLedger.__init__.__kwdefaults__
        assert defaults is not None
        defaults["group_commit"] = False
    if "batch-biller" in without:
        # The dispatcher's own name for the port, looked up at each isinstance check.
        vars(importlib.import_module("gateway.service.dispatcher"))["BatchBillingSink"] = _NoBatches
    if "fast-server" in without:
        from gateway.app.server import UVICORN_OPTIONS

        UVICORN_OPTIONS.update(loop="asyncio", http="h11")


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: python -m bench.ablate --without a,b -- (serve ... | bare ...)")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m bench.ablate")
    parser.add_argument("--without", default="", help=f"comma-separated: {', '.join(SWITCHES)}")
    args = parser.parse_args(argv[:split])
    name_threads()  # per-thread CPU accounts under the threads' own names (bench/threads.py)
    apply([name.strip() for name in args.without.split(",") if name.strip()])
    command, rest = argv[split + 1], argv[split + 2 :]
    if command == "bare":
        from bench import bare_app

        sys.argv = ["bench.bare_app", *rest]
        bare_app.main()
    else:
        from gateway.app.cli import main as gateway

        sys.argv = ["gateway", command, *rest]
        gateway()


if __name__ == "__main__":
    main()
