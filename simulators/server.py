"""Run simulated banks: one IssuerService server per bank, each on its own port."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1._async import HealthServicer

from simulators.issuer import Issuer, IssuerServicer
from simulators.ledger import LedgerStore, MemoryLedger
from simulators.seed import seed_ledger
from txverify.banks import is_member_code
from txverify.grpcserver import add_health_and_reflection, bind, new_server
from txverify.v1 import issuer_pb2, issuer_pb2_grpc

log = logging.getLogger(__name__)
ISSUER_SERVICE = issuer_pb2.DESCRIPTOR.services_by_name["IssuerService"].full_name


@dataclass(frozen=True, slots=True)
class BankSettings:
    """How to run one simulated bank."""

    code: str
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    transactions: int = 5

    def __post_init__(self) -> None:
        if not is_member_code(self.code):
            raise ValueError(f"bank code must be 3 digits, got {self.code!r}")
        if self.transactions < 0:
            raise ValueError("transactions must not be negative")


@dataclass(slots=True)
class RunningBank:
    """A started bank: its server, bound port and ledger."""

    settings: BankSettings
    server: grpc.aio.Server
    port: int
    ledger: LedgerStore
    health: HealthServicer
    issuer: Issuer

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def stop(self, grace: float = 1.0) -> None:
        """Health NOT_SERVING first, then stop accepting and finish in-flight RPCs."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_bank(settings: BankSettings, ledger: LedgerStore | None = None) -> RunningBank:
    """Start one bank's server; seeds a fresh in-memory ledger when none is given."""
    if ledger is None:
        ledger = MemoryLedger()
        seed_ledger(ledger, settings.code, count=settings.transactions, seed=settings.seed)
    issuer = Issuer(settings.code, ledger)
    server = new_server()
    issuer_pb2_grpc.add_IssuerServiceServicer_to_server(IssuerServicer(issuer), server)
    health = await add_health_and_reflection(server, [ISSUER_SERVICE])
    port = bind(server, settings.host, settings.port)
    await server.start()
    bank = RunningBank(settings, server, port, ledger, health, issuer)
    log.info(
        "bank %s listening on %s:%d with %d transactions",
        settings.code,
        settings.host,
        port,
        ledger.count_transactions(),
    )
    return bank


async def serve_banks(
    settings: list[BankSettings], on_ready: Callable[[list[RunningBank]], None] | None = None
) -> None:
    """Start every bank, report them through `on_ready`, serve until SIGINT/SIGTERM."""
    banks: list[RunningBank] = []
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        for s in settings:
            banks.append(await start_bank(s))
        if on_ready is not None:
            on_ready(banks)
        await stopping.wait()
    finally:
        await asyncio.gather(*(b.stop() for b in banks))
        log.info("banks stopped")
