"""The audit trail, slip uses (duplicates) and remembered answers (idempotency), in one store."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from txverify.storage import connect_sqlite, from_micros, sqlite_path, to_micros, write_transaction
from txverify.v1 import verification_pb2


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One Verify as answered: who, which slip, what outcome; no personal data."""

    at: datetime
    request_id: str
    requester: str
    requester_reference: str
    issuer: str
    trans_ref: str
    status: str  # gRPC status name, "OK" for an answer
    reason: str = ""
    verdict: int = 0  # verification_pb2.Verdict value
    latency_us: int = 0
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class SlipUse:
    """A successful verification to count, globally and in its requester's scope."""

    sending_bank: str
    trans_ref: str
    member: str
    reference: str


@dataclass(frozen=True, slots=True)
class UseCounts:
    """Uses of a slip before this one (times as µs since the epoch, UTC)."""

    previous: int
    first_at: int | None
    first_by: str
    previous_in_scope: int
    first_in_scope_at: int | None


@dataclass(frozen=True, slots=True)
class Verified:
    """A successful answer still to be judged for duplicates and remembered.

    `finish` turns the counts into the final response (verdict and duplicate
    info); it runs in the writer, inside the transaction that counted.
    """

    use: SlipUse
    finish: Callable[[UseCounts], verification_pb2.VerifyResponse]
    remember: bool = True  # keep the answer for idempotent replay (the caller named the request)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """What one Verify writes: always its audit entry; for a new answer, its use."""

    entry: AuditEntry
    verified: Verified | None = None


class AuditStore(Protocol):
    """Durable audit, uses and answers; one class per backend."""

    def write_batch(
        self, items: Sequence[BatchItem]
    ) -> list[verification_pb2.VerifyResponse | None]:
        """Count uses, remember answers and append audit entries, in ONE transaction;
        returns each item's final response (None for entries without an answer)."""

    def stage_batch(
        self, items: Sequence[BatchItem]
    ) -> list[verification_pb2.VerifyResponse | None]:
        """write_batch without the COMMIT: the transaction stays open until commit()
        or rollback(). Lets the writer do the statements on one thread (no lock
        hand-overs per statement) and only the durable COMMIT on another."""

    def commit(self) -> None:
        """Commit what stage_batch staged (durably)."""

    def rollback(self) -> None:
        """Drop what stage_batch staged."""

    def remembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        """(sending_bank, trans_ref, response bytes) of a remembered answer, or None."""

    def query(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        member: str,
        trans_ref: str,
        request_id: str,
        limit: int,
    ) -> list[AuditEntry]:
        """Audit entries, newest first."""

    def forget_before(self, moment: datetime) -> int:
        """Drop remembered answers older than `moment`; returns how many."""

    def close(self) -> None:
        """Release the storage."""


def open_audit_store(url: str) -> AuditStore:
    """The store for a URL: `sqlite:///path/hub.sqlite` or `sqlite://` (memory)."""
    if url.startswith("sqlite://"):
        return SqliteAuditStore(url)
    raise ValueError(f"unsupported audit URL {url!r}: use sqlite:///path or sqlite://")


SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id                  INTEGER PRIMARY KEY,  -- no AUTOINCREMENT: append-only; it cost a write
    at                  INTEGER NOT NULL,            -- µs since the epoch, UTC
    request_id          TEXT NOT NULL,
    requester           TEXT NOT NULL,
    requester_reference TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    trans_ref           TEXT NOT NULL,
    status              TEXT NOT NULL,
    reason              TEXT NOT NULL,
    verdict             INTEGER NOT NULL,
    latency_us          INTEGER NOT NULL,
    replayed            INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_requester ON audit (requester, at);
