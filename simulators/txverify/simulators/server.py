"""Run simulated banks: an issuer port per bank, one control port for the BankSimulator API."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from txverify.runtime import tls
from txverify.runtime.grpcserver import add_health_and_reflection, bind, new_server
from txverify.runtime.storage import MEMORY_URL
from txverify.simulators.bank import Bank, Clock
from txverify.simulators.faults import FaultSpec
from txverify.simulators.ledger import LedgerStore
from txverify.simulators.ledger_stores import open_ledger
from txverify.simulators.node import BankNode
from txverify.simulators.profiles import profile
from txverify.simulators.seed import seed_ledger
from txverify.v1 import simulator_pb2, simulator_pb2_grpc
from txverify.wire import issuer_health_name

log = logging.getLogger(__name__)
SIMULATOR_SERVICE = simulator_pb2.DESCRIPTOR.services_by_name["BankSimulator"].full_name


# Without TLS nobody is authenticated: any caller could transfer money, read every
# slip through the control API, or query an issuer directly.
_PLAINTEXT = (
    "without TLS the simulator authenticates nobody on its issuer ports and control API "
    "(BankSimulator: transfers, every slip)",
    "--tls (txverify up) or --certs DIR (txverify banks)",
)


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """How to run a set of simulated banks."""

    codes: tuple[str, ...]
    host: str = "127.0.0.1"  # without pki: loopback only
    control_port: int = 0
    data_dir: Path | None = None  # None: in-memory ledgers, gone at exit
    seed: int = 1
    transactions: int = 2000  # seeded per bank, only into an empty ledger
    retention_days: int = 7
    # Certificate directory (txverify certs init): the issuer ports then require
    # mTLS (the hub's certificate), the control port too (the operator's or QA's).
    pki: Path | None = None
    # Fixed issuer ports by bank code (others: any free port). A bank restarted on
    # its port is found again by a hub that registered that address.
    issuer_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.codes:
            raise ValueError("at least one bank code is needed")
        if len(set(self.codes)) != len(self.codes):
            raise ValueError("a bank code is listed twice")
        for code in self.codes:
            profile(code)  # validates the code
        if unknown := sorted(set(self.issuer_ports) - set(self.codes)):
            raise ValueError(f"issuer ports given for banks not simulated: {', '.join(unknown)}")
        if any(not 0 <= p <= 65535 for p in self.issuer_ports.values()):
            raise ValueError("issuer ports must be 0-65535")
        if self.transactions < 0:
            raise ValueError("transactions must not be negative")
        if self.retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if self.pki is None and (refused := tls.plaintext_host_error(self.host, *_PLAINTEXT)):
            raise ValueError(refused)

    def ledger_url(self, code: str) -> str:
        if self.data_dir is None:
            return MEMORY_URL
        return f"sqlite:///{(self.data_dir / f'bank-{code}.sqlite').resolve()}"


@dataclass(slots=True)
class RunningSimulator:
    """Started banks and the control server."""

    settings: SimulatorSettings
    nodes: dict[str, BankNode]
    control: grpc.aio.Server
    control_port: int
    health: HealthServicer

    @property
    def control_address(self) -> str:
        return f"{self.settings.host}:{self.control_port}"

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.control.stop(1.0)
        await asyncio.gather(*(n.stop() for n in self.nodes.values()))


def build_bank(settings: SimulatorSettings, code: str, *, clock: Clock | None = None) -> Bank:
    """A bank on its ledger, seeded when the ledger is new."""
    ledger: LedgerStore = open_ledger(settings.ledger_url(code))
    member = profile(code)
    if ledger.count_accounts() == 0:
        seed_ledger(
            ledger,
            member,
            transactions=settings.transactions,
            seed=settings.seed,
            now=clock() if clock else None,
        )
    return Bank(member, ledger, retention_days=settings.retention_days, clock=clock)


def _control_credentials(pki: Path | None) -> grpc.ServerCredentials | None:
    """The control port's TLS: the simulator's certificate, client certificates required."""
    if pki is None:
        return None
    files = tls.Pki(pki).files(tls.SIMULATOR)
    if missing := [p for p in (files.cert, files.key) if not p.exists()]:
        raise ValueError(
            f"{missing[0]} is missing: the control API serves with the simulator's "
            f"certificate; `txverify certs init {pki}` adds it (keeping the CA and the rest)"
        )
    return tls.server_credentials(tls.Pki(pki), tls.SIMULATOR)


async def start_simulator(
    settings: SimulatorSettings, *, clock: Clock | None = None
) -> RunningSimulator:
    """Start every bank's issuer server and the control server; returns once all listen."""
    from txverify.simulators.control import BankSimulatorServicer

    control_credentials = _control_credentials(settings.pki)
    control = new_server()
    nodes: dict[str, BankNode] = {}
    servicer = BankSimulatorServicer(
        nodes, callers=tls.CONTROL_CALLERS if settings.pki is not None else None
    )
    simulator_pb2_grpc.add_BankSimulatorServicer_to_server(servicer, control)
    health = await add_health_and_reflection(control, [SIMULATOR_SERVICE])

    def report(node: BankNode) -> None:
        state = (
            health_pb2.HealthCheckResponse.SERVING
            if node.listening
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        task = asyncio.get_running_loop().create_task(
            health.set(issuer_health_name(node.bank.code), state)
        )
        servicer.background.add(task)
        task.add_done_callback(servicer.background.discard)

    try:
        for code in settings.codes:
            bank = await asyncio.to_thread(build_bank, settings, code, clock=clock)
            node = BankNode(
                bank,
                settings.host,
                settings.pki,
                port=settings.issuer_ports.get(code, 0),
                on_listening=report,
            )
            nodes[code] = node
            await node.open()
            log.info(
                "bank %s (%s) issuer on %s, %d transactions",
                code,
                bank.profile.short_name,
                node.address,
                bank.ledger.count_transactions(),
            )
        port = bind(control, settings.host, settings.control_port, control_credentials)
        await control.start()
    except BaseException:
        await asyncio.gather(*(n.stop() for n in nodes.values()))
        raise
    log.info("simulator control on %s:%d", settings.host, port)
    return RunningSimulator(settings, nodes, control, port, health)


async def serve_simulator(
    settings: SimulatorSettings,
    on_ready: Callable[[RunningSimulator], None] | None = None,
    *,
    visibility_delay: timedelta = timedelta(0),
) -> None:
    """Run until SIGINT/SIGTERM, then stop every server."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    sim = await start_simulator(settings)
    try:
        if visibility_delay:
            for node in sim.nodes.values():
                delay_ms = int(visibility_delay / timedelta(milliseconds=1))
                await node.apply(FaultSpec(visibility_delay_ms=delay_ms))
        if on_ready is not None:
            on_ready(sim)
        await stopping.wait()
    finally:
        await sim.stop()
        log.info("simulated banks stopped")
