"""The hub as operators run it: a process that drains on SIGTERM and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import member_channel, members_of
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.registry import dump_members
from simulators.server import RunningSimulator
from txverify.v1 import simulator_pb2, verification_pb2, verification_pb2_grpc


async def _start_hub(members: Path) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.cli", "hub", "--members", str(members),
        "--port", "0", "--ready-line", "--drain-delay", "0.5", "--grace", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    ready: dict[str, Any] = json.loads(line.decode().split(" ", 1)[1])
    return proc, int(ready["address"].rsplit(":", 1)[1])


@pytest.mark.timeout(60)
async def test_sigterm_finishes_in_flight_verifies_reports_not_serving_and_exits_0(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    members = tmp_path / "members.toml"
    members.write_text(dump_members(members_of(simulator)), encoding="utf-8")
    proc, port = await _start_hub(members)
    bank = simulator.nodes["014"].bank
    qr = bank.list_slips(1, None)[0].qr_text
    async with grpc.aio.insecure_channel(simulator.control_address) as control:
        from txverify.v1 import simulator_pb2_grpc

        await simulator_pb2_grpc.BankSimulatorStub(control).SetFaults(
            simulator_pb2.SetFaultsRequest(bank="014", faults=simulator_pb2.Faults(latency_ms=800)),
            timeout=5,
        )
    async with member_channel(port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        health: Any = health_pb2_grpc.HealthStub(channel)
        in_flight = [
            asyncio.ensure_future(
                stub.Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=10)
            )
            for _ in range(20)
        ]
        await asyncio.sleep(0.3)  # all 20 are now waiting on the slow issuer
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        during = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        results = await asyncio.gather(*in_flight, return_exceptions=True)
    code = await asyncio.wait_for(proc.wait(), timeout=20)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert [] == failures
    assert health_pb2.HealthCheckResponse.NOT_SERVING == during.status
    assert 0 == code


def test_hub_with_a_bad_members_file_exits_with_a_clear_message(tmp_path: Path) -> None:
    members = tmp_path / "members.toml"
    members.write_text('[[member]]\ncode = "14"\n', encoding="utf-8")

    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "hub", "--members", str(members), "--port", "0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert 1 == result.returncode
    assert "member code must be 3 digits" in result.stderr
