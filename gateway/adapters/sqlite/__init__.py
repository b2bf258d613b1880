"""SQLite adapters: the embedded default store (`GATEWAY_STORE=sqlite:///gateway.db`).

One file holds the ledger (entries, parked records, customers' carries), the customer map and, without
`STRIPE_API_KEY`, the local ledger biller's meter events. Several processes (`gateway serve`, `gateway worker`, CLI
commands) may share the file, so:

- every write runs inside a `BEGIN IMMEDIATE` ... `COMMIT` transaction: the write lock is taken before the first
  read, so a check-then-write (is this id claimed? then claim it) can never interleave with another process's;
- a write is durable before its caller hears of it, because a webhook is acknowledged right after it: the WAL is
  fsynced after the commit, by a thread of its own, before the callers of that commit are answered (in
  rollback-journal mode, `synchronous=FULL` fsyncs inside the commit instead);
- group commit: writes that queue up while a commit is being written share the next transaction, and commits that
  end while an fsync is under way share the next fsync, so one fsync acknowledges many deliveries; a write that
  fails fails alone and the others commit (the group then runs again, each write in a SAVEPOINT of its own);
- any SQLite failure (locked beyond the busy timeout, disk full, I/O error, read-only, not a database) rolls the
  transaction back and surfaces as StoreUnavailable, so a caller never sees a half-written step.

The modules, one job each: `database` (the handle: opening the file, `from_url`), `group_commit` (the writer
thread and its transactions), `durability` (the WAL fsync and the checkpoints), `schema` (tables and migration),
and the stores on top: `ledger` (with `ledger_rows`, and `feedback`: the biller's error reports and
reconciliation), `customers`, `biller` (the local ledger biller).
"""

from gateway.adapters.sqlite.biller import SqliteBiller
from gateway.adapters.sqlite.customers import SqliteCustomers
from gateway.adapters.sqlite.database import SqliteDatabase
from gateway.adapters.sqlite.ledger import SqliteLedger
from gateway.adapters.sqlite.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "SqliteBiller", "SqliteCustomers", "SqliteDatabase", "SqliteLedger"]
