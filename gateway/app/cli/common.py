"""What every operator command shares: its settings, how it runs its coroutine, and the container it opens.

Each command takes the same settings as `serve`, prints text (or one JSON document with --json) and exits non-zero
with a one-line reason on failure. The logic lives in gateway/app/{setup,simulate,demo,customer_file}.py and
gateway/service/replay.py; the commands parse options and print.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import click

from gateway.app.container import Container, build_container
from gateway.app.environment import load_settings
from gateway.app.lifecycle import running
from gateway.app.settings import Settings
from gateway.app.settings_checks import SettingsError

T = TypeVar("T")


def env_settings(**overrides: Any) -> Settings:
    """The settings from this process's environment; a bad one is a one-line failure, not a traceback."""
    try:
        return load_settings(os.environ, **overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a store that cannot be reached is a one-line failure, not a traceback."""
    from gateway.domain.errors import GatewayError

    try:
        return asyncio.run(work)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None


def opened(settings: Settings) -> AbstractAsyncContextManager[Container]:
    """A container for one command, closed (databases, clients) when the command is done."""
    return running(build_container(settings))


def checked_ids(ringside_id: str, stripe_id: str | None = None) -> tuple[str, str | None]:
    """A Ringside id and a billing id as the selected biller accepts them, or a one-line failure."""
    from gateway.app.customer_file import check_billing_id, check_ringside_id

    biller = env_settings().selected_biller()
    try:
        return check_ringside_id(ringside_id), None if stripe_id is None else check_billing_id(stripe_id, biller)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
