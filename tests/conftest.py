"""Fixtures: real gRPC servers (simulated banks and the hub) in-process on loopback port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from server.app import HubSettings, RunningHub, start_hub
from server.registry import Member
from simulators.server import BankSettings, RunningBank, start_bank
from txverify.banks import BANKS
from txverify.v1 import verification_pb2_grpc

BANK_CODES = ("002", "014")


@pytest.fixture
async def banks() -> AsyncIterator[dict[str, RunningBank]]:
    running: dict[str, RunningBank] = {}
    try:
        for code in BANK_CODES:
            running[code] = await start_bank(BankSettings(code=code, port=0, transactions=5))
        yield running
    finally:
        for bank in running.values():
            await bank.stop(grace=0)


@pytest.fixture
async def hub(banks: dict[str, RunningBank]) -> AsyncIterator[RunningHub]:
    members = tuple(
        Member(code=code, name=BANKS[code].name, issuer_endpoint=bank.address)
        for code, bank in banks.items()
    )
    running = await start_hub(HubSettings(port=0, members=members))
    try:
        yield running
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def hub_channel(hub: RunningHub) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        yield channel


@pytest.fixture
def verifier(
    hub_channel: grpc.aio.Channel,
) -> verification_pb2_grpc.VerificationServiceAsyncStub:
    return verification_pb2_grpc.VerificationServiceStub(hub_channel)
