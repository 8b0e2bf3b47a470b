"""`txverify hub --workers 2`: real processes on one port and one database; the audit store
they share, as two stores on one file."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from conftest import members_file
from txverify.errors import details_of
from txverify.hub.audit import (
    AuditEntry,
    BatchItem,
    SlipUse,
    StoreBusy,
    UseCounts,
    Verified,
)
from txverify.hub.audit.sqlite import SqliteAuditStore
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import LedgerTransaction, TxStatus
from txverify.simulators.server import RunningSimulator
from txverify.v1 import (
    registry_pb2,
    registry_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

V = verification_pb2
WORKERS = 2
_probes = itertools.count()


@dataclass
class WorkersHub:
    proc: asyncio.subprocess.Process
    port: int
    log: Path
    db: Path
    json_api: str  # the JSON API's base URL, served by every worker on one port

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid of the workers started so far (the last one per index).

        Awaits (a little) the log lines of all of them: lines reach the file in
        batches (txverify.runtime.logs.BufferedStreamHandler, every 0.2 s).
        """
        deadline = time.monotonic() + 5
        while True:
            pids = {}
            for line in self.log_lines():
                message = line["message"]
                if found := re.fullmatch(r"hub worker (\d+) started \(pid (\d+)\)", message):
                    pids[int(found[1])] = int(found[2])
            if len(pids) >= WORKERS or time.monotonic() > deadline:
                return pids
            time.sleep(0.05)

    def served_by(self, request_id: str) -> int:
        """The worker whose log line answers the Verify with this request id.

        Log lines reach the file in batches (txverify.runtime.logs.BufferedStreamHandler,
        every 0.2 s), so the line is awaited a little.
        """
        deadline = time.monotonic() + 5
        while True:
            for line in self.log_lines():
                if line["message"] == "verify" and line.get("request_id") == request_id:
                    return int(line["worker"])
            if time.monotonic() > deadline:
                raise AssertionError(f"no worker logged request {request_id}")
            time.sleep(0.05)

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture
async def workers_hub(simulator: RunningSimulator, tmp_path: Path) -> AsyncIterator[WorkersHub]:
    members = members_file(simulator, tmp_path)
    db, log = tmp_path / "hub.sqlite", tmp_path / "hub.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "txverify.cli", "hub", "--members", str(members),
            "--db", f"sqlite:///{db}", "--port", "0", "--json-port", "0", "--ready-line",
            "--workers", str(WORKERS), "--drain-delay", "0.2", "--grace", "5",
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        ready: dict[str, Any] = json.loads(line.decode().split(" ", 1)[1])
        port = int(ready["address"].rsplit(":", 1)[1])
        yield WorkersHub(proc, port, log, db, ready["json_api"])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _connection(port: int) -> grpc.aio.Channel:
    # A channel of its own (no subchannel shared with other channels of this
    # process): one TCP connection, which the kernel gives to one worker.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def _as(member: str) -> tuple[tuple[str, str]]:
    return (("x-member-id", member),)


@contextlib.asynccontextmanager
async def _one_connection_per_worker(hub: WorkersHub) -> AsyncIterator[list[grpc.aio.Channel]]:
    """A connection to each worker, in worker order: new connections until each worker
    has one (probed by a malformed Verify whose log line says which worker answered)."""
    chosen: dict[int, grpc.aio.Channel] = {}
    channels = []
    try:
        for _ in range(64):
            channel = _connection(hub.port)
            channels.append(channel)
            probe = f"probe-{next(_probes)}"
            request = V.VerifyRequest(qr_text="not a slip", request_id=probe)
            with pytest.raises(grpc.aio.AioRpcError):
                await _verifier(channel).Verify(request, timeout=5, metadata=_as("002"))
            chosen.setdefault(hub.served_by(probe), channel)
            if len(chosen) == WORKERS:
                break
        assert list(range(WORKERS)) == sorted(chosen), "the kernel never chose some worker"
        yield [chosen[i] for i in range(WORKERS)]
    finally:
        for channel in channels:
            await channel.close()


