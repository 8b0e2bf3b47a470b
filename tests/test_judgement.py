"""What merchants get from a check: expectations, duplicates, idempotency, and the audit trail.

The tests of the `hub` fixture run against each audit backend, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from conftest import logged, member_channel, personal_data
from txverify.errors import ErrorDetails, details_of
from txverify.hub.app import RunningHub
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import LedgerTransaction, TxStatus
from txverify.simulators.server import RunningSimulator
from txverify.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

HubFactory = Callable[..., Awaitable[RunningHub]]
V = verification_pb2


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each audit backend; PostgreSQL's tests skip, saying why, when there is none."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return "sqlite://"


@pytest.fixture
async def hub(db_url: str, hub_factory: HubFactory) -> RunningHub:
    """The hub on each backend: every test of it below runs against SQLite and PostgreSQL.
    (db_url first: its schema is dropped only after the hub has stopped.)"""
    return await hub_factory(db=db_url)


def _slip(sim: RunningSimulator, code: str = "014") -> tuple[str, LedgerTransaction]:
    bank = sim.nodes[code].bank
    for s in bank.list_slips(1000, None):
        tx = s.transaction
        if (
            bank.visibility(tx) is SlipVisibility.VISIBLE
            and tx.status is TxStatus.COMPLETED
            and tx.receiver.account
        ):
            return s.qr_text, tx
    raise AssertionError("no suitable slip")


async def _verify(port: int, request: V.VerifyRequest, member: str = "002") -> Any:
    async with member_channel(port, member) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        return await stub.Verify(request, timeout=10)


async def _verify_once_back(port: int, request: V.VerifyRequest) -> Any:
    """_verify, retried while the issuer is still unreachable (its port listens again at
    once, the hub's channel to it may still be in reconnect backoff): at most 5 s."""
    for _ in range(50):
        try:
            return await _verify(port, request)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.1)
    return await _verify(port, request)


async def _fail(call: Awaitable[Any]) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return details_of(caught.value)


