"""The audit's durable commit: the WAL fsync helper process and the group commit around it."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.audit import AuditEntry, BatchItem, SlipUse, UseCounts, Verified
from server.audit_sqlite import SqliteAuditStore
from server.auditlog import AuditWriter
from server.walsync import WalSyncer
from txverify.errors import Reason, ServiceError
from txverify.v1 import verification_pb2


def _item(request_id: str, trans_ref: str = "REF1") -> BatchItem:
    def finish(counts: UseCounts) -> verification_pb2.VerifyResponse:
        return verification_pb2.VerifyResponse(
            request_id=request_id,
            duplicate=verification_pb2.DuplicateInfo(previous_count=counts.previous),
        )

    entry = AuditEntry(datetime.now(UTC), request_id, "002", "", "014", trans_ref, "OK")
    return BatchItem(entry, Verified(SlipUse("014", trans_ref, "002", ""), finish))


def _audited(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])


async def test_concurrent_writes_share_batches_and_each_gets_its_own_count(
    tmp_path: Path,
) -> None:
    batches: list[int] = []
    store = SqliteAuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    writer = AuditWriter(store, on_batch=lambda records, _: batches.append(records))

    answers = await asyncio.gather(*(writer.write(_item(f"id-{n}")) for n in range(50)))
    await writer.close()

    assert list(range(50)) == sorted(a.duplicate.previous_count for a in answers if a)
    assert 50 == sum(batches)
    assert len(batches) < 50  # records that arrived together went in one commit
    assert 50 == _audited(tmp_path / "audit.sqlite")


async def test_a_killed_helper_fails_only_what_it_had_not_answered(tmp_path: Path) -> None:
    """What waits on a dead helper is not known durable: AUDIT_UNAVAILABLE, never an
    answer; the next write starts a new helper and is answered."""
    store = SqliteAuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    writer = AuditWriter(store)
    await writer.write(_item("before"))
    syncer = store._syncer
    assert syncer is not None
    assert syncer.pid is not None
    first = syncer.pid
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(0.2)  # dead; whether the loop saw its pipe close yet is not known

    outcomes: list[str] = []
    for n in range(2):
        try:
            await writer.write(_item(f"after-{n}"))
            outcomes.append("answered")
        except ServiceError as error:
            outcomes.append(error.reason.value)
    await writer.close()

    assert outcomes in (["answered", "answered"], [Reason.AUDIT_UNAVAILABLE.value, "answered"])
    assert syncer.pid != first or syncer.pid is None  # a new helper, or closed with the store
    assert 3 == _audited(tmp_path / "audit.sqlite")  # failed or not, every record was written


async def test_the_helper_checkpoints_the_wal_into_the_database(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    store = SqliteAuditStore(f"sqlite:///{db}")
    store._syncer = WalSyncer(db, checkpoint_every=0.05)
    store._conn.execute("PRAGMA wal_autocheckpoint = 0")
    writer = AuditWriter(store)
    size = db.stat().st_size
    for n in range(200):
        await writer.write(_item(f"id-{n}", trans_ref=f"REF{n}"))

    for _ in range(100):  # the helper checkpoints every 50 ms: bounded wait
        if db.stat().st_size > size:
            break
        await asyncio.sleep(0.05)
    await writer.close()

    assert db.stat().st_size > size  # pages moved from the WAL into the database file


@pytest.mark.parametrize("commits", [1, 3])
def test_a_blocking_commit_is_durable_without_a_helper(tmp_path: Path, commits: int) -> None:
    store = SqliteAuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    for n in range(commits):
        store.write_batch([_item(f"id-{n}")])
    assert store._syncer is None  # tools and tests fsync where they commit
    store.close()
    assert commits == _audited(tmp_path / "audit.sqlite")
