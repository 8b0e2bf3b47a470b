"""Where a scenario runs: a running network (Target), or a fresh one in this process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from txverify.cli.scenario.files import NetworkSpec
from txverify.client.channels import hub_aio_channel


@dataclass(frozen=True, slots=True)
class Target:
    """A network to run against: the hub and the simulator's control port (host:port),
    and under mTLS the certificate directory every caller presents its certificate from
    (members theirs, the operator and the control API's clients the operator's)."""

    hub: str
    control: str
    certs: Path | None = None


class HubChannels:
    """Channels to the hub by identity: under mTLS one per member or operator, presenting
    its certificate; in dev mode one for all (the header names the caller)."""

    def __init__(self, hub: str, certs: Path | None) -> None:
        self.hub, self.certs = hub, certs
        self._open: dict[str, grpc.aio.Channel] = {}

    def __call__(self, identity: str) -> grpc.aio.Channel:
        key = identity if self.certs is not None else ""
        if key not in self._open:
            self._open[key] = hub_aio_channel(self.hub, certs=self.certs, identity=identity)
        return self._open[key]

    async def close(self) -> None:
        for channel in self._open.values():
            await channel.close()
        self._open.clear()


@contextlib.asynccontextmanager
async def fresh_network(spec: NetworkSpec) -> AsyncIterator[Target]:
    """Simulated banks and a hub in this process, on loopback port 0, as `txverify up` runs them."""
    # Imported here: clients depend on server and simulators only to start them.
    from txverify.hub.app import start_hub
    from txverify.hub.registry import Member, MemberKind, with_default_roles
    from txverify.hub.resilience.breaker import BreakerSettings
    from txverify.hub.resilience.ratelimit import RateLimit
    from txverify.hub.settings import HubSettings, default_of
    from txverify.simulators.server import start_simulator
    from txverify.simulators.settings import SimulatorSettings

    sim = await start_simulator(
        SimulatorSettings(
            codes=spec.banks,
            transactions=spec.transactions,
            seed=spec.seed,
            retention_days=spec.retention_days,
        )
    )
    try:
        members = tuple(
            with_default_roles(
                Member(
                    code=code,
                    name=node.bank.profile.name,
                    kind=MemberKind(node.bank.profile.kind.value),
                    issuer_endpoint=node.address,
                )
            )
            for code, node in sim.nodes.items()
        )
        rps, burst = spec.rate_limit_rps, spec.rate_limit_burst
        hub = await start_hub(
            HubSettings(
                port=0,
                members=members,
                issuer_timeout=spec.issuer_timeout,
                breaker=BreakerSettings(
                    spec.breaker_failures, spec.breaker_cooldown, spec.breaker_failing_seconds
                ),
                rate_limit=RateLimit(rps, burst) if rps else None,
                not_found_cost=spec.not_found_cost or default_of(HubSettings, "not_found_cost"),
                max_in_flight_per_issuer=spec.max_in_flight,
            )
        )
        try:
            yield Target(f"127.0.0.1:{hub.port}", sim.control_address)
        finally:
            await hub.stop(grace=0)
    finally:
        await sim.stop()
