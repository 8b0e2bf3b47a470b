"""No statement of the audit store scans a whole table: its cost must not grow with the tables.

A row-value `(a, b) IN (VALUES ...)` once made SQLite scan slip_uses on every
batch: 0.6 s a batch at 5 million rows (bench/growth_bench.py). These tests
catch any such plan without filling millions of rows: they record every
statement the store runs (with its values) and ask the database for its plan
(PostgreSQL with sequential scans disabled, so that a Seq Scan left in a plan
means no index could serve it; with few rows it would otherwise choose one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from txverify.hub.audit import AuditEntry, BatchItem, SlipUse, UseCounts, Verified
from txverify.hub.audit.postgres import _LOOK_UP, _REMEMBERED, PostgresAuditStore
from txverify.hub.audit.sqlite import SqliteAuditStore
from txverify.runtime.storage import to_micros
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


def _full_scans(plan: Any) -> Iterator[str]:
    """Scans of a growing table that read all of it: sequential, or (what PostgreSQL
    picks instead with enable_seqscan off) an index walked without a condition."""
    if isinstance(plan, dict):
        node, table = plan.get("Node Type"), plan.get("Relation Name")
        if table in GROWING and (
            node == "Seq Scan"
            or (node in ("Index Scan", "Index Only Scan") and "Index Cond" not in plan)
        ):
            yield f"{node} on {table}"
        for value in plan.values():
            yield from _full_scans(value)
    elif isinstance(plan, list | tuple):
        for value in plan:
            yield from _full_scans(value)


def test_no_postgres_statement_of_a_batch_or_a_lookup_scans_a_growing_table(
    postgres_url: str,
) -> None:
    store = PostgresAuditStore(postgres_url)
    statements: list[tuple[Any, Any]] = []
    try:
        store.write_batch([_item(i) for i in range(20)])
        conn = store._writer()
        execute = conn.execute

        def recording(query: Any, params: Any = None, **kwargs: Any) -> Any:
            statements.append((query, params))
            return execute(query, params, **kwargs)

        conn.execute = recording  # type: ignore[method-assign]
        store.write_batch([_item(i) for i in range(15, 30)] + [_item(99, named=False)])
        store.forget_before(datetime.now(UTC) - timedelta(days=2))
    finally:
        store.close()
    since = to_micros(datetime.now(UTC) - timedelta(hours=24))
    statements += [  # the event loop's look-ups (pooled connections): alone, and several
        (_REMEMBERED, ("014", "req-3", since)),
        (_LOOK_UP, [["014", "014"], ["req-3", "req-4"], [since, since]]),
    ]
    dml = [
        (q, p)
        for q, p in statements
        if str(q).split()[0].upper() in ("SELECT", "INSERT", "DELETE", "UPDATE", "WITH")
    ]

    # claim, 2 counts, stored, 2 counts again (the batch met answered ids), remembered
    # answers with the audit rows, delete, 2 look-ups
    assert len(dml) >= 10, statements
    with psycopg.connect(postgres_url) as db:
        db.execute("SET enable_seqscan = off")
        scanning = {
            str(q): scans
            for q, p in dml
            if (scans := list(_full_scans(db.execute(f"EXPLAIN (FORMAT JSON) {q}", p).fetchall())))
        }

    assert {} == scanning


def test_a_one_row_statement_goes_as_values_with_scalars() -> None:
    """At light load most batches hold one verification: their statements go as
    VALUES of scalars (psycopg dumps arrays far more slowly); two rows keep the arrays."""
    from txverify.hub.audit.postgres import _COUNT_ALL, _ONE_ROW, _Exec, _statement

    for statement, single in _ONE_ROW.items():
        assert ("unnest" in statement, "unnest" in single, "[]" in single) == (True, False, False)
    one = _statement(_Exec(_COUNT_ALL, [["014"], ["REF1"], [1], ["002"], [1]]))
    assert (_ONE_ROW[_COUNT_ALL], ["014", "REF1", 1, "002", 1]) == one
    two = [["014", "014"], ["REF1", "REF2"], [1, 2], ["002", "002"], [1, 1]]
    assert (_COUNT_ALL, two) == _statement(_Exec(_COUNT_ALL, two))
