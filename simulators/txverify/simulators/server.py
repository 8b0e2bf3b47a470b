"""Run simulated banks: an issuer port per bank, one control port for the BankSimulator API."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from txverify.runtime import tls
from txverify.runtime.grpcserver import add_health_and_reflection, bind, new_server
from txverify.simulators.bank import Bank, Clock
from txverify.simulators.faults import FaultSpec
from txverify.simulators.ledger import LedgerStore
from txverify.simulators.ledger_stores import open_ledger
from txverify.simulators.node import BankNode
from txverify.simulators.profiles import profile
from txverify.simulators.seed import seed_ledger
from txverify.simulators.settings import SimulatorSettings
from txverify.v1 import simulator_pb2, simulator_pb2_grpc
from txverify.wire import issuer_health_name

log = logging.getLogger(__name__)
SIMULATOR_SERVICE = simulator_pb2.DESCRIPTOR.services_by_name["BankSimulator"].full_name


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
    return Bank(
        member,
        ledger,
        retention_days=settings.retention_for(code),
        pending_window=settings.pending_window_for(code),
        clock=clock,
    )


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
                # The bank's pending window shows (and is changed) with its faults.
                faults=FaultSpec(pending_ms=round(bank.pending_window / timedelta(milliseconds=1))),
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
                await node.apply(replace(node.faults, visibility_delay_ms=delay_ms))
        if on_ready is not None:
            on_ready(sim)
        await stopping.wait()
    finally:
        await sim.stop()
        log.info("simulated banks stopped")
