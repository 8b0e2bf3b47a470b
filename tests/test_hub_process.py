"""The hub as operators run it: a process that drains on SIGTERM and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import member_channel, members_file, start_hub_process
from txverify.errors import details_of
from txverify.simulators.server import RunningSimulator
from txverify.v1 import simulator_pb2, verification_pb2, verification_pb2_grpc

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

DRAIN_DELAY = 0.5  # seconds of NOT_SERVING, still answering, before the hub refuses new RPCs


async def _start_hub(members: Path, *args: str) -> tuple[asyncio.subprocess.Process, int]:
    return await start_hub_process(
        members, "--drain-delay", str(DRAIN_DELAY), "--grace", "5", *args
    )


@pytest.mark.timeout(60)
async def test_sigterm_finishes_in_flight_verifies_reports_not_serving_and_exits_0(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    members = members_file(simulator, tmp_path)
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


@pytest.mark.timeout(60)
async def test_sigterm_under_continuous_load_fails_no_accepted_rpc(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    """16 callers keep sending through SIGTERM, ignoring health. Every RPC sent before
    SIGTERM is answered; the hub ends by refusing new RPCs UNAVAILABLE/SHUTTING_DOWN
    (or, once stopped, the connection): none of those was started (none audited) and
    none is left CANCELLED, which would not say whether it was done; exit 0."""
    members = members_file(simulator, tmp_path)
    db = tmp_path / "hub.sqlite"
    proc, port = await _start_hub(members, "--db", f"sqlite:///{db}")
    bank = simulator.nodes["014"].bank
    qrs = [s.qr_text for s in bank.list_slips(40, None)][:10]
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, str, str]] = []  # (sent at, request id, outcome)
    reasons: dict[str, str] = {}

    async def caller(n: int, stub: Any) -> None:
        for i in range(10_000):
            rid, at = f"c{n}-{i}", loop.time()
            try:
                await stub.Verify(
                    verification_pb2.VerifyRequest(qr_text=qrs[i % len(qrs)], request_id=rid),
                    timeout=10,
                )
                sent.append((at, rid, "OK"))
            except grpc.aio.AioRpcError as error:
                sent.append((at, rid, error.code().name))
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    reasons[rid] = details_of(error).reason  # "": the connection was refused
                    return  # the hub is going away
                # Slips not yet visible or expired fail in the application: also answered.

    async with member_channel(port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        callers = [asyncio.ensure_future(caller(n, stub)) for n in range(16)]
        await asyncio.sleep(1.0)
        term = loop.time()
        proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*callers)
    code = await asyncio.wait_for(proc.wait(), timeout=20)
    with sqlite3.connect(db) as conn:
        audited = dict(conn.execute("SELECT request_id, status FROM audit").fetchall())

    before_term = [o for at, _, o in sent if at < term]
    answered = {rid: o for _, rid, o in sent if o != "UNAVAILABLE"}
    refused = [rid for _, rid, o in sent if o == "UNAVAILABLE"]
    assert 0 == code
    assert len(before_term) > 100
    assert {"OK"} == set(before_term)
    assert "CANCELLED" not in answered.values()
    assert answered == {rid: audited.get(rid) for rid in answered}  # each answer, as audited
    assert [] == [rid for rid in refused if rid in audited]  # refused ones were never started
    assert len(audited) == len(answered)
    assert {"SHUTTING_DOWN", ""} >= set(reasons.values())


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("callers", "resend_after"), [(32, 0.0), (32, 0.02), (64, 0.005)])
async def test_sigterm_under_hostile_load_answers_every_rpc_it_started_and_cancels_none(
    simulator: RunningSimulator, tmp_path: Path, callers: int, resend_after: float
) -> None:
    """Callers that ignore health and send again `resend_after` s after any answer or
    error (the refused connection included), over several connections, until the hub
    has exited; SIGTERM after 1.5 s of load. Every answer is OK (or an application
    error), UNAVAILABLE/SHUTTING_DOWN, or UNAVAILABLE without ErrorInfo (a closed
    connection); none is CANCELLED; every answered RPC is in the audit, and no refused
    one; exit 0."""
    members = members_file(simulator, tmp_path)
    db = tmp_path / "hub.sqlite"
    proc, port = await _start_hub(members, "--db", f"sqlite:///{db}")
    bank = simulator.nodes["014"].bank
    qrs = [s.qr_text for s in bank.list_slips(40, None)][:10]
    outcomes: dict[str, tuple[str, str]] = {}  # request id -> (status, reason)
    exited = asyncio.Event()

    async def caller(n: int, stub: Any) -> None:
        for i in range(1_000_000):
            if exited.is_set():
                return
            rid = f"c{n}-{i}"
            try:
                await stub.Verify(
                    verification_pb2.VerifyRequest(qr_text=qrs[i % len(qrs)], request_id=rid),
                    timeout=10,
                )
                outcomes[rid] = ("OK", "")
            except grpc.aio.AioRpcError as error:
                outcomes[rid] = (error.code().name, details_of(error).reason)
            await asyncio.sleep(resend_after)

    channels = [member_channel(port) for _ in range(4)]
    try:
        stubs = [verification_pb2_grpc.VerificationServiceStub(c) for c in channels]
        tasks = [asyncio.ensure_future(caller(n, stubs[n % len(stubs)])) for n in range(callers)]
        await asyncio.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
        await asyncio.sleep(0.2)  # the last answers and refusals come in
        exited.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)
    finally:
        for channel in channels:
            await channel.close()
    with sqlite3.connect(db) as conn:
        audited = dict(conn.execute("SELECT request_id, status FROM audit").fetchall())

    refused = {rid for rid, (status, _) in outcomes.items() if status == "UNAVAILABLE"}
    answered = {rid: status for rid, (status, _) in outcomes.items() if rid not in refused}
    cancelled = sorted(rid for rid, status in answered.items() if status == "CANCELLED")
    print(  # the figures RELIABILITY.md quotes (pytest -s)
        f"{callers} callers, resend after {resend_after * 1000:.0f} ms: "
        f"{sum(1 for s in answered.values() if s == 'OK')} OK, "
        f"{sum(1 for r in refused if outcomes[r][1] == 'SHUTTING_DOWN')} SHUTTING_DOWN, "
        f"{sum(1 for r in refused if outcomes[r][1] == '')} closed connection, "
        f"{len(cancelled)} CANCELLED, exit {code}"
    )
    assert 0 == code
    assert [] == cancelled
    assert {"OK"} <= set(answered.values())
    assert {"SHUTTING_DOWN", ""} >= {outcomes[rid][1] for rid in refused}
    assert answered == {rid: audited.get(rid) for rid in answered}  # each answer, as audited
    assert [] == sorted(rid for rid in refused if rid in audited)  # refused: never started
    assert len(audited) == len(answered)


def test_hub_with_a_bad_members_file_exits_with_a_clear_message(tmp_path: Path) -> None:
    members = tmp_path / "members.toml"
    members.write_text('[[member]]\ncode = "14"\n', encoding="utf-8")

    result = subprocess.run(
        [sys.executable, "-m", "txverify.cli", "hub", "--members", str(members), "--port", "0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert 1 == result.returncode
    assert "member code must be 3 digits" in result.stderr


def test_the_hub_takes_its_settings_from_txverify_hub_variables(tmp_path: Path) -> None:
    # Flags, then TXVERIFY_HUB_* variables, then the settings' defaults: a database
    # URL (and its password) need not be in argv.
    (tmp_path / "members.toml").write_text(
        '[[member]]\ncode = "002"\nname = "Bangkok Bank"\n', encoding="utf-8"
    )
    db = tmp_path / "from-env.sqlite"
    env = {
        **os.environ,
        "TXVERIFY_HUB_MEMBERS": str(tmp_path / "members.toml"),
        "TXVERIFY_HUB_DB": f"sqlite:///{db}",
        "TXVERIFY_HUB_PORT": "0",
        "TXVERIFY_HUB_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "txverify.cli", "hub", "--ready-line"]
    hub = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert hub.stdout is not None
        line = hub.stdout.readline()
        assert line.startswith("TXVERIFY-READY "), hub.stderr.read() if hub.stderr else line
        assert db.exists()
        assert str(db) not in " ".join(argv)
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.communicate(timeout=20)
