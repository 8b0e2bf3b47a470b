"""Per-issuer health on the hub (`txverify.v1.IssuerService/CODE`): from start-up, and
following the registry and the circuits."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import BANK_CODES, member_channel
from txverify.hub.app import RunningHub
from txverify.hub.resilience.breaker import BreakerSettings
from txverify.simulators.server import RunningSimulator
from txverify.v1 import (
    registry_pb2,
    registry_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from txverify.wire import issuer_health_name

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(port: int, code: str) -> int | str:
    """The hub's health of issuer `code`: a status, or "NOT_FOUND"."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        try:
            answer = await health.Check(
                health_pb2.HealthCheckRequest(service=issuer_health_name(code)), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
        return int(answer.status)


async def test_every_issuer_is_serving_from_start_up(hub: RunningHub) -> None:
    statuses = {code: await _status(hub.port, code) for code in BANK_CODES}

    assert {code: SERVING for code in BANK_CODES} == statuses
    assert "NOT_FOUND" == await _status(hub.port, "777")


async def test_issuer_health_follows_the_registry(hub: RunningHub) -> None:
    seen: dict[str, int | str] = {}
    async with member_channel(hub.port, "operator") as channel:
        registry: Any = registry_pb2_grpc.MemberRegistryStub(channel)
        await registry.RegisterMember(
            registry_pb2.RegisterMemberRequest(
                member=registry_pb2.Member(code="030", name="GSB", issuer_endpoint="127.0.0.1:1")
            ),
            timeout=5,
        )
        seen["registered"] = await _status(hub.port, "030")
        await registry.SetMemberStatus(
            registry_pb2.SetMemberStatusRequest(
                code="030", status=registry_pb2.MEMBER_STATUS_SUSPENDED, reason="test"
            ),
            timeout=5,
        )
        seen["suspended"] = await _status(hub.port, "030")
        await registry.SetMemberStatus(
            registry_pb2.SetMemberStatusRequest(
                code="030", status=registry_pb2.MEMBER_STATUS_ACTIVE
            ),
            timeout=5,
        )
        seen["resumed"] = await _status(hub.port, "030")
        await registry.Unsubscribe(
            registry_pb2.UnsubscribeRequest(code="030", role=registry_pb2.ROLE_ISSUER), timeout=5
        )
        seen["unsubscribed"] = await _status(hub.port, "030")
        await registry.SetMemberStatus(
            registry_pb2.SetMemberStatusRequest(
                code="030", status=registry_pb2.MEMBER_STATUS_TERMINATED
            ),
            timeout=5,
        )
        seen["terminated"] = await _status(hub.port, "030")

    assert {
        "registered": SERVING,
        "suspended": NOT_SERVING,
        "resumed": SERVING,
        "unsubscribed": NOT_SERVING,
        "terminated": "NOT_FOUND",
    } == seen


@pytest.mark.timeout(30)
async def test_open_circuit_is_not_serving_and_serving_again_after_the_cooldown(
    hub_factory: Any, simulator: RunningSimulator
) -> None:
    """NOT_SERVING while OPEN; once the cooldown is over SERVING again (HALF_OPEN: the
    next inquiry is the probe), without any request having come to look."""
    hub = await hub_factory(
        breaker=BreakerSettings(failure_threshold=2, cooldown=0.5, failing_seconds=0.0)
    )
    qr = simulator.nodes["014"].bank.list_slips(1, None)[0].qr_text
    async with grpc.aio.insecure_channel(simulator.control_address) as control:
        await simulator_pb2_grpc.BankSimulatorStub(control).SetFaults(
            simulator_pb2.SetFaultsRequest(bank="014", faults=simulator_pb2.Faults(error_rate=1.0)),
            timeout=5,
        )
    async with member_channel(hub.port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=5)
    await asyncio.sleep(0.05)
    opened = await _status(hub.port, "014")
    await asyncio.sleep(0.6)
    after_cooldown = await _status(hub.port, "014")

    assert (NOT_SERVING, SERVING) == (opened, after_cooldown)
    assert SERVING == await _status(hub.port, "002")