CREATE INDEX IF NOT EXISTS audit_trans_ref ON audit (trans_ref);
CREATE INDEX IF NOT EXISTS audit_request_id ON audit (request_id);
CREATE TABLE IF NOT EXISTS slip_uses (
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    first_at     INTEGER NOT NULL,
    first_by     TEXT NOT NULL,
    uses         INTEGER NOT NULL,
    PRIMARY KEY (sending_bank, trans_ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slip_scope_uses (
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    member       TEXT NOT NULL,
    reference    TEXT NOT NULL,
    first_at     INTEGER NOT NULL,
    uses         INTEGER NOT NULL,
    PRIMARY KEY (sending_bank, trans_ref, member, reference)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS remembered_answers (
    member       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    at           INTEGER NOT NULL,
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    response     BLOB NOT NULL,
    PRIMARY KEY (member, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS remembered_at ON remembered_answers (at);
"""
# Counting is an upsert that returns the count it made (no read-then-write race):
# under any concurrency (one writer here, replicas on PostgreSQL later) every
# use gets its own number. One statement per use, each through the primary key:
# the cost does not grow with the table.
_COUNT_ALL = (
    "INSERT INTO slip_uses VALUES (?, ?, ?, ?, 1) ON CONFLICT (sending_bank, trans_ref) "
    "DO UPDATE SET uses = uses + 1 RETURNING uses, first_at, first_by"
)
_COUNT_SCOPE = (
    "INSERT INTO slip_scope_uses VALUES (?, ?, ?, ?, ?, 1) "
    "ON CONFLICT (sending_bank, trans_ref, member, reference) "
    "DO UPDATE SET uses = uses + 1 RETURNING uses, first_at"
)


class SqliteAuditStore:
    """AuditStore in SQLite; each commit is fsynced (synchronous=FULL).

    Two connections: one for the writer thread (batches), one for reads on
    the event loop (idempotency lookups, queries); WAL lets them run at once.
    `sqlite://` means a file in a temporary directory, removed on close: two
    connections to one in-memory database are not possible without SQLite's
    shared cache, whose table locks would fail readers during a write.
    """

    def __init__(self, url: str) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if sqlite_path(url) is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="txverify-audit-")
            url = f"sqlite:///{self._tmp.name}/audit.sqlite"
        self.db = connect_sqlite(url, fsync_each_commit=True)
        self._conn: sqlite3.Connection = self.db.conn  # the writer's
        self._conn.executescript(SCHEMA)
        self._reader: sqlite3.Connection = connect_sqlite(url).conn

    def write_batch(
        self, items: Sequence[BatchItem]
    ) -> list[verification_pb2.VerifyResponse | None]:
        results = self.stage_batch(items)
        self.commit()
        return results

    def stage_batch(
        self, items: Sequence[BatchItem]
    ) -> list[verification_pb2.VerifyResponse | None]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = self._count_batch(conn, items)
            results: list[verification_pb2.VerifyResponse | None] = []
            audit_rows: list[tuple[Any, ...]] = []
            remembered_rows: list[tuple[Any, ...]] = []
            for item, count in zip(items, counts, strict=True):
                entry = item.entry
                at = to_micros(entry.at)
                final = None
                verdict = entry.verdict
                if item.verified is not None and count is not None:
                    final = item.verified.finish(count)
                    verdict = final.verdict
                    if item.verified.remember:
                        use = item.verified.use
                        remembered_rows.append(
                            (use.member, entry.request_id, at, use.sending_bank, use.trans_ref,
                             final.SerializeToString())
                        )  # fmt: skip
                audit_rows.append(
                    (at, entry.request_id, entry.requester, entry.requester_reference,
                     entry.issuer, entry.trans_ref, entry.status, entry.reason, verdict,
                     entry.latency_us, int(entry.replayed))
                )  # fmt: skip
                results.append(final)
            # Rows that return nothing go in one statement per batch.
            conn.executemany(
                "INSERT INTO audit (at, request_id, requester, requester_reference, issuer, "
                "trans_ref, status, reason, verdict, latency_us, replayed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                audit_rows,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO remembered_answers VALUES (?, ?, ?, ?, ?, ?)",
                remembered_rows,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return results

    def _count_batch(
        self, conn: sqlite3.Connection, items: Sequence[BatchItem]
    ) -> list[UseCounts | None]:
        """Count every use of the batch, in order; each upsert returns this use's number.

        (An earlier version upserted with executemany and read the counts back
        with `(a, b) IN (VALUES ...)`, which SQLite ran as a full table scan:
        its cost grew with every slip ever verified.)
        """
        out: list[UseCounts | None] = []
        for item in items:
            if item.verified is None:
                out.append(None)
                continue
            u, at = item.verified.use, to_micros(item.entry.at)
            number, first_at, first_by = conn.execute(
                _COUNT_ALL, (u.sending_bank, u.trans_ref, at, u.member)
            ).fetchone()
            scope_number, scope_first = conn.execute(
                _COUNT_SCOPE, (u.sending_bank, u.trans_ref, u.member, u.reference, at)
            ).fetchone()
            out.append(
                UseCounts(
                    previous=number - 1,
                    first_at=first_at if number > 1 else None,
                    first_by=first_by if number > 1 else "",
                    previous_in_scope=scope_number - 1,
                    first_in_scope_at=scope_first if scope_number > 1 else None,
                )
            )
        return out

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def remembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        row = self._reader.execute(
            "SELECT sending_bank, trans_ref, response FROM remembered_answers "
            "WHERE member = ? AND request_id = ? AND at >= ?",
            (member, request_id, to_micros(since)),
        ).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def query(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        member: str,
        trans_ref: str,
        request_id: str,
        limit: int,
    ) -> list[AuditEntry]:
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("at >= ?", to_micros(since) if since else None),
            ("at < ?", to_micros(until) if until else None),
            ("requester = ?", member or None),
            ("trans_ref = ?", trans_ref or None),
            ("request_id = ?", request_id or None),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = (
            "SELECT at, request_id, requester, requester_reference, issuer, trans_ref, status, "
            "reason, verdict, latency_us, replayed FROM audit"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY at DESC, id DESC LIMIT ?"
        )
        return [
            AuditEntry(
                at=from_micros(r[0]),
                request_id=r[1],
                requester=r[2],
                requester_reference=r[3],
                issuer=r[4],
                trans_ref=r[5],
                status=r[6],
                reason=r[7],
                verdict=r[8],
                latency_us=r[9],
                replayed=bool(r[10]),
            )
            for r in self._reader.execute(sql, (*args, limit))
        ]

    def forget_before(self, moment: datetime) -> int:
        with write_transaction(self._conn) as conn:
            cursor = conn.execute(
                "DELETE FROM remembered_answers WHERE at < ?", (to_micros(moment),)
            )
        return cursor.rowcount

    def close(self) -> None:
        self._reader.close()
        self._conn.close()
        if self._tmp is not None:
            self._tmp.cleanup()


class NullAuditStore:
    """No audit, no duplicate counting, no idempotency: the hub's plain forwarding cost.

    For benchmarks (audit on vs off) and nothing else: every slip looks new.
    """

    _NEVER = UseCounts(0, None, "", 0, None)

    def write_batch(
        self, items: Sequence[BatchItem]
    ) -> list[verification_pb2.VerifyResponse | None]:
        return [None if i.verified is None else i.verified.finish(self._NEVER) for i in items]

    def stage_batch(
        self, items: Sequence[BatchItem]
    ) -> list[verification_pb2.VerifyResponse | None]:
        return self.write_batch(items)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def remembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        return None

    def query(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        member: str,
        trans_ref: str,
        request_id: str,
        limit: int,
    ) -> list[AuditEntry]:
        return []

    def forget_before(self, moment: datetime) -> int:
        return 0

    def close(self) -> None:
        pass
