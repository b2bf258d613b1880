"""`gateway db status` and `gateway db migrate`: the schema version of each store, and migrations on demand."""

from __future__ import annotations

from pathlib import Path

from gateway.adapters.postgres.schema import LATEST, MIGRATIONS
from tests.app.cli_runner import cli_env, gateway, json_out, sqlite_store
from tests.redis_fixtures import REDIS_URL


def test_postgres_status_shows_version_zero_until_migrate_applies_every_migration(postgres_url: str) -> None:
    env = cli_env(GATEWAY_STORE=postgres_url)

    before = json_out(gateway("db", "status", "--json", env=env))
    migrated = gateway("db", "migrate", env=env)
    again = gateway("db", "migrate", env=env)
    after = gateway("db", "status", env=env)

    versions = [version for version, _, _ in MIGRATIONS]
    assert (before["store"], before["version"], before["pending"]) == ("postgres", 0, versions)
    assert migrated.exit_code == 0 and f"applied migrations {', '.join(map(str, versions))}" in migrated.output
    assert "nothing to migrate" in again.output
    assert f"version  {LATEST} (this gateway writes {LATEST})" in after.output and "pending  none" in after.output


def test_sqlite_status_shows_the_files_user_version(tmp_path: Path) -> None:
    env = cli_env(GATEWAY_STORE=sqlite_store(tmp_path / "gateway.db"))

    missing = json_out(gateway("db", "status", "--json", env=env))
    migrated = gateway("db", "migrate", env=env)
    present = json_out(gateway("db", "status", "--json", env=env))

    assert missing["version"] is None and "applied migrations" in migrated.output
    assert present["version"] == present["latest"] >= 2


def test_redis_says_it_has_no_schema() -> None:
    result = gateway("db", "status", env=cli_env(GATEWAY_STORE=REDIS_URL))

    assert result.exit_code == 0 and "no schema" in result.output


def test_an_unreachable_postgres_is_a_one_line_failure() -> None:
    result = gateway("db", "status", env=cli_env(GATEWAY_STORE="postgresql://postgres@127.0.0.1:1/test"))

    assert result.exit_code != 0 and "PostgreSQL is unavailable" in result.output
