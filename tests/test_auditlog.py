"""The audit writer's group commit: one batch on its way to the disk, the next gathering."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from txverify.hub.audit import AuditEntry, BatchItem, SlipUse, UseCounts, Verified
from txverify.hub.audit.sqlite import SqliteAuditStore
from txverify.hub.audit.writer import AuditWriter
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


async def test_a_caller_that_gives_up_leaves_its_record_written(tmp_path: Path) -> None:
    store = SqliteAuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    writer = AuditWriter(store)
    waiting = [asyncio.ensure_future(writer.write(_item(f"id-{n}"))) for n in range(10)]
    await asyncio.sleep(0)  # queued
    for task in waiting[::2]:
        task.cancel()
    done = await asyncio.gather(*waiting, return_exceptions=True)
    await writer.close()

    assert 5 == sum(isinstance(d, asyncio.CancelledError) for d in done)
    assert 10 == _audited(tmp_path / "audit.sqlite")  # what the hub decided is audited
