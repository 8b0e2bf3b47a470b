"""The audit store on every backend, and on PostgreSQL across hub processes: each use of a slip
counted once, each request id answered once, whichever replica the requests reach."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import member_channel, members_file, start_hub_process
from txverify.errors import Reason, ServiceError
from txverify.hub.audit import (
    AuditEntry,
    AuditFilter,
    AuditStore,
    BatchItem,
    BatchResult,
    SlipUse,
    UseCounts,
    Verified,
)
from txverify.hub.audit.postgres import PostgresAuditStore
from txverify.hub.audit.stores import open_audit_store
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.v1 import verification_pb2, verification_pb2_grpc

V = verification_pb2


# -- the store suite, run against each backend: two stores (two processes) on one database --


def _use(
    request_id: str,
    trans_ref: str,
    *,
    member: str = "002",
    reference: str = "",
    at: datetime | None = None,
    named: bool = True,
) -> BatchItem:
    def finish(counts: UseCounts) -> V.VerifyResponse:
        response = V.VerifyResponse(request_id=request_id)
        response.transaction.trans_ref = trans_ref
        response.duplicate.previous_count = counts.previous
        response.duplicate.previous_count_in_scope = counts.previous_in_scope
        response.duplicate.first_verified_by = counts.first_by
        return response

    entry = AuditEntry(
        at or datetime.now(UTC), request_id, member, reference, "014", trans_ref, "OK"
    )
    return BatchItem(entry, Verified(SlipUse("014", trans_ref, member, reference), finish, named))


def _responses(results: list[BatchResult]) -> list[V.VerifyResponse]:
    assert all(isinstance(r, V.VerifyResponse) for r in results), results
    return [r for r in results if isinstance(r, V.VerifyResponse)]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'hub.sqlite'}"


@pytest.fixture
def two_stores(db_url: str) -> Iterator[tuple[AuditStore, AuditStore]]:
    stores = open_audit_store(db_url, shared=True), open_audit_store(db_url, shared=True)
    yield stores
    for store in stores:
        store.close()


def test_an_id_answered_by_another_store_replays_its_answer_uncounted(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores

    [first] = _responses(one.write_batch([_use("id-1", "REF1")]))
    [again] = _responses(other.write_batch([_use("id-1", "REF1")]))
    [fresh] = _responses(other.write_batch([_use("id-2", "REF1")]))

    assert (False, True) == (first.replayed, again.replayed)
    again.replayed = False
    assert first == again
    assert 1 == fresh.duplicate.previous_count


def test_an_id_twice_in_one_batch_counts_once(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    results = two_stores[0].write_batch([_use("id-1", "REF1"), _use("id-1", "REF1")])

    assert [(False, 0), (True, 0)] == [
        (r.replayed, r.duplicate.previous_count) for r in _responses(results)
    ]


def test_an_id_answered_for_another_slip_fails_only_that_item(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores
    one.write_batch([_use("id-1", "REF1")])

    reused, new = other.write_batch([_use("id-1", "REF2"), _use("id-2", "REF2")])

    assert isinstance(reused, ServiceError)
    assert Reason.INVALID_REQUEST == reused.reason
    assert isinstance(new, V.VerifyResponse)
    assert 0 == new.duplicate.previous_count  # the failed item counted no use


def test_a_batch_meeting_an_answered_id_counts_only_its_new_uses(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores
    one.write_batch([_use("id-1", "REF1")])

    results = other.write_batch([_use("id-2", "REF1"), _use("id-1", "REF1"), _use("id-3", "REF1")])
    [fresh] = _responses(one.write_batch([_use("id-4", "REF1", named=False)]))

    assert [(False, 1), (True, 0), (False, 2)] == [
        (r.replayed, r.duplicate.previous_count) for r in _responses(results)
    ]
    assert 3 == fresh.duplicate.previous_count


def test_uses_in_one_batch_get_consecutive_numbers_per_slip_and_scope(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores
    one.write_batch([_use("a", "REF1", member="900")])

    results = other.write_batch(
        [
            _use("b", "REF1", reference="shop-1"),
            _use("c", "REF2", reference="shop-1"),
            _use("d", "REF1", reference="shop-2"),
            _use("e", "REF1", reference="shop-1", named=False),
        ]
    )

    assert [(1, 0, "900"), (0, 0, ""), (2, 0, "900"), (3, 1, "900")] == [
        (
            r.duplicate.previous_count,
            r.duplicate.previous_count_in_scope,
            r.duplicate.first_verified_by,
        )
        for r in _responses(results)
    ]


def test_an_id_older_than_the_window_is_answered_and_counted_again(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores
    one.write_batch([_use("id-1", "REF1", at=datetime.now(UTC) - timedelta(hours=25))])

    [again] = _responses(other.write_batch([_use("id-1", "REF1")]))
    [replay] = _responses(one.write_batch([_use("id-1", "REF1")]))

    assert (False, 1) == (again.replayed, again.duplicate.previous_count)
    assert (True, 1) == (replay.replayed, replay.duplicate.previous_count)


def test_entries_and_remembered_answers_read_back(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores
    earlier = datetime.now(UTC) - timedelta(seconds=1)
    failure = AuditEntry(earlier, "id-9", "004", "", "014", "REF9", "NOT_FOUND", "X")
    one.write_batch([_use("id-1", "REF1"), BatchItem(failure)])
    since = datetime.now(UTC) - timedelta(hours=24)

    found = other.remembered("002", "id-1", since)
    missing = other.remembered("002", "id-9", since)
    entries = other.query(AuditFilter(limit=10))
    own = other.query(AuditFilter(member="004", limit=10))

    assert found is not None
    assert ("014", "REF1") == found[:2]
    assert "REF1" == V.VerifyResponse.FromString(found[2]).transaction.trans_ref
    assert missing is None
    assert [("id-1", "OK"), ("id-9", "NOT_FOUND")] == [(e.request_id, e.status) for e in entries]
    assert [failure] == own


def test_forgetting_drops_only_older_answers(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores
    old = datetime.now(UTC) - timedelta(days=3)
    one.write_batch([_use("old", "REF1", at=old), _use("new", "REF2")])

    dropped = other.forget_before(datetime.now(UTC) - timedelta(days=2))

    assert 1 == dropped
    assert None is other.remembered("002", "old", old - timedelta(days=1))
    assert other.remembered("002", "new", old) is not None


async def test_reads_from_the_event_loop_give_what_the_blocking_ones_do(
    two_stores: tuple[AuditStore, AuditStore],
) -> None:
    one, other = two_stores
    one.write_batch([_use("id-1", "REF1")])
    since = datetime.now(UTC) - timedelta(hours=24)
    filters = AuditFilter(member="002", limit=5)

    try:
        assert other.remembered("002", "id-1", since) == await other.aremembered(
            "002", "id-1", since
        )
        assert other.query(filters) == await other.aquery(filters)
    finally:
        await other.aclose()  # an asyncio pool is closed on its loop
        await one.aclose()


# -- PostgreSQL: the claim of a request id and the counters across transactions -------------


@pytest.fixture
def pg_stores(postgres_url: str) -> Iterator[tuple[PostgresAuditStore, PostgresAuditStore]]:
    stores = PostgresAuditStore(postgres_url), PostgresAuditStore(postgres_url)
    yield stores
    for store in stores:
        store.rollback()
        store.close()


def _in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.timeout(30)
def test_a_claim_waits_for_an_uncommitted_one_then_replays_its_answer(
    pg_stores: tuple[PostgresAuditStore, PostgresAuditStore],
) -> None:
    one, other = pg_stores
    [first] = _responses(one.stage_batch([_use("id-1", "REF1")]))  # claimed, not committed

    thread, out = _in_thread(other.write_batch, [_use("id-1", "REF1"), _use("id-2", "REF1")])
    time.sleep(0.3)
    waited = thread.is_alive()
    one.commit()
    thread.join(timeout=10)
    again, fresh = _responses(out[0])

    assert waited
    assert (True, 0) == (again.replayed, again.duplicate.previous_count)
    again.replayed = False
    assert first == again
    assert (False, 1) == (fresh.replayed, fresh.duplicate.previous_count)


@pytest.mark.timeout(30)
def test_a_claim_rolled_back_leaves_the_id_to_the_waiting_batch(
    pg_stores: tuple[PostgresAuditStore, PostgresAuditStore],
) -> None:
    one, other = pg_stores
    one.stage_batch([_use("id-1", "REF1")])

    thread, out = _in_thread(other.write_batch, [_use("id-1", "REF1")])
    time.sleep(0.3)
    waited = thread.is_alive()
    one.rollback()
    thread.join(timeout=10)
    [answer] = _responses(out[0])

    assert waited
    assert (False, 0) == (answer.replayed, answer.duplicate.previous_count)


@pytest.mark.timeout(60)
def test_batches_counting_the_same_slips_in_opposite_orders_neither_deadlock_nor_miscount(
    pg_stores: tuple[PostgresAuditStore, PostgresAuditStore], caplog: pytest.LogCaptureFixture
) -> None:
    refs = [f"REF{i}" for i in range(6)]
    seen: dict[str, list[int]] = {ref: [] for ref in refs}
    lock = threading.Lock()

    def run(store: PostgresAuditStore, order: list[str]) -> None:
        for n in range(25):
            batch = [_use(f"{id(store)}-{n}-{ref}", ref) for ref in order]
            for r in _responses(store.write_batch(batch)):
                with lock:
                    seen[r.transaction.trans_ref].append(r.duplicate.previous_count)

    threads = [
        threading.Thread(target=run, args=(store, order))
        for store, order in zip(pg_stores, (refs, refs[::-1]), strict=True)
    ]
    with caplog.at_level(logging.WARNING, logger="txverify.hub.audit.postgres"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=50)

    assert {ref: list(range(50)) for ref in refs} == {
        ref: sorted(numbers) for ref, numbers in seen.items()
    }
    assert [] == [r.message for r in caplog.records if "deadlock" in r.message]


@pytest.mark.timeout(30)
async def test_batches_on_the_event_loop_of_two_stores_count_and_answer_each_once(
    pg_stores: tuple[PostgresAuditStore, PostgresAuditStore],
) -> None:
    batches = [
        [_use(f"id-{n % 4}", "REF1"), _use(f"new-{n}", "REF1", named=False)] for n in range(20)
    ]

    try:
        answered = await asyncio.gather(
            *(pg_stores[n % 2].awrite_batch(batch) for n, batch in enumerate(batches))
        )
    finally:
        for store in pg_stores:
            await store.aclose()
    responses = [r for results in answered for r in _responses(results)]

    counted = sorted(r.duplicate.previous_count for r in responses if not r.replayed)
    assert list(range(24)) == counted  # 20 unnamed uses and 4 named ones, each once
    assert 16 == sum(r.replayed for r in responses)


def test_a_batch_after_the_connection_was_lost_reconnects(
    pg_stores: tuple[PostgresAuditStore, PostgresAuditStore], postgres_url: str
) -> None:
    store = pg_stores[0]
    store.write_batch([_use("id-1", "REF1")])
    _rows(postgres_url, "SELECT pg_terminate_backend(%s)", store._writer().info.backend_pid)

    with pytest.raises(psycopg.OperationalError):
        store.write_batch([_use("id-2", "REF1")])  # the hub answers AUDIT_UNAVAILABLE
    [answer] = _responses(store.write_batch([_use("id-3", "REF1")]))

    assert 1 == answer.duplicate.previous_count  # the lost batch counted nothing


@pytest.mark.timeout(30)
async def test_a_batch_on_the_event_loop_after_the_connection_was_lost_reconnects(
    pg_stores: tuple[PostgresAuditStore, PostgresAuditStore], postgres_url: str
) -> None:
    store = pg_stores[0]
    try:
        await store.awrite_batch([_use("id-1", "REF1")])
        assert store._aconn is not None
        _rows(postgres_url, "SELECT pg_terminate_backend(%s)", store._aconn.info.backend_pid)

        with pytest.raises(psycopg.OperationalError):
            await store.awrite_batch([_use("id-2", "REF1")])  # AUDIT_UNAVAILABLE in the hub
        [answer] = _responses(await store.awrite_batch([_use("id-3", "REF1")]))
    finally:
        await store.aclose()

    assert 1 == answer.duplicate.previous_count  # the lost batch counted nothing


def test_a_sqlite_url_opens_sqlite_and_a_postgres_url_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    stores = [
        open_audit_store(f"sqlite:///{tmp_path / 'a.sqlite'}"),
        open_audit_store(postgres_url),
        open_audit_store(postgres_url.replace("postgresql://", "postgres://", 1)),
    ]
    kinds = [type(s).__name__ for s in stores]
    for store in stores:
        store.close()

    assert ["SqliteAuditStore", "PostgresAuditStore", "PostgresAuditStore"] == kinds
    with pytest.raises(ValueError, match="unsupported audit URL"):
        open_audit_store("mysql://nope")


# -- two hub processes on one PostgreSQL -----------------------------------------------------


@dataclass
class HubProcess:
    proc: asyncio.subprocess.Process
    port: int


async def _start_hub(members: Path, db: str) -> HubProcess:
    proc, port = await start_hub_process(members, "--db", db, "--log-level", "WARNING")
    return HubProcess(proc, port)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def two_hubs(
    simulator: RunningSimulator, postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[HubProcess, HubProcess]]:
    members = members_file(simulator, tmp_path)
    # Started together, as replicas are: both migrate and seed the same empty schema.
    started = await asyncio.gather(
        *(_start_hub(members, postgres_url) for _ in range(2)), return_exceptions=True
    )
    hubs = [h for h in started if isinstance(h, HubProcess)]
    try:
        for failure in started:
            if isinstance(failure, BaseException):
                raise failure
        yield hubs[0], hubs[1]
    finally:
        await asyncio.gather(*(_stop(h.proc) for h in hubs))


def _slips(sim: RunningSimulator, count: int) -> list[str]:
    bank = sim.nodes["014"].bank
    return [
        s.qr_text
        for s in bank.list_slips(40, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    ][:count]


def _rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), args).fetchall()


async def _verify_at(
    hubs: tuple[HubProcess, HubProcess], requests: list[V.VerifyRequest]
) -> list[V.VerifyResponse]:
    """Send all at once, request i to hub i % 2; answers in request order."""
    async with member_channel(hubs[0].port) as a, member_channel(hubs[1].port) as b:
        stubs = [verification_pb2_grpc.VerificationServiceStub(c) for c in (a, b)]
        return list(
            await asyncio.gather(
                *(stubs[i % 2].Verify(r, timeout=20) for i, r in enumerate(requests))
            )
        )


@pytest.mark.timeout(120)
async def test_concurrent_verifies_of_one_slip_at_two_hubs_count_each_use_once(
    two_hubs: tuple[HubProcess, HubProcess], simulator: RunningSimulator, postgres_url: str
) -> None:
    [qr] = _slips(simulator, 1)
    requests = [V.VerifyRequest(qr_text=qr, request_id=f"use-{i}") for i in range(40)]

    responses = await _verify_at(two_hubs, requests)

    assert list(range(40)) == sorted(r.duplicate.previous_count for r in responses)
    assert [(40,)] == _rows(postgres_url, "SELECT uses FROM slip_uses")
    audited = _rows(postgres_url, "SELECT request_id, status, replayed FROM audit")
    assert sorted((f"use-{i}", "OK", 0) for i in range(40)) == sorted(audited)


@pytest.mark.timeout(120)
async def test_one_request_id_sent_to_two_hubs_at_once_is_answered_once(
    two_hubs: tuple[HubProcess, HubProcess], simulator: RunningSimulator, postgres_url: str
) -> None:
    [qr] = _slips(simulator, 1)
    rounds = 6
    rng = random.Random(7)
    answered: list[list[V.VerifyResponse]] = []

    for n in range(rounds):
        copies = [V.VerifyRequest(qr_text=qr, request_id=f"pos-{n}") for _ in range(4)]
        rng.shuffle(copies)
        answered.append(await _verify_at(two_hubs, copies))

    for n, responses in enumerate(answered):
        assert 1 == sum(not r.replayed for r in responses), f"round {n}"
        first = next(r for r in responses if not r.replayed)
        for r in responses:
            r.replayed = False
        assert all(first == r for r in responses), f"round {n}"
        assert n == first.duplicate.previous_count  # one use counted per round
    assert [(rounds,)] == _rows(postgres_url, "SELECT uses FROM slip_uses")
    audited = _rows(postgres_url, "SELECT request_id, replayed FROM audit WHERE status = 'OK'")
    assert sorted((f"pos-{n}", int(k > 0)) for n in range(rounds) for k in range(4)) == sorted(
        audited
    )
