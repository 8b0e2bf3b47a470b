"""No statement of the audit store scans a whole table: its cost must not grow with the tables.

A row-value `(a, b) IN (VALUES ...)` once made SQLite scan slip_uses on every
batch: 0.6 s a batch at 5 million rows (bench/growth_bench.py). This test
catches any such plan without filling millions of rows: it records every
statement the store runs (with its values) and asks SQLite for its plan.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.audit import AuditEntry, BatchItem, SlipUse, SqliteAuditStore, UseCounts, Verified
from txverify.v1 import verification_pb2

# Tables whose rows grow with every verification.
GROWING = ("audit", "slip_uses", "slip_scope_uses", "remembered_answers")


def _finish(counts: UseCounts) -> verification_pb2.VerifyResponse:
    response = verification_pb2.VerifyResponse(request_id="r")
    response.duplicate.previous_count = counts.previous
    return response


def _item(i: int, *, named: bool = True) -> BatchItem:
    entry = AuditEntry(
        at=datetime.now(UTC),
        request_id=f"req-{i}",
        requester="014",
        requester_reference="shop-1",
        issuer="002",
        trans_ref=f"REF{i % 3}",
        status="OK",
    )
    use = SlipUse("002", f"REF{i % 3}", "014", "shop-1")
    return BatchItem(entry, Verified(use, _finish, remember=named))


def _scans(conn: sqlite3.Connection, sql: str) -> list[str]:
    plan = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
    return [row[3] for row in plan if row[3].startswith("SCAN ") and row[3].split()[1] in GROWING]


def test_no_statement_of_a_batch_or_a_lookup_scans_a_growing_table(tmp_path: Path) -> None:
    store = SqliteAuditStore(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    statements: list[str] = []
    try:
        # Rows first, so that the planner has tables to choose plans for.
        store.write_batch([_item(i) for i in range(20)])
        store._conn.set_trace_callback(statements.append)
        store._reader.set_trace_callback(statements.append)

        # A batch with new uses, a repeated slip, replays of named requests and an unnamed one.
        store.write_batch([_item(i) for i in range(15, 30)] + [_item(99, named=False)])
        store.remembered("014", "req-3", datetime.now(UTC) - timedelta(hours=24))
        store.forget_before(datetime.now(UTC) - timedelta(days=2))
    finally:
        store._conn.set_trace_callback(None)
        store._reader.set_trace_callback(None)

    dml = [
        s for s in statements if s.split()[0].upper() in ("SELECT", "INSERT", "DELETE", "UPDATE")
    ]
    assert len(dml) >= 5, statements  # the trace saw the work
    with sqlite3.connect(tmp_path / "hub.sqlite") as conn:
        scanning = {s: scans for s in dml if (scans := _scans(conn, s))}
    store.close()

    assert {} == scanning
