"""Nothing acknowledged is lost: SIGKILL the hub under load, then read its database.

Every acknowledged verification is in the audit log, the duplicate counts match it (and the
restarted hub counts on from them), and a registry change acknowledged under load survives.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import member_channel, members_file, start_hub_process
from txverify import miniqr
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.v1 import registry_pb2, registry_pb2_grpc, verification_pb2, verification_pb2_grpc

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow


async def _start_hub(members: Path, db: Path) -> tuple[asyncio.subprocess.Process, int]:
    return await start_hub_process(members, "--db", f"sqlite:///{db}")


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.timeout(90)
async def test_every_acknowledged_verification_survives_sigkill(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    members = members_file(simulator, tmp_path)
    db = tmp_path / "hub.sqlite"
    bank = simulator.nodes["014"].bank
    qrs = [
        s.qr_text
        for s in bank.list_slips(40, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    ]
    proc, port = await _start_hub(members, db)
    acknowledged: list[tuple[str, str]] = []  # (request id, qr)
    stop = asyncio.Event()

    async def worker(n: int, stub: Any) -> None:
        i = 0
        while not stop.is_set():
            request_id, qr = f"w{n}-{i}", qrs[(n * 7 + i) % len(qrs)]
            try:
                await stub.Verify(
                    verification_pb2.VerifyRequest(qr_text=qr, request_id=request_id), timeout=5
                )
            except grpc.aio.AioRpcError:
                return  # the hub is gone
            acknowledged.append((request_id, qr))
            i += 1

    async with member_channel(port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        workers = [asyncio.ensure_future(worker(n, stub)) for n in range(16)]
        await asyncio.sleep(0.7)
        async with member_channel(port, "operator") as operator:
            await registry_pb2_grpc.MemberRegistryStub(operator).SetMemberStatus(
                registry_pb2.SetMemberStatusRequest(
                    code="900", status=registry_pb2.MEMBER_STATUS_SUSPENDED, reason="audit"
                ),
                timeout=5,
            )  # acknowledged under load, so it must survive the crash too
        await asyncio.sleep(0.8)
        proc.send_signal(signal.SIGKILL)  # mid-load: no drain, no flush
        await proc.wait()
        stop.set()
        await asyncio.gather(*workers)

    audited = {r[0] for r in _rows(db, "SELECT request_id FROM audit WHERE status = 'OK'")}
    missing = [rid for rid, _ in acknowledged if rid not in audited]
    uses = dict(_rows(db, "SELECT trans_ref, uses FROM slip_uses"))
    acked_per_slip: dict[str, int] = {}
    for _, qr in acknowledged:
        ref = miniqr.parse(qr).trans_ref
        acked_per_slip[ref] = acked_per_slip.get(ref, 0) + 1

    assert len(acknowledged) > 100, "the load was too small to mean anything"
    assert [] == missing
    # Counted uses are committed with their audit records: at least every acknowledged one,
    # and never more than the audit holds.
    assert all(uses.get(ref, 0) >= n for ref, n in acked_per_slip.items())
    assert sum(uses.values()) == len(audited)

    proc, port = await _start_hub(members, db)  # the same database, after the crash
    busiest = max(acked_per_slip, key=lambda ref: acked_per_slip[ref])
    qr = next(q for _, q in acknowledged if miniqr.parse(q).trans_ref == busiest)
    try:
        async with member_channel(port, "operator") as channel:
            listed = await registry_pb2_grpc.MemberRegistryStub(channel).ListMembers(
                registry_pb2.ListMembersRequest(), timeout=5
            )
        async with member_channel(port) as channel:
            again = await verification_pb2_grpc.VerificationServiceStub(channel).Verify(
                verification_pb2.VerifyRequest(qr_text=qr), timeout=5
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=20)
    # The registry is whole, and the restarted hub counts on from the crashed one's uses.
    assert sorted(simulator.nodes) == [m.code for m in listed.members]
    # (A status change, as the bootstrap file on restart sets names and endpoints, not status.)
    suspended = next(m.status for m in listed.members if m.code == "900")
    assert registry_pb2.MEMBER_STATUS_SUSPENDED == suspended
    assert uses[busiest] == again.duplicate.previous_count
