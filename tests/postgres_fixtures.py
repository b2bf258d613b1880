"""A real PostgreSQL for tests (never a mock): the server `scripts/test` found or started (GATEWAY_TEST_POSTGRES_URL,
by default the one on 127.0.0.1:5432, database `test`).

Every test gets a schema of its own (`test_<hex>`), named in its URL's search_path and dropped afterwards, so tests
run side by side on one shared server. A server that does not answer FAILS the test, with how to get one: the
production store is never skipped silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import pytest

from gateway.adapters.postgres import PostgresDatabase

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
HOW_TO = (
    "run ./scripts/test (it starts a throwaway server with initdb/pg_ctl when they are installed), or install "
    "PostgreSQL (apt-get install postgresql; brew install postgresql) and let it answer on 127.0.0.1:5432 with a "
    "database `test`, or point GATEWAY_TEST_POSTGRES_URL at one"
)


def with_schema(url: str, schema: str) -> str:
    """`url` whose sessions put their tables in `schema` (libpq's `options=-csearch_path=...`)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


async def admin_connection(url: str = POSTGRES_URL) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(f"no PostgreSQL answers at {url} ({exc}); {HOW_TO}")


async def create_schema(url: str = POSTGRES_URL) -> str:
    schema = f"test_{uuid.uuid4().hex}"
    connection = await admin_connection(url)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
    return schema


async def drop_schema(schema: str, url: str = POSTGRES_URL) -> None:
    connection = await admin_connection(url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A URL whose tables live in a schema no other test uses; the schema is dropped when the test ends."""
    schema = await create_schema()
    yield with_schema(POSTGRES_URL, schema)
    await drop_schema(schema)


@pytest.fixture
async def postgres_database(postgres_url: str) -> AsyncIterator[PostgresDatabase]:
    # A few connections per test: several helpers' test runs share the server's max_connections.
    database = PostgresDatabase(postgres_url, max_connections=4)
    yield database
    await database.close()
