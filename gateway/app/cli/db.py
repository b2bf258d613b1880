"""`gateway db migrate` and `gateway db status`: the store's schema version, and its migrations run on demand.

Every process migrates by itself when it opens the store (PostgreSQL under an advisory lock, so replicas that start
together apply each migration once); `db migrate` does it explicitly, before a rollout, and says what it applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from gateway.app.cli.common import env_settings, run
from gateway.app.container import store_kind
from gateway.app.output import emit_json, json_option

T = TypeVar("T")


@click.group()
def db() -> None:
    """The store's schema: its version, and its migrations."""


@db.command("status")
@json_option
def db_status(as_json: bool) -> None:
    """The schema version the store holds and the one this gateway writes."""
    report = run(_status())
    if as_json:
        emit_json(report)
        return
    for line in _lines(report):
        click.echo(line)


@db.command("migrate")
@json_option
def db_migrate(as_json: bool) -> None:
    """Bring the store's schema up to this gateway's version (a no-op when it is there already)."""
    report = run(_migrate())
    if as_json:
        emit_json(report)
        return
    migrated = report.get("migrated")
    if isinstance(migrated, list) and migrated:
        click.echo(f"applied migrations {', '.join(str(v) for v in migrated)}")
    elif report["store"] in ("postgres", "sqlite"):
        click.echo("nothing to migrate")
    for line in _lines(report):
        click.echo(line)


async def _status() -> dict[str, object]:
    settings = env_settings()
    kind = store_kind(settings)
    if kind == "postgres":
        from gateway.adapters.postgres.schema import status

        found = await _on_postgres(settings.store, status)
        return {
            "store": kind,
            "schema": found.schema,
            "version": found.version,
            "latest": found.latest,
            "pending": found.pending,
            "applied": [{"version": v, "description": d, "applied_at": at} for v, d, at in found.applied],
        }
    if kind == "sqlite":
        from gateway.adapters.sqlite import SCHEMA_VERSION, SqliteDatabase
        from gateway.adapters.sqlite.schema import file_version

        path = str(SqliteDatabase.from_url(settings.store).path)
        version = file_version(path)
        return {"store": kind, "path": path, "version": version, "latest": SCHEMA_VERSION}
    return {"store": kind}


async def _migrate() -> dict[str, object]:
    settings = env_settings()
    kind = store_kind(settings)
    if kind == "postgres":
        from gateway.adapters.postgres.schema import migrate

        applied = await _on_postgres(settings.store, migrate)
        return {**await _status(), "migrated": applied}
    if kind == "sqlite":
        from gateway.adapters.sqlite import SqliteDatabase
        from gateway.adapters.sqlite.schema import file_version

        sqlite_db = SqliteDatabase.from_url(settings.store)
        before = file_version(str(sqlite_db.path)) or 0
        await sqlite_db.open()  # opening migrates
        sqlite_db.close()
        report = await _status()
        latest = int(str(report["latest"]))
        return {**report, "migrated": [latest] if before < latest else []}
    return {**await _status(), "migrated": []}


def _lines(report: dict[str, object]) -> list[str]:
    kind = report["store"]
    if kind == "postgres":
        pending = report["pending"]
        return [
            f"store    PostgreSQL, schema {report['schema']}",
            f"version  {report['version']} (this gateway writes {report['latest']})",
            f"pending  {', '.join(str(v) for v in pending) if isinstance(pending, list) and pending else 'none'}",
        ]
    if kind == "sqlite":
        version = report["version"]
        shown = "no file yet (created on first use)" if version is None else str(version)
        return [
            f"store    SQLite, {report['path']}",
            f"version  {shown} (this gateway writes {report['latest']}; PRAGMA user_version)",
        ]
    if kind == "redis":
        return ["store    Redis: it has no schema to migrate (keys are written in their current layout)"]
    return ["store    memory: nothing is kept, so there is no schema"]


async def _on_postgres(url: str, step: Callable[[Any], Awaitable[T]]) -> T:
    """`step` on one connection of a pool of its own (no migration on open), closed after."""
    from gateway.adapters.postgres import PostgresDatabase

    database = PostgresDatabase(url, max_connections=1, migrate=False)
    try:
        async with database.connection() as connection:
            return await step(connection)
    finally:
        await database.close()