def _verifier(channel: grpc.aio.Channel) -> Any:
    return verification_pb2_grpc.VerificationServiceStub(channel)


@contextlib.asynccontextmanager
async def _verifiers(hub: WorkersHub) -> AsyncIterator[list[Any]]:
    """A Verify stub per worker, in worker order."""
    async with _one_connection_per_worker(hub) as channels:
        yield [_verifier(c) for c in channels]


def _slips(sim: RunningSimulator, code: str) -> list[tuple[str, LedgerTransaction]]:
    bank = sim.nodes[code].bank
    return [
        (s.qr_text, s.transaction)
        for s in bank.list_slips(1000, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    ]


def _completed(sim: RunningSimulator, code: str = "014") -> str:
    return next(qr for qr, tx in _slips(sim, code) if tx.status is TxStatus.COMPLETED)


async def _latency(sim: RunningSimulator, bank: str, ms: int) -> None:
    async with grpc.aio.insecure_channel(sim.control_address) as channel:
        await simulator_pb2_grpc.BankSimulatorStub(channel).SetFaults(
            simulator_pb2.SetFaultsRequest(bank=bank, faults=simulator_pb2.Faults(latency_ms=ms)),
            timeout=5,
        )


@pytest.mark.timeout(60)
async def test_every_worker_serves_the_json_api_on_the_one_port(workers_hub: WorkersHub) -> None:
    served = set()
    for _ in range(64):
        async with httpx.AsyncClient(base_url=workers_hub.json_api) as client:  # a connection
            probe = f"probe-{next(_probes)}"
            response = await client.post(
                "/txverify.v1.VerificationService/Verify",
                json={"qrText": "not a slip", "requestId": probe},
                headers={"x-member-id": "002"},
            )
        assert 400 == response.status_code
        served.add(workers_hub.served_by(probe))
        if len(served) == WORKERS:
            break

    assert set(range(WORKERS)) == served


@pytest.mark.timeout(60)
async def test_both_workers_answer_and_every_answer_is_right(
    workers_hub: WorkersHub, simulator: RunningSimulator
) -> None:
    slips = (_slips(simulator, "014") + _slips(simulator, "002"))[:40]

    async with _verifiers(workers_hub) as stubs:
        responses = await asyncio.gather(
            *(
                stubs[i % WORKERS].Verify(
                    V.VerifyRequest(qr_text=qr, request_id=f"all-{i}"),
                    timeout=10,
                    metadata=_as("002"),
                )
                for i, (qr, _) in enumerate(slips)
            )
        )

    expected = [(tx.trans_ref, tx.amount, 0, tx.status is TxStatus.COMPLETED) for _, tx in slips]
    assert expected == [
        (
            r.transaction.trans_ref,
            r.transaction.amount.satang,
            r.duplicate.previous_count,
            r.verdict == V.VERDICT_VALID,
        )
        for r in responses
    ]
    served = {workers_hub.served_by(f"all-{i}") for i in range(len(slips))}
    assert set(range(WORKERS)) == served
    assert len(slips) == workers_hub.rows("SELECT count(*) FROM audit WHERE status = 'OK'")[0][0]


@pytest.mark.timeout(60)
async def test_concurrent_uses_of_one_slip_on_two_workers_are_counted_exactly(
    workers_hub: WorkersHub, simulator: RunningSimulator
) -> None:
    qr = _completed(simulator)

    async with _verifiers(workers_hub) as stubs:
        responses = await asyncio.gather(
            *(
                stubs[i % WORKERS].Verify(
                    V.VerifyRequest(qr_text=qr), timeout=10, metadata=_as("002")
                )
                for i in range(20)
            )
        )

    assert list(range(20)) == sorted(r.duplicate.previous_count for r in responses)


@pytest.mark.timeout(60)
async def test_one_request_id_on_two_workers_at_once_counts_one_use(
    workers_hub: WorkersHub, simulator: RunningSimulator
) -> None:
    qr = _completed(simulator)
    request = V.VerifyRequest(qr_text=qr, request_id="twice-at-once")
    await _latency(simulator, "014", 300)  # both are past their idempotency look-up

    async with _verifiers(workers_hub) as stubs:
        first, second = await asyncio.gather(
            *(stub.Verify(request, timeout=10, metadata=_as("002")) for stub in stubs)
        )
        await _latency(simulator, "014", 0)
        fresh = await stubs[0].Verify(V.VerifyRequest(qr_text=qr), timeout=10, metadata=_as("002"))

    assert [False, True] == sorted([first.replayed, second.replayed])
    assert (0, 0) == (first.duplicate.previous_count, second.duplicate.previous_count)
    first.replayed = second.replayed = False
    assert first == second
    assert 1 == fresh.duplicate.previous_count  # the replay was not counted
    assert [(0,), (1,)] == workers_hub.rows(
        "SELECT replayed FROM audit WHERE request_id = 'twice-at-once' ORDER BY replayed"
    )


@pytest.mark.timeout(60)
async def test_one_request_id_for_two_slips_on_two_workers_fails_the_later(
    workers_hub: WorkersHub, simulator: RunningSimulator
) -> None:
    qr, other = _completed(simulator, "014"), _completed(simulator, "002")
    await _latency(simulator, "014", 300)
    await _latency(simulator, "002", 300)

    async with _verifiers(workers_hub) as stubs:
        outcomes = await asyncio.gather(
            *(
                stub.Verify(
                    V.VerifyRequest(qr_text=slip, request_id="one-id-two-slips"),
                    timeout=10,
                    metadata=_as("002"),
                )
                for stub, slip in zip(stubs, (qr, other), strict=True)
            ),
            return_exceptions=True,
        )

    failed = [details_of(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert 1 == sum(isinstance(o, V.VerifyResponse) for o in outcomes)
    assert [("INVALID_REQUEST", "request_id")] == [(f.reason, f.metadata["field"]) for f in failed]
    assert [("INVALID_ARGUMENT",), ("OK",)] == workers_hub.rows(
        "SELECT status FROM audit WHERE request_id = 'one-id-two-slips' ORDER BY status"
    )


@pytest.mark.timeout(60)
async def test_a_suspension_through_one_worker_is_refused_by_the_other_within_2s(
    workers_hub: WorkersHub, simulator: RunningSimulator
) -> None:
    qr = _completed(simulator, "002")
    async with _one_connection_per_worker(workers_hub) as channels:
        registry: Any = registry_pb2_grpc.MemberRegistryStub(channels[0])
        stubs = [_verifier(c) for c in channels]
        await stubs[1].Verify(V.VerifyRequest(qr_text=qr), timeout=10, metadata=_as("014"))
        await registry.SetMemberStatus(
            registry_pb2.SetMemberStatusRequest(
                code="014", status=registry_pb2.MEMBER_STATUS_SUSPENDED, reason="test"
            ),
            timeout=5,
            metadata=_as("operator"),
        )
        suspended = time.monotonic()
        while True:
            try:
                await stubs[1].Verify(V.VerifyRequest(qr_text=qr), timeout=10, metadata=_as("014"))
            except grpc.aio.AioRpcError as error:
                refused = details_of(error)
                break
            assert time.monotonic() - suspended < 3, "the other worker still serves 014"
            await asyncio.sleep(0.05)
        delay = time.monotonic() - suspended

    assert "MEMBER_SUSPENDED" == refused.reason
    assert delay < 2.0


@pytest.mark.timeout(60)
async def test_a_worker_that_dies_is_replaced_and_the_hub_keeps_answering(
    workers_hub: WorkersHub, simulator: RunningSimulator
) -> None:
    dead = workers_hub.worker_pids()[1]
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while workers_hub.worker_pids()[1] == dead:
        assert time.monotonic() < deadline, "worker 1 was not restarted"
        await asyncio.sleep(0.05)

    async with _verifiers(workers_hub) as stubs:
        for stub in stubs:
            response = await stub.Verify(
                V.VerifyRequest(qr_text=_completed(simulator)), timeout=10, metadata=_as("002")
            )
            assert response.transaction.trans_ref

    assert any("DIED unexpectedly" in line["message"] for line in workers_hub.log_lines())


@pytest.mark.timeout(60)
async def test_sigterm_drains_every_worker_and_exits_0(workers_hub: WorkersHub) -> None:
    pids = list(workers_hub.worker_pids().values())

    workers_hub.proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(workers_hub.proc.wait(), timeout=20)

    assert 0 == code
    assert WORKERS == len(pids)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    stopped = [line for line in workers_hub.log_lines() if line["message"] == "hub stopped"]
    assert list(range(WORKERS)) == sorted(line["worker"] for line in stopped)


def test_workers_below_1_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "txverify.cli", "hub", "--members", str(tmp_path / "m.toml"),
         "--workers", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert 2 == result.returncode
    assert "--workers" in result.stderr


# -- the shared audit store, two "processes" (two stores) on one file, in-process -------


def _use(request_id: str, trans_ref: str) -> BatchItem:
    def finish(counts: UseCounts) -> V.VerifyResponse:
        response = V.VerifyResponse(request_id=request_id)
        response.transaction.trans_ref = trans_ref
        response.duplicate.previous_count = counts.previous
        return response

    entry = AuditEntry(datetime.now(UTC), request_id, "002", "", "014", trans_ref, "OK")
    return BatchItem(entry, Verified(SlipUse("014", trans_ref, "002", ""), finish))


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[SqliteAuditStore, SqliteAuditStore]]:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    stores = SqliteAuditStore(url, shared=True), SqliteAuditStore(url, shared=True)
    yield stores
    for store in stores:
        store.close()


# Replays, ids twice in a batch and ids reused for another slip across two stores on
# one file: tests/test_postgres_audit.py runs them on SQLite and PostgreSQL alike.


def test_a_store_finding_the_lock_taken_says_so_at_once_and_begin_waits_for_it(
    two_stores: tuple[SqliteAuditStore, SqliteAuditStore],
) -> None:
    one, other = two_stores
    one.stage_batch([_use("id-1", "REF1")])  # holds the write lock until its commit

    started = time.monotonic()
    with pytest.raises(StoreBusy):
        other.stage_batch([_use("id-2", "REF1")], wait=False)
    refused_in = time.monotonic() - started
    waiter = threading.Thread(target=other.begin)
    waiter.start()
    time.sleep(0.2)
    waited = waiter.is_alive()
    one.commit()
    waiter.join(timeout=5)
    [second] = other.stage_batch([_use("id-2", "REF1")])
    other.commit()

    assert refused_in < 0.1
    assert (True, False) == (waited, waiter.is_alive())
    assert isinstance(second, V.VerifyResponse)
    assert 1 == second.duplicate.previous_count


def test_a_commit_frees_the_write_lock_before_its_fsync_and_answers_only_after_it(
    two_stores: tuple[SqliteAuditStore, SqliteAuditStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker's batch may run while another's WAL is being fsynced; the commit
    itself returns only once that fsync is done."""
    one, other = two_stores
    seen: list[str] = []
    lock = one._write_lock
    assert lock is not None
    real_sync = lock.sync_wal

    def sync_wal() -> None:
        # The other store takes the lock at once and stages while this one's fsync runs.
        [staged] = other.stage_batch([_use("id-2", "REF1")], wait=False)
        assert isinstance(staged, V.VerifyResponse)
        other.commit()
        seen.append(f"other counted {staged.duplicate.previous_count}")
        real_sync()
        seen.append("fsynced")

    monkeypatch.setattr(lock, "sync_wal", sync_wal)
    one.stage_batch([_use("id-1", "REF1")])
    one.commit()
    seen.append("committed")

    assert ["other counted 1", "fsynced", "committed"] == seen
