"""Running `gateway ...` in-process with click's CliRunner, in an environment of the test's own making."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from gateway.app.cli import main
from gateway.app.environment import ENVIRONMENT


def cli_env(**values: str) -> dict[str, str | None]:
    """Every gateway variable unset (so the developer's shell cannot leak in), then `values`."""
    env: dict[str, str | None] = dict.fromkeys(ENVIRONMENT)
    env.update(values)
    return env


def sqlite_store(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def gateway(*args: str, env: dict[str, str | None]) -> Result:
    """Run one command; a ClickException is a non-zero exit with its message on stderr, as in a terminal."""
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


def json_out(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
