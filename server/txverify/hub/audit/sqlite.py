"""The AuditStore in SQLite: the default, for laptops, tests and one machine."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from txverify.errors import Reason
from txverify.hub.audit import (
    AUDIT_COLUMNS,
    IDEMPOTENCY_WINDOW_US,
    AuditEntry,
    AuditFilter,
    BatchItem,
    BatchPlan,
    BatchResult,
    Claim,
    Key,
    MemberUsage,
    Remembered,
    StoreBusy,
    UseCounts,
    audit_query,
    entry_of,
    judge_batch,
    plan_batch,
    usage_args,
    usage_of,
    usage_query,
    use_counts,
)
from txverify.hub.schema import AUDIT, migrate_sqlite
from txverify.runtime.storage import (
    BUSY_TIMEOUT_MS,
    connect_sqlite,
    set_busy_timeout,
    sqlite_path,
    to_micros,
)

# Counting is an upsert that returns the count it made (no read-then-write race):
# under any concurrency (one writer here, workers or replicas elsewhere) every
# use gets its own number. One statement per counter for the whole batch, each
# row through the primary key, so the cost does not grow with the table. SQLite
# applies the rows in order, so a slip used twice in a batch is counted twice;
# RETURNING's order is unspecified, so each row says which counter it is.
_COUNT_ALL = (
    "INSERT INTO slip_uses VALUES {rows} ON CONFLICT (sending_bank, trans_ref) "
    "DO UPDATE SET uses = uses + 1 RETURNING sending_bank, trans_ref, uses, first_at, first_by"
)
_COUNT_SCOPE = (
    "INSERT INTO slip_scope_uses VALUES {rows} "
    "ON CONFLICT (sending_bank, trans_ref, member, reference) "
    "DO UPDATE SET uses = uses + 1 "
    "RETURNING sending_bank, trans_ref, member, reference, uses, first_at"
)
_ALL_ROW, _SCOPE_ROW = "(?, ?, ?, ?, 1)", "(?, ?, ?, ?, ?, 1)"


def _numbers(rows: Iterable[Sequence[Any]], width: int) -> dict[tuple[Any, ...], list[Any]]:
    """Counter key (the first `width` columns) -> the rest of its RETURNING rows, the
    lowest count last: pop() gives a batch's uses of one counter their numbers in order."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        out.setdefault(tuple(row[:width]), []).append(tuple(row[width:]))
    for numbers in out.values():
        if len(numbers) > 1:
            numbers.sort(reverse=True)
    return out


def _rows(count: int, width: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * count)


def _keys(count: int, width: int) -> str:
    """`(VALUES (?, ?), ...) AS k CROSS JOIN`: look rows up by key, `k` first.

    Joined this way SQLite searches the table's primary key once per key, whereas
    `WHERE (a, b) IN (VALUES ...)` makes it scan the whole table (its query plan).
    """
    return f"(VALUES {_rows(count, width)}) AS k CROSS JOIN"


def _chunks(keys: Sequence[Claim], size: int) -> list[Sequence[Claim]]:
    # SQLite allows at most 32766 parameters a statement; stay well below.
    return [keys[i : i + size] for i in range(0, len(keys), size)]


