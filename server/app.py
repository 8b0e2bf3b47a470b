"""Run the hub: VerificationService, health and reflection on one asyncio gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1._async import HealthServicer

from server.forwarding import IssuerGateway
from server.registry import Member, MemberDirectory, load_members
from server.router import ForwardingPolicy, Router
from server.verification import VerificationServicer
from txverify.grpcserver import add_health_and_reflection, bind, new_server
from txverify.v1 import verification_pb2, verification_pb2_grpc

log = logging.getLogger(__name__)
VERIFICATION_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name
DEFAULT_PORT = 50051


@dataclass(frozen=True, slots=True)
class HubSettings:
    """How to run the hub."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 = any free port (tests)
    members_file: Path | None = None
    members: tuple[Member, ...] = ()  # used when members_file is None
    issuer_timeout: float = 5.0
    grace: float = 5.0  # seconds to finish in-flight RPCs on shutdown
    policy: ForwardingPolicy = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.issuer_timeout <= 0 or self.grace < 0:
            raise ValueError("issuer_timeout must be positive and grace not negative")
        object.__setattr__(self, "policy", ForwardingPolicy(issuer_timeout=self.issuer_timeout))

    def load_members(self) -> Sequence[Member]:
        return load_members(self.members_file) if self.members_file else self.members


@dataclass(slots=True)
class RunningHub:
    """A started hub: its server, port and parts, for tests and the entry point."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    directory: MemberDirectory
    gateway: IssuerGateway

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, so balancers stop sending; then drain and close issuer channels."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.gateway.close()


async def start_hub(settings: HubSettings) -> RunningHub:
    """Build and start the hub; returns once it accepts RPCs."""
    directory = MemberDirectory(settings.load_members())
    gateway = IssuerGateway()
    router = Router(directory, gateway, settings.policy)
    server = new_server()
    verification_pb2_grpc.add_VerificationServiceServicer_to_server(
        VerificationServicer(router), server
    )
    health = await add_health_and_reflection(server, [VERIFICATION_SERVICE])
    port = bind(server, settings.host, settings.port)
    await server.start()
    log.info("hub listening on %s:%d with %d members", settings.host, port, len(directory.all()))
    return RunningHub(server, port, health, directory, gateway)


async def serve(
    settings: HubSettings, on_ready: Callable[[RunningHub], None] | None = None
) -> None:
    """Run the hub until SIGINT or SIGTERM, then drain within the grace period."""
    hub = await start_hub(settings)
    if on_ready is not None:
        on_ready(hub)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        log.info("hub draining (grace %.1fs)", settings.grace)
    finally:
        await hub.stop(settings.grace)
        log.info("hub stopped")