async def test_matching_expectations_give_a_valid_verdict(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, tx = _slip(simulator)
    expect = V.Expectations(
        amount=V.AmountExpectation(equals_satang=tx.amount),
        receivers=[
            V.ReceiverExpectation(account="1111111111"),
            V.ReceiverExpectation(account=tx.receiver.account),
        ],
        receiving_bank=tx.receiving_bank,
    )

    response = await _verify(hub.port, V.VerifyRequest(qr_text=qr, expect=expect))

    assert V.VERDICT_VALID == response.verdict
    assert [
        (V.CHECK_AMOUNT, V.CHECK_OUTCOME_PASS),
        (V.CHECK_RECEIVER, V.CHECK_OUTCOME_PASS),
        (V.CHECK_RECEIVING_BANK, V.CHECK_OUTCOME_PASS),
        (V.CHECK_STATUS, V.CHECK_OUTCOME_PASS),
    ] == [(c.check, c.outcome) for c in response.checks]


async def test_wrong_amount_is_a_mismatch_not_an_error(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, tx = _slip(simulator)
    expect = V.Expectations(amount=V.AmountExpectation(equals_satang=tx.amount + 1))

    response = await _verify(hub.port, V.VerifyRequest(qr_text=qr, expect=expect))

    assert V.VERDICT_MISMATCH == response.verdict
    amount = response.checks[0]
    assert (V.CHECK_AMOUNT, V.CHECK_OUTCOME_FAIL) == (amount.check, amount.outcome)
    assert amount.observed  # says what the issuer reported


async def test_bad_expectations_are_invalid_argument(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator)
    expect = V.Expectations(amount=V.AmountExpectation(at_least_satang=500, at_most_satang=100))

    error = await _fail(_verify(hub.port, V.VerifyRequest(qr_text=qr, expect=expect)))

    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.status, error.reason)


async def test_second_use_in_the_same_scope_is_a_duplicate(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator)
    request = V.VerifyRequest(qr_text=qr, requester_reference="shop-1")

    first = await _verify(hub.port, request)
    second = await _verify(hub.port, request)
    other_shop = await _verify(hub.port, V.VerifyRequest(qr_text=qr, requester_reference="shop-2"))
    other_member = await _verify(hub.port, request, member="900")

    assert (V.VERDICT_VALID, 0) == (first.verdict, first.duplicate.previous_count)
    assert (V.VERDICT_DUPLICATE, 1, 1, "002") == (
        second.verdict,
        second.duplicate.previous_count,
        second.duplicate.previous_count_in_scope,
        second.duplicate.first_verified_by,
    )
    assert second.duplicate.first_verified_at == second.duplicate.first_verified_in_scope_at
    assert (V.VERDICT_VALID, 2, 0) == (
        other_shop.verdict,
        other_shop.duplicate.previous_count,
        other_shop.duplicate.previous_count_in_scope,
    )
    assert (V.VERDICT_VALID, 3, "002") == (
        other_member.verdict,
        other_member.duplicate.previous_count,
        other_member.duplicate.first_verified_by,
    )


async def test_fifty_concurrent_verifies_count_each_use_exactly_once(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator)

    async with member_channel(hub.port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        responses = await asyncio.gather(
            *(stub.Verify(V.VerifyRequest(qr_text=qr), timeout=10) for _ in range(50))
        )

    assert list(range(50)) == sorted(r.duplicate.previous_count for r in responses)
    assert 49 == sum(r.verdict == V.VERDICT_DUPLICATE for r in responses)


async def _faults(sim: RunningSimulator, bank: str, **faults: Any) -> None:
    async with grpc.aio.insecure_channel(sim.control_address) as channel:
        await simulator_pb2_grpc.BankSimulatorStub(channel).SetFaults(
            simulator_pb2.SetFaultsRequest(bank=bank, faults=simulator_pb2.Faults(**faults)),
            timeout=5,
        )


async def test_repeated_request_id_replays_the_first_answer_without_asking_or_counting(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator)
    request = V.VerifyRequest(qr_text=qr, request_id="pos-7-0001")

    first = await _verify(hub.port, request)
    await _faults(simulator, "014", refuse=True)  # the issuer cannot be asked now
    again = await _verify(hub.port, request)
    await _faults(simulator, "014")
    fresh = await _verify(hub.port, V.VerifyRequest(qr_text=qr))

    assert (False, True) == (first.replayed, again.replayed)
    again.replayed = False
    assert first == again
    assert 1 == fresh.duplicate.previous_count  # the replay was not counted


async def test_a_hub_restarted_on_its_database_replays_what_it_answered_before(
    db_url: str, hub_factory: HubFactory, simulator: RunningSimulator, tmp_path: Path
) -> None:
    """Answers kept in memory are a hint: a new process finds the first answer in the
    database, by the batch's claim when the issuer answers (not counted again) and by a
    read when it cannot."""
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}" if db_url == "sqlite://" else db_url
    qr, _ = _slip(simulator)
    first_hub = await hub_factory(db=url)
    first = await _verify(first_hub.port, V.VerifyRequest(qr_text=qr, request_id="r-1"))
    also = await _verify(first_hub.port, V.VerifyRequest(qr_text=qr, request_id="r-2"))
    await first_hub.stop(grace=0)

    hub = await hub_factory(db=url)
    asked = await _verify(hub.port, V.VerifyRequest(qr_text=qr, request_id="r-1"))
    await _faults(simulator, "014", refuse=True)  # the issuer cannot be asked now
    unasked = await _verify(hub.port, V.VerifyRequest(qr_text=qr, request_id="r-2"))
    await _faults(simulator, "014")
    fresh = await _verify_once_back(hub.port, V.VerifyRequest(qr_text=qr))

    assert (True, True) == (asked.replayed, unasked.replayed)
    asked.replayed = unasked.replayed = False
    assert (first, also) == (asked, unasked)
    assert 2 == fresh.duplicate.previous_count  # neither replay was counted


async def test_request_id_reused_with_another_slip_is_invalid_argument(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator, "014")
    other, _ = _slip(simulator, "002")
    await _verify(hub.port, V.VerifyRequest(qr_text=qr, request_id="dup-id"))

    error = await _fail(_verify(hub.port, V.VerifyRequest(qr_text=other, request_id="dup-id")))

    assert ("INVALID_REQUEST", "request_id") == (error.reason, error.metadata["field"])


async def test_concurrent_requests_with_one_id_count_once(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator)
    request = V.VerifyRequest(qr_text=qr, request_id="same-id")

    async with member_channel(hub.port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        responses = await asyncio.gather(*(stub.Verify(request, timeout=10) for _ in range(10)))

    assert [0] * 10 == [r.duplicate.previous_count for r in responses]
    assert 9 == sum(r.replayed for r in responses)


async def test_failed_request_is_not_remembered(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator)
    request = V.VerifyRequest(qr_text=qr, request_id="retry-me")
    await _faults(simulator, "014", error_rate=1.0)
    failed = await _fail(_verify(hub.port, request))
    await _faults(simulator, "014")

    answered = await _verify(hub.port, request)

    assert "ISSUER_UNAVAILABLE" == failed.reason
    assert not answered.replayed


@pytest.fixture
async def operator_audit(hub: RunningHub) -> AsyncIterator[Any]:
    async with member_channel(hub.port, "operator") as channel:
        yield audit_pb2_grpc.AuditLogStub(channel)


async def test_every_verify_is_audited_with_outcome_and_verdict(
    hub: RunningHub, simulator: RunningSimulator, operator_audit: Any
) -> None:
    qr, tx = _slip(simulator)
    ok = await _verify(hub.port, V.VerifyRequest(qr_text=qr, request_id="a-1"))
    await _fail(_verify(hub.port, V.VerifyRequest(qr_text="garbage", request_id="a-2")))
    await _verify(hub.port, V.VerifyRequest(qr_text=qr, request_id="a-1"))

    records = (
        await operator_audit.QueryAudit(audit_pb2.QueryAuditRequest(member="002"), timeout=5)
    ).records

    assert [
        ("a-1", "OK", "", V.VERDICT_VALID, True),
        ("a-2", "INVALID_ARGUMENT", "INVALID_SLIP_QR", V.VERDICT_UNSPECIFIED, False),
        ("a-1", "OK", "", V.VERDICT_VALID, False),
    ] == [(r.request_id, r.status, r.reason, r.verdict, r.replayed) for r in records]
    assert (tx.trans_ref, "014", "002") == (
        records[2].trans_ref,
        records[2].issuer,
        records[2].requester,
    )
    assert ok.verdict == records[2].verdict


async def test_a_member_reads_only_its_own_audit(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    qr, _ = _slip(simulator)
    await _verify(hub.port, V.VerifyRequest(qr_text=qr), member="002")
    await _verify(hub.port, V.VerifyRequest(qr_text=qr), member="900")

    async with member_channel(hub.port, "900") as channel:
        stub = audit_pb2_grpc.AuditLogStub(channel)
        own = await stub.QueryAudit(audit_pb2.QueryAuditRequest(), timeout=5)
        error = await _fail(stub.QueryAudit(audit_pb2.QueryAuditRequest(member="002"), timeout=5))

    assert {"900"} == {r.requester for r in own.records}
    assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_OPERATOR") == (error.status, error.reason)


_BAD_QUERIES = [
    # Timestamps a Timestamp can carry but no time is: seconds outside years 1-9999,
    # nanos outside 0-999,999,999 (the hub answered UNKNOWN "Timestamp is not valid").
    (audit_pb2.QueryAuditRequest(since=Timestamp(seconds=-62_135_596_801)), "since"),
    (audit_pb2.QueryAuditRequest(since=Timestamp(seconds=253_402_300_800)), "since"),
    (audit_pb2.QueryAuditRequest(until=Timestamp(seconds=-(2**63))), "until"),
    (audit_pb2.QueryAuditRequest(since=Timestamp(nanos=-1)), "since"),
    (audit_pb2.QueryAuditRequest(until=Timestamp(nanos=1_000_000_000)), "until"),
    # What no audit record holds, NUL included (PostgreSQL answered AUDIT_UNAVAILABLE).
    (audit_pb2.QueryAuditRequest(member="0\x0002"), "member"),
    (audit_pb2.QueryAuditRequest(member="12"), "member"),
    (audit_pb2.QueryAuditRequest(trans_ref="abc\x00"), "trans_ref"),
    (audit_pb2.QueryAuditRequest(trans_ref="x" * 33), "trans_ref"),
    (audit_pb2.QueryAuditRequest(request_id="id\x00"), "request_id"),
    (audit_pb2.QueryAuditRequest(request_id="r" * 100_000), "request_id"),
    (audit_pb2.QueryAuditRequest(limit=-1), "limit"),
    (audit_pb2.QueryAuditRequest(limit=10_001), "limit"),
]


async def test_audit_query_fields_out_of_range_are_invalid_request_naming_the_field(
    operator_audit: Any, caplog: pytest.LogCaptureFixture
) -> None:
    answers = [
        await _fail(operator_audit.QueryAudit(request, timeout=5)) for request, _ in _BAD_QUERIES
    ]

    assert [
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", (field,)) for _, field in _BAD_QUERIES
    ] == [(a.status, a.reason, tuple(v.field for v in a.violations)) for a in answers]
    assert all(len(a.message) < 200 for a in answers)  # no echo of what was sent
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_audit_query_names_every_bad_field_at_once(operator_audit: Any) -> None:
    request = audit_pb2.QueryAuditRequest(
        since=Timestamp(nanos=-5), until=Timestamp(seconds=2**40), limit=-3
    )

    error = await _fail(operator_audit.QueryAudit(request, timeout=5))

    assert ["since", "until", "limit"] == [v.field for v in error.violations]


async def test_audit_query_takes_the_first_and_last_valid_instants(operator_audit: Any) -> None:
    first = Timestamp(seconds=-62_135_596_800)
    last = Timestamp(seconds=253_402_300_799, nanos=999_999_999)

    reply = await operator_audit.QueryAudit(
        audit_pb2.QueryAuditRequest(since=first, until=last, limit=10_000), timeout=5
    )

    assert [] == list(reply.records)


async def test_no_personal_data_reaches_the_logs_or_the_audit(
    hub_factory: HubFactory,
    simulator: RunningSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = tmp_path / "hub.sqlite"
    hub = await hub_factory(db=f"sqlite:///{db}")
    caplog.set_level(logging.DEBUG)
    for code in ("002", "014", "900"):
        bank = simulator.nodes[code].bank
        for slip in bank.list_slips(40, None):
            tx = slip.transaction
            expect = V.Expectations(
                receivers=[V.ReceiverExpectation(account=tx.receiver.account or "1234567890")]
            )
            # Expired slips fail; their failures are logged and audited too.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await _verify(hub.port, V.VerifyRequest(qr_text=slip.qr_text, expect=expect))
    await hub.audit.close()
    with sqlite3.connect(db) as conn:
        audited = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    # Every byte the hub wrote: the database file and its write-ahead log.
    stored = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.glob("hub.sqlite*"))
    )
    log = logged(caplog)

    assert 120 == audited
    assert '"trans_ref"' in log  # the fields of the hub's log lines were captured too
    leaks = sorted(v for v in personal_data(simulator) if v in log or v.encode() in stored)
    assert [] == leaks


async def test_metrics_count_outcomes_when_served(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(metrics_port=0)
    qr, _ = _slip(simulator)
    await _verify(hub.port, V.VerifyRequest(qr_text=qr))
    await _fail(_verify(hub.port, V.VerifyRequest(qr_text="garbage")))

    body = await asyncio.to_thread(
        lambda: (
            urllib.request.urlopen(f"http://127.0.0.1:{hub.metrics.port}/metrics", timeout=5)
            .read()
            .decode()
        )
    )

    assert 'txverify_verify_total{reason="",status="OK"} 1.0' in body
    assert 'txverify_verify_total{reason="INVALID_SLIP_QR",status="INVALID_ARGUMENT"} 1.0' in body
    assert 'txverify_verify_issuer_seconds_count{issuer="014"} 1.0' in body
    assert "txverify_audit_batch_records_count" in body
    assert 'txverify_issuer_circuit_state{issuer="014"} 0.0' in body