class _WriteLock:
    """The hub workers' write lock on one database (a lock file, flock), and the fsync of
    its WAL that makes a COMMIT made with synchronous=NORMAL durable."""

    def __init__(self, db: Path) -> None:
        self._fd = os.open(f"{db}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._held = False
        self._wal = Path(f"{db}-wal")
        self._wal_fd, self._wal_ino = -1, 0

    def acquire(self, *, wait: bool) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        self._held = True
        return True

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def sync_wal(self) -> None:
        """fdatasync the WAL (and its directory, once per WAL file): what synchronous=FULL
        would do at the COMMIT."""
        try:
            ino = self._wal.stat().st_ino
        except FileNotFoundError:
            return  # no WAL: every frame is checkpointed (and synced) into the database
        if ino != self._wal_ino:
            if self._wal_fd >= 0:
                os.close(self._wal_fd)
            self._wal_fd, self._wal_ino = os.open(self._wal, os.O_RDONLY), ino
            directory = os.open(self._wal.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        os.fdatasync(self._wal_fd)

    def close(self) -> None:
        """Release and close (a second close does nothing, as sqlite3's does)."""
        if self._fd < 0:
            return
        self.release()
        os.close(self._fd)
        self._fd = -1
        if self._wal_fd >= 0:
            os.close(self._wal_fd)
            self._wal_fd, self._wal_ino = -1, 0


class SqliteAuditStore:
    """AuditStore in SQLite; each commit is fsynced (synchronous=FULL).

    Two connections: one for the writer thread (batches), one for reads on
    the event loop (idempotency lookups, queries); WAL lets them run at once.
    `sqlite://` means a file in a temporary directory, removed on close: two
    connections to one in-memory database are not possible without SQLite's
    shared cache, whose table locks would fail readers during a write.

    shared: other processes (hub workers) write the same file. The writer's
    connection then never waits for the lock where it runs (busy_timeout 0):
    the event loop stages batches on it, and when another process holds the
    lock, `begin` waits for it in the writer thread instead of stalling the loop.
    The workers hand the write lock over with a lock file (flock: the waiter
    wakes the moment it is released; SQLite's own busy handler sleeps 1, 2, 5,
    10 ms... between tries), and each releases it right after its COMMIT: the
    COMMIT does not fsync (synchronous=NORMAL); the fsync of the WAL follows,
    outside the lock, so one worker's batch no longer waits for the other's
    fsync. Durable all the same before commit() returns: the fsync of the WAL
    file covers every frame written to it before, ours included; a batch of
    another worker that read ours is answered only after its own fsync.
    """

    # Statements take µs in-process: the loop stages them, the thread only COMMITs.
    async_batches = False

    def __init__(self, url: str, *, shared: bool = False) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if sqlite_path(url) is None:
            if shared:
                raise ValueError("a database shared by processes must be a file: sqlite:///path")
            self._tmp = tempfile.TemporaryDirectory(prefix="txverify-audit-")
            url = f"sqlite:///{self._tmp.name}/audit.sqlite"
        self.shared = shared
        self._url = url
        # The reader makes the schema: it waits for the lock like any connection.
        self._reader: sqlite3.Connection = connect_sqlite(url).conn
        migrate_sqlite(self._reader, "audit", AUDIT)
        self.db = connect_sqlite(
            url, fsync_each_commit=not shared, busy_timeout_ms=0 if shared else BUSY_TIMEOUT_MS
        )
        self._conn: sqlite3.Connection = self.db.conn  # the writer's
        self._write_lock: _WriteLock | None = None
        if shared:
            path = Path(self._conn.execute("PRAGMA database_list").fetchone()[2])
            self._write_lock = _WriteLock(path)

    def write_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        results = self.stage_batch(items)
        self.commit()
        return results

    async def awrite_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        # The hub stages on the loop and commits in its writer thread instead (AuditWriter).
        return await asyncio.to_thread(self.write_batch, items)

    def begin(self) -> None:
        if self._write_lock is None:
            self._conn.execute("BEGIN IMMEDIATE")
            return
        self._write_lock.acquire(wait=True)  # in C without the GIL, woken at release
        # Another kind of writer (the registry, a tool) may hold SQLite's lock: its
        # busy handler waits for that, then the connection gets back its setting.
        set_busy_timeout(self._conn, BUSY_TIMEOUT_MS)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._write_lock.release()
            raise
        finally:
            set_busy_timeout(self._conn, 0)

    def _begin_now(self) -> None:
        """BEGIN IMMEDIATE, or StoreBusy at once if another process writes."""
        lock = self._write_lock
        if lock is not None and not lock.acquire(wait=False):
            raise StoreBusy("another process holds the write lock")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            if lock is not None:
                lock.release()
            busy = isinstance(exc, sqlite3.OperationalError) and (
                exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            )
            if busy:
                raise StoreBusy("another process holds the write lock") from None
            raise

    def stage_batch(self, items: Sequence[BatchItem], *, wait: bool = True) -> list[BatchResult]:
        conn = self._conn
        if not conn.in_transaction:  # else begin() opened it
            if wait:
                self.begin()
            else:
                self._begin_now()
        try:
            plan = plan_batch(items)
            judged = judge_batch(plan, *self._claim_and_count(plan))
            # Rows that return nothing go in one statement per batch.
            conn.executemany(
                f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                judged.audit_rows,
            )
            # OR REPLACE: a row older than the idempotency window may be taken over.
            conn.executemany(
                "INSERT OR REPLACE INTO remembered_answers VALUES (?, ?, ?, ?, ?, ?)",
                judged.remembered_rows,
            )
        except BaseException:
            self.rollback()
            raise
        return judged.results

    def _claim_and_count(
        self, plan: BatchPlan
    ) -> tuple[dict[Key, Remembered], list[UseCounts | None]]:
        """What BatchPlan asks. BEGIN IMMEDIATE holds the database's one write lock, so
        reading the stored answers is the claim (the batch writes its own later);
        then one upsert per use and counter, each returning its number.

        (An earlier version upserted with executemany and read the counts back
        with `WHERE (a, b) IN (VALUES ...)`, which SQLite runs as a full table
        scan: its cost grew with every slip ever verified.)
        """
        stored = self._stored(plan.claims) if plan.claims else {}
        counted = [use for use in plan.uses if use.claim not in stored]
        if not counted:
            return stored, [None] * len(plan.uses)
        everywhere = _numbers(self._conn.execute(
            _COUNT_ALL.format(rows=", ".join([_ALL_ROW] * len(counted))),
            [v for u in counted for v in (u.slip.sending_bank, u.slip.trans_ref, u.at,
                                           u.slip.member)],
        ), 2)  # fmt: skip
        in_scope = _numbers(self._conn.execute(
            _COUNT_SCOPE.format(rows=", ".join([_SCOPE_ROW] * len(counted))),
            [v for u in counted for v in (u.slip.sending_bank, u.slip.trans_ref, u.slip.member,
                                           u.slip.reference, u.at)],
        ), 4)  # fmt: skip
        out: list[UseCounts | None] = []
        for use in plan.uses:
            if use.claim in stored:
                out.append(None)
                continue
            u = use.slip
            number, first_at, first_by = everywhere[(u.sending_bank, u.trans_ref)].pop()
            scope_number, scope_first = in_scope[
                (u.sending_bank, u.trans_ref, u.member, u.reference)
            ].pop()
            out.append(use_counts(number, first_at, first_by, scope_number, scope_first))
        return stored, out

    def _stored(self, claims: Sequence[Claim]) -> dict[Key, Remembered]:
        """The answers remembered within the window for the claimed ids."""
        stored: dict[Key, Remembered] = {}
        fresh_from = {c.key: c.at - IDEMPOTENCY_WINDOW_US for c in claims}
        for chunk in _chunks(claims, 400):
            for r in self._conn.execute(
                "SELECT r.member, r.request_id, r.at, r.sending_bank, r.trans_ref, r.response "
                f"FROM {_keys(len(chunk), 2)} remembered_answers AS r "
                "ON r.member = k.column1 AND r.request_id = k.column2",
                [v for c in chunk for v in c.key],
            ):
                if r[2] >= fresh_from[(r[0], r[1])]:
                    stored[(r[0], r[1])] = Remembered(r[3], r[4], bytes(r[5]))
        return stored

    def commit(self) -> None:
        lock = self._write_lock
        if lock is None:
            self._conn.execute("COMMIT")  # synchronous=FULL: fsynced within
            return
        try:
            self._conn.execute("COMMIT")  # synchronous=NORMAL: no fsync yet
        finally:
            if not self._conn.in_transaction:
                lock.release()  # the next worker's batch may begin while we fsync
        lock.sync_wal()

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        if self._write_lock is not None:
            self._write_lock.release()

    def remembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        row = self._reader.execute(
            "SELECT sending_bank, trans_ref, response FROM remembered_answers "
            "WHERE member = ? AND request_id = ? AND at >= ?",
            (member, request_id, to_micros(since)),
        ).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    async def aremembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        # A primary-key read of a local file (µs): cheaper on the loop than a thread hop.
        return self.remembered(member, request_id, since)

    def query(self, where: AuditFilter) -> list[AuditEntry]:
        sql, args = audit_query("?", where)
        return [entry_of(r) for r in self._reader.execute(sql, args)]

    async def aquery(self, where: AuditFilter) -> list[AuditEntry]:
        return self.query(where)

    async def ausage(self, member: str, month: datetime, day: datetime) -> MemberUsage:
        # A month of a busy member's rows is no µs read: in a thread, on a connection of
        # its own (WAL: it reads beside the writer), never stalling Verify on the loop.
        return await asyncio.to_thread(self._usage, member, month, day)

    def _usage(self, member: str, month: datetime, day: datetime) -> MemberUsage:
        conn = connect_sqlite(self._url).conn
        try:
            args = usage_args(member, month, day, Reason.SLIP_NOT_FOUND.value)
            return usage_of(conn.execute(usage_query("?"), args).fetchone())
        finally:
            conn.close()

    def forget_before(self, moment: datetime) -> int:
        self.begin()  # in the writer thread: it may wait for another process
        try:
            cursor = self._conn.execute(
                "DELETE FROM remembered_answers WHERE at < ?", (to_micros(moment),)
            )
        except BaseException:
            self.rollback()
            raise
        self.commit()
        return cursor.rowcount

    def close(self) -> None:
        if self._write_lock is not None:
            self._write_lock.close()
        self._reader.close()
        self._conn.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def aclose(self) -> None:
        self.close()
