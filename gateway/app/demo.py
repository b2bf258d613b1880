"""`gateway demo`: the whole pipeline on a fresh machine, with no accounts and nothing leaving it.

A gateway runs in this process (uvicorn on a free local port) on a temporary SQLite file with the local ledger
biller, never Stripe, whatever the environment says. `simulate` plays Ringside against it (re-emits, forged
signatures, a customer nobody mapped yet); the demo then maps that customer and replays its parked events, waits
for the dispatcher to deliver everything, and reports what was billed per customer.

Invariant it checks and reports: under `carry` rounding, the units billed to each customer equal
floor(its acknowledged spend x GATEWAY_UNITS_PER_USD), every event is billed once, and every forgery is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

import msgspec

from gateway.app.billers import Biller
from gateway.app.container import Container, build_container
from gateway.app.environment import load_settings
from gateway.app.output import usd
from gateway.app.secret import Secret
from gateway.app.server import ServerDidNotStart, create_app, server_config, server_limits, serving
from gateway.app.settings import Settings
from gateway.app.simulate import UNMAPPED_CUSTOMER, SimulationConfig, Simulator
from gateway.app.simulation_report import SimulationReport
from gateway.domain.ledger import ParkReason
from gateway.domain.units import Rounding
from gateway.service.replay import ReplayStatus

LATE_STRIPE_CUSTOMER = "cus_sim_late"
_START_TIMEOUT_S = 15.0
_DRAIN_TIMEOUT_S = 30.0


class DemoError(Exception):
    """The demo could not run, or what it saw breaks an invariant; the message is one line."""


class BilledCustomer(msgspec.Struct, frozen=True):
    customer: str
    events: int
    units: int
    usd: Decimal
    expected_units: int | None


class DemoReport(msgspec.Struct, frozen=True):
    database: str | None
    units_per_usd: int
    simulation: SimulationReport
    replayed: int
    billed: list[BilledCustomer]
    total_units: int
    total_usd: Decimal
    pending: int
    parked: int

    @property
    def problems(self) -> list[str]:
        problems = list(self.simulation.problems)
        for billed in self.billed:
            if billed.expected_units is not None and billed.units != billed.expected_units:
                problems.append(f"{billed.customer} was billed {billed.units} units, not {billed.expected_units}")
        if self.pending:
            problems.append(f"{self.pending} entries were still pending when the demo stopped")
        return problems


def demo_settings(environ: Mapping[str, str], database: Path, port: int) -> Settings:
    """The environment's settings, except what must stay on this machine: the store, the secret, the biller."""
    return load_settings(
        environ,
        store=f"sqlite:///{database.resolve()}",
        webhook_secrets=[Secret("demo_" + secrets.token_urlsafe(24))],
        stripe={"api_key": None, "api_base": None},
        biller=Biller.LEDGER,
        host="127.0.0.1",
        port=port,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_demo(
    environ: Mapping[str, str],
    *,
    events: int = 300,
    customers: int = 4,
    database: Path | None = None,
    seed: int | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> DemoReport:
    """Run the demo end to end; `database` keeps the SQLite file there instead of a temporary directory."""
    workdir = None if database is not None else Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    path = database if database is not None else Path(workdir or ".") / "demo.db"
    if path.exists():
        raise DemoError(f"{path} already exists: the demo starts from an empty ledger")
    try:
        settings = demo_settings(environ, path, free_port())
        async with _serving(settings) as container:
            url = f"http://{settings.host}:{settings.port}"
            say(f"gateway   {url} on SQLite {path}, with the local ledger biller (nothing is sent to Stripe)")
            config = SimulationConfig(
                url=url,
                events=events,
                customers=customers,
                duplicates=0.2,
                bad_signatures=0.03,
                unmapped=0.05,
                concurrency=16,
                seed=seed,
            )
            say(
                f"simulate  {events} events for {customers} customers as Ringside would send them: 20% re-emitted, "
                f"3% forged signatures, 5% for {UNMAPPED_CUSTOMER}, whom nobody has mapped yet"
            )
            simulator = Simulator(config, settings.webhook_secrets[0].reveal())
            simulation = await simulator.run()
            await _drained(container)
            replayed = await _map_and_replay(container, say)
            await _drained(container)
            return await _report(container, settings, simulation, replayed, None if workdir else path)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[Container]:
    """The gateway of `gateway serve`, dispatcher included, in this process; stopped (and closed) on exit."""
    container = build_container(settings)
    config = server_config(
        create_app(container), host=settings.host, port=settings.port, log_level="warning", **server_limits(settings)
    )
    try:
        async with serving(config, start_timeout_s=_START_TIMEOUT_S):
            yield container
    except ServerDidNotStart as exc:
        raise DemoError(str(exc)) from None


async def _drained(container: Container) -> None:
    """Wait until the dispatcher has delivered every pending entry."""
    ledger = container.ledger()
    try:
        async with asyncio.timeout(_DRAIN_TIMEOUT_S):
            # The dispatcher signals nothing when it is done; the ledger (possibly another process's) is the truth.
            while (await ledger.stats()).pending:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise DemoError(f"entries were still pending after {_DRAIN_TIMEOUT_S:.0f}s") from None


async def _map_and_replay(container: Container, say: Callable[[str], None]) -> int:
    """What an operator does about `unknown_customer`: map the customer, then `gateway parked replay --all`."""
    replayer = container.replayer()
    keys = await replayer.parked_keys(ParkReason.UNKNOWN_CUSTOMER)
    if not keys:
        return 0
    await container.customers().set(UNMAPPED_CUSTOMER, LATE_STRIPE_CUSTOMER)
    results = await replayer.replay_all(keys)
    billed = sum(1 for result in results if result.status is ReplayStatus.BILLED)
    say(
        f"parked    {len(keys)} events of {UNMAPPED_CUSTOMER} (unknown_customer); mapped it to "
        f"{LATE_STRIPE_CUSTOMER} and replayed them: {billed} billed"
    )
    return billed


async def _report(
    container: Container,
    settings: Settings,
    simulation: SimulationReport,
    replayed: int,
    database: Path | None,
) -> DemoReport:
    ledger = container.ledger()
    usage = await ledger.usage()
    stats = await ledger.stats()
    spend: dict[str, Decimal] = {}
    for total in simulation.customers:
        customer = total.stripe_customer or LATE_STRIPE_CUSTOMER
        spend[customer] = spend.get(customer, Decimal(0)) + total.spend_usd
    scale = Decimal(settings.units_per_usd)
    billed = [
        BilledCustomer(
            customer=row.billing_customer,
            events=row.events,
            units=row.units_sent,
            usd=usd(row.units_sent, settings.units_per_usd),
            # Under carry, a customer's units are the floor of its exact total (gateway.domain.units).
            expected_units=int((spend.get(row.billing_customer, Decimal(0)) * scale).to_integral_value(ROUND_FLOOR))
            if settings.rounding is Rounding.CARRY
            else None,
        )
        for row in usage
    ]
    total_units = sum(row.units for row in billed)
    return DemoReport(
        database=str(database) if database else None,
        units_per_usd=settings.units_per_usd,
        simulation=simulation,
        replayed=replayed,
        billed=billed,
        total_units=total_units,
        total_usd=usd(total_units, settings.units_per_usd),
        pending=stats.pending,
        parked=stats.parked,
    )
