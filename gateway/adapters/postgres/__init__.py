"""PostgreSQL adapters: the production store of any number of replicas (`GATEWAY_STORE=postgresql://...`).

Every replica (`gateway serve`, `gateway worker`, CLI commands) talks to one PostgreSQL through an asyncpg pool.
The rules of each port stay MemoryLedger's; what PostgreSQL adds is that they hold across processes:

- every method is one transaction; an event id's claim is the entries (or parked) table's primary key, taken under
  a transaction-scoped advisory lock on the id; a customer's carry row is locked and written in the transaction that
  records the entry; leases are taken with FOR UPDATE SKIP LOCKED and expire by time;
- answers wait for the COMMIT (`synchronous_commit` on, checked by `durability`), and concurrent record() calls
  share transactions (`recording`: group commit);
- any PostgreSQL failure surfaces as StoreUnavailable (`database`), and the pool reconnects by itself.

Modules: `database` (the pool, the error mapping), `schema` (versioned migrations under an advisory lock), `rows`
(the tables' layout), `recording` (claims and group commit), `ledger`, `feedback` (the FeedbackLedger side of the
ledger), `customers`, `biller` (the local ledger biller) and `durability`.
"""

from gateway.adapters.postgres.biller import PostgresBiller
from gateway.adapters.postgres.customers import PostgresCustomers
from gateway.adapters.postgres.database import PostgresDatabase, is_postgres_url
from gateway.adapters.postgres.durability import PostgresDurability
from gateway.adapters.postgres.ledger import PostgresLedger
from gateway.adapters.postgres.schema import LATEST as SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "PostgresBiller",
    "PostgresCustomers",
    "PostgresDatabase",
    "PostgresDurability",
    "PostgresLedger",
    "is_postgres_url",
]
