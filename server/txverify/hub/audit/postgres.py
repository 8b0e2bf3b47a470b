"""The audit store on PostgreSQL (psycopg 3): hub replicas share one audit, counts exact."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from txverify.errors import Reason, ServiceError
from txverify.hub.audit import (
    AUDIT_COLUMNS,
    IDEMPOTENCY_WINDOW_US,
    AuditEntry,
    AuditFilter,
    BatchItem,
    BatchPlan,
    BatchResult,
    Key,
    MemberUsage,
    Remembered,
    Use,
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
from txverify.hub.pg import connect_kwargs
from txverify.hub.schema import AUDIT, migrate_postgres
from txverify.runtime.storage import to_micros

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# A batch PostgreSQL picks as a deadlock victim is run again from the start (its
# responses are pure functions of the counts). Batches take their row locks in
# one global order (claims, slip_uses, slip_scope_uses, each sorted by key), so
# two batches cannot deadlock each other; forget_before's DELETE, which locks
# rows in scan order, can deadlock with a batch taking over an expired claim.
ATTEMPTS = 3
READERS = 4  # pooled connections for the event loop's reads (idempotency look-ups, queries)
POOL_TIMEOUT = 5.0  # seconds a read waits for a pooled connection before AUDIT_UNAVAILABLE

# The batch statements take their rows as arrays (unnest), one parameter a column,
# in binary (%b): psycopg dumps a text array in Python with a quoting check per
# element (a bytea array 30x slower than binary): that was most of a batch's CPU.
#
# Claim a batch's named requests: insert each (member, request_id), or take over a
# row older than the window; RETURNING names the ones this transaction now holds.
# A row another transaction claimed and has not committed makes this statement
# wait for it (its unique-index entry), then see it: no two transactions ever
# both claim one id. A fresh row another one committed is not updated (WHERE),
# but stays locked until this transaction ends; _STORED then reads its answer.
# The response of a claimed id is filled in by _REMEMBER, in the same transaction.
_CLAIM = (
    "INSERT INTO remembered_answers AS r "
    "(member, request_id, at, sending_bank, trans_ref, response) "
    "SELECT k.*, ''::bytea FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], "
    "%b::text[]) AS k (member, request_id, at, sending_bank, trans_ref) "
    "ON CONFLICT (member, request_id) DO UPDATE SET at = EXCLUDED.at, "
    "sending_bank = EXCLUDED.sending_bank, trans_ref = EXCLUDED.trans_ref, "
    "response = EXCLUDED.response "
    "WHERE r.at < EXCLUDED.at - %b "
    "RETURNING r.member, r.request_id"
)
# The stored answers of the ids the claim did not return. A statement of its own:
# it starts after the claim waited, so its snapshot sees what the other
# transaction committed (a CTE of the claim would share the claim's snapshot).
_STORED = (
    "SELECT r.member, r.request_id, r.sending_bank, r.trans_ref, r.response "
    "FROM unnest(%b::text[], %b::text[]) AS k (member, request_id) "
    "JOIN remembered_answers AS r ON r.member = k.member AND r.request_id = k.request_id"
)
# One upsert per counter table and batch: each slip's m uses add m and RETURN the
# total F, so its k-th use in the batch is number F - m + k. The row stays locked
# to the transaction's end: exact however many replicas count at once.
_COUNT_ALL = (
    "INSERT INTO slip_uses AS s (sending_bank, trans_ref, first_at, first_by, uses) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::bigint[]) "
    "ON CONFLICT (sending_bank, trans_ref) DO UPDATE SET uses = s.uses + EXCLUDED.uses "
    "RETURNING s.sending_bank, s.trans_ref, s.uses, s.first_at, s.first_by"
)
_COUNT_SCOPE = (
    "INSERT INTO slip_scope_uses AS s "
    "(sending_bank, trans_ref, member, reference, first_at, uses) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], "
    "%b::bigint[]) "
    "ON CONFLICT (sending_bank, trans_ref, member, reference) "
    "DO UPDATE SET uses = s.uses + EXCLUDED.uses "
    "RETURNING s.sending_bank, s.trans_ref, s.member, s.reference, s.uses, s.first_at"
)
_APPEND = (
    f"INSERT INTO audit ({AUDIT_COLUMNS}) "
    "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::text[], %b::int[], %b::bigint[], %b::int[], %b::text[])"
)
_REMEMBER = (
    "INSERT INTO remembered_answers AS r "
    "(member, request_id, at, sending_bank, trans_ref, response) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], "
    "%b::bytea[]) "
    "ON CONFLICT (member, request_id) DO UPDATE SET at = EXCLUDED.at, "
    "sending_bank = EXCLUDED.sending_bank, trans_ref = EXCLUDED.trans_ref, "
    "response = EXCLUDED.response"
)
# One statement (each costs ~50 µs of psycopg's Python): the answers' rows are
# this batch's already (claimed), so there is no lock order to keep between the two.
_REMEMBER_AND_APPEND = f"WITH remembered AS ({_REMEMBER}) {_APPEND}"
_REMEMBERED = (
    "SELECT sending_bank, trans_ref, response FROM remembered_answers "
    "WHERE member = %s AND request_id = %s AND at >= %s"
)
# The event loop's look-ups, several in one statement (see _Lookups); `i` says whose.
_LOOK_UP = (
    "SELECT k.i, r.sending_bank, r.trans_ref, r.response "
    "FROM unnest(%b::text[], %b::text[], %b::bigint[]) WITH ORDINALITY "
    "AS k (member, request_id, since, i) "
    "JOIN remembered_answers AS r ON r.member = k.member AND r.request_id = k.request_id "
    "AND r.at >= k.since"
)
Found = tuple[str, str, bytes] | None  # (sending_bank, trans_ref, response) of an answer


def _one_row(statement: str) -> str:
    """The statement for arrays of one element each: `(VALUES (%b::text, ...))` in
    place of `unnest(%b::text[], ...)`. psycopg dumps a scalar for a fraction of
    what an array costs it (it inspects every list to pick the element dumper),
    and at light load most batches are of one verification."""

    def values(match: re.Match[str]) -> str:
        alias = "" if statement[match.end() :].lstrip().startswith("AS ") else " AS v"
        return f"(VALUES ({match.group(1).replace('[]', '')})){alias}"

    return re.sub(r"unnest\(([^)]*)\)", values, statement)


# Every batch statement, and its form for one row.
_ONE_ROW = {
    statement: _one_row(statement)
    for statement in (_CLAIM, _STORED, _COUNT_ALL, _COUNT_SCOPE, _APPEND, _REMEMBER_AND_APPEND)
}


def _statement(step: _Exec) -> tuple[str, Sequence[Any] | None]:
    """What to send for a step: its one-row form when every array holds one row."""
    params = step.params
    if params and all(len(p) == 1 for p in params if isinstance(p, list)):
        single = _ONE_ROW.get(step.sql)
        if single is not None:
            return single, [p[0] if isinstance(p, list) else p for p in params]
    return step.sql, params


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows -> one list per column: the arrays that unnest turns back into rows."""
    return [list(column) for column in zip(*rows, strict=True)]


def _unavailable(exc: BaseException) -> ServiceError:
    log.warning("audit database unreachable: %s", str(exc).strip() or type(exc).__name__)
    return _unreadable()


def _unreadable() -> ServiceError:
    return ServiceError(Reason.AUDIT_UNAVAILABLE, "the hub cannot read its audit database; retry")


class _Lookups:
    """The router's idempotency look-ups, sent together: while one query is on its way,
    the look-ups that arrive wait and then go in the next one, all in one round trip.

    One query per look-up cost the event loop ~0.2 ms of CPU each (psycopg's async
    execute, the pool), more than the SQLite hub spends on a whole batch record;
    under load a query now carries as many look-ups as requests arrived meanwhile,
    and a lone look-up still goes at once.
    """

    def __init__(self, store: PostgresAuditStore) -> None:
        self._store = store
        self._queue: list[tuple[str, str, int, asyncio.Future[Found]]] = []
        self._task: asyncio.Task[None] | None = None

    async def get(self, member: str, request_id: str, since: datetime) -> Found:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Found] = loop.create_future()
        self._queue.append((member, request_id, to_micros(since), future))
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        batch: list[tuple[str, str, int, asyncio.Future[Found]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    rows = await self._fetch(batch)
                except Exception as exc:
                    if isinstance(exc, psycopg.Error):  # PoolTimeout included
                        _unavailable(exc)
                    else:
                        log.exception("idempotency look-up failed")
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(_unreadable())
                    continue
                found = {i: (bank, ref, bytes(response)) for i, bank, ref, response in rows}
                for i, (*_, future) in enumerate(batch, 1):
                    if not future.done():  # its caller may have given up
                        future.set_result(found.get(i))
        finally:
            self._task = None
            for *_, future in batch + self._queue:  # cancelled (the store closing)
                future.cancel()

    async def _fetch(self, batch: list[tuple[str, str, int, asyncio.Future[Found]]]) -> list[Any]:
        pool = await self._store._async_pool()
        async with pool.connection() as conn:
            if len(batch) == 1:  # alone: the plain statement, cheaper to send than arrays
                cursor = await conn.execute(_REMEMBERED, batch[0][:3])
                return [(1, *row) for row in await cursor.fetchall()]
            cursor = await conn.execute(_LOOK_UP, _columns([b[:3] for b in batch]))
            return await cursor.fetchall()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


# -- one batch, as statements and round trips, whatever drives the connection -----------


@dataclass(frozen=True, slots=True)
class _Exec:
    """Queue a statement (pipeline mode); the driver sends back its cursor."""

    sql: str
    params: Sequence[Any] | None = None


@dataclass(frozen=True, slots=True)
class _Sync:
    """Send what is queued and wait: one round trip. The driver sends back the rows of
    each of `cursors`."""

    cursors: Sequence[Any]


_Steps = Generator[_Exec | _Sync, Any, _T]


@dataclass(frozen=True, slots=True)
class _Counting:
    """Counter upserts queued for some uses; counts() reads them once synced."""

    uses: Sequence[Use]
    slips: dict[tuple[str, str], list[int]]  # slip -> indexes of its uses, in order
    scopes: dict[tuple[str, str, str, str], list[int]]
    cursors: list[Any]  # slip_uses', slip_scope_uses'

    def counts(self, all_rows: list[Any], scope_rows: list[Any]) -> list[UseCounts]:
        """A slip's k-th of m uses here is number F - m + k of the total F returned."""
        totals = {(r[0], r[1]): (r[2], r[3], r[4]) for r in all_rows}
        scope_totals = {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in scope_rows}
        n = len(self.uses)
        number, first = [0] * n, [(0, "")] * n
        for key, ns in self.slips.items():
            final, first_at, first_by = totals[key]
            for k, i in enumerate(ns, 1):
                number[i], first[i] = final - len(ns) + k, (first_at, first_by)
        scope_number, scope_first = [0] * n, [0] * n
        for scope, ns in self.scopes.items():
            final, first_at = scope_totals[scope]
            for k, i in enumerate(ns, 1):
                scope_number[i], scope_first[i] = final - len(ns) + k, first_at
        return [use_counts(number[i], *first[i], scope_number[i], scope_first[i]) for i in range(n)]


def _batch_steps(items: Sequence[BatchItem], *, commit: bool) -> _Steps[list[BatchResult]]:
    """A batch: two round trips, or three when it meets an id another transaction
    answered; leaving pipeline mode (the driver) is the last, with the COMMIT."""
    plan = plan_batch(items)
    yield _Exec("BEGIN")  # travels with the first statements
    stored, counted = yield from _claim_and_count(plan)
    judged = judge_batch(plan, stored, counted)
    audit, remember = _columns(judged.audit_rows), _columns(judged.remembered_rows)
    if remember:  # a remembered answer always comes with its audit row
        yield _Exec(_REMEMBER_AND_APPEND, [*remember, *audit])
    elif audit:
        yield _Exec(_APPEND, audit)
    if commit:
        yield _Exec("COMMIT")
    return judged.results


def _claim_and_count(
    plan: BatchPlan,
) -> _Steps[tuple[dict[Key, Remembered], list[UseCounts | None]]]:
    """What BatchPlan asks, in one round trip (with the BEGIN before it): the claims, a
    savepoint, and the uses counted as if every claim were the batch's. When another
    transaction had answered some ids first (rare: the router's look-up finds most
    repeats), a second: their answers, back to the savepoint, the count again
    without their uses."""
    claimed_cursor = None
    if plan.claims:
        cols = _columns([(*c.key, c.at, c.sending_bank, c.trans_ref) for c in plan.claims])
        claimed_cursor = yield _Exec(_CLAIM, [*cols, IDEMPOTENCY_WINDOW_US])
        yield _Exec("SAVEPOINT counting")
    counting = yield from _count(plan.uses)
    rows = yield _Sync(
        ([claimed_cursor] if claimed_cursor is not None else [])
        + (counting.cursors if counting else [])
    )
    counts: list[UseCounts | None] = list(counting.counts(*rows[-2:])) if counting else []
    if not plan.claims:
        return {}, counts
    claimed = {(m, r) for m, r in rows[0]}
    if len(claimed) == len(plan.claims):
        return {}, counts
    others = [c.key for c in plan.claims if c.key not in claimed]
    stored_cursor = yield _Exec(_STORED, _columns(others))
    yield _Exec("ROLLBACK TO SAVEPOINT counting")
    counting = yield from _count([u for u in plan.uses if u.claim is None or u.claim in claimed])
    rows = yield _Sync([stored_cursor, *(counting.cursors if counting else [])])
    stored = {(m, r): Remembered(bank, ref, bytes(resp)) for m, r, bank, ref, resp in rows[0]}
    if len(stored) != len(others):
        raise RuntimeError("a claimed request id is neither this batch's nor remembered")
    mine = iter(counting.counts(*rows[1:]) if counting else [])
    return stored, [None if u.claim in stored else next(mine) for u in plan.uses]


def _count(uses: Sequence[Use]) -> _Steps[_Counting | None]:
    """Queue the two counter upserts of `uses` (none if there are none)."""
    if not uses:
        return None
    slips: dict[tuple[str, str], list[int]] = {}
    scopes: dict[tuple[str, str, str, str], list[int]] = {}
    for i, use in enumerate(uses):
        u = use.slip
        slips.setdefault((u.sending_bank, u.trans_ref), []).append(i)
        scopes.setdefault((u.sending_bank, u.trans_ref, u.member, u.reference), []).append(i)
    # Sorted: every batch locks counter rows in the same order (no deadlocks).
    # A new row's first use is the batch's first use of that slip (or scope).
    slip_rows = [
        (*key, uses[ns[0]].at, uses[ns[0]].slip.member, len(ns))
        for key, ns in sorted(slips.items())
    ]
    scope_rows = [(*key, uses[ns[0]].at, len(ns)) for key, ns in sorted(scopes.items())]
    all_cursor = yield _Exec(_COUNT_ALL, _columns(slip_rows))
    scope_cursor = yield _Exec(_COUNT_SCOPE, _columns(scope_rows))
    return _Counting(uses, slips, scopes, [all_cursor, scope_cursor])


def _drive(
    conn: psycopg.Connection[TupleRow], steps: _Steps[list[BatchResult]]
) -> list[BatchResult]:
    """Run a batch's steps on a blocking connection (tools, tests, forget_before's thread)."""
    reply: Any = None
    with conn.pipeline() as pipeline:
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                results: list[BatchResult] = done.value
                break
            if isinstance(step, _Exec):
                reply = conn.execute(*_statement(step))
            else:
                pipeline.sync()
                reply = [cursor.fetchall() for cursor in step.cursors]
    return results  # leaving pipeline mode synced the rest, raising its errors


async def _adrive(
    conn: psycopg.AsyncConnection[TupleRow], steps: _Steps[list[BatchResult]]
) -> list[BatchResult]:
    """Run a batch's steps on an asyncio connection: the event loop awaits each round
    trip, never blocked; no thread to hand the GIL to and back at every one."""
    reply: Any = None
    async with conn.pipeline() as pipeline:
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                results: list[BatchResult] = done.value
                break
            if isinstance(step, _Exec):
                reply = await conn.execute(*_statement(step))
            else:
                await pipeline.sync()
                reply = [await cursor.fetchall() for cursor in step.cursors]
    return results


# -- the store ------------------------------------------------------------------------


def _durable(setting: Any) -> bool:
    """Whether a synchronous_commit setting makes a COMMIT wait until its WAL is on disk:
    all but "off" (local, remote_write, on, remote_apply all flush locally first)."""
    return bool(setting != "off")


class PostgresAuditStore:
    """AuditStore in PostgreSQL, for hub replicas (or workers) sharing one database.

    The hub's batches run on the event loop over an asyncio connection
    (awrite_batch): in pipeline mode, one round trip for BEGIN, the claims and the
    two counter upserts, one for the audit rows, the remembered answers and the
    COMMIT (a third only when a batch meets an id another transaction answered).
    The COMMIT returns once the WAL is flushed: synchronous_commit stays on (the
    default; a connection finding it off turns it on for itself), so an answer
    is never sent before its record is durable. The loop's reads (idempotency
    look-ups, queries) go through an asyncio pool. The blocking methods (tools,
    tests) use connections of their own, opened when first needed.
    """

    # Each round trip waits on the network: the loop awaits a whole batch.
    async_batches = True

    def __init__(self, url: str, *, readers: int = READERS) -> None:
        self.url = url
        self.readers = readers
        # A connect timeout (libpq would wait for ever) and a name in pg_stat_activity.
        self._kwargs = connect_kwargs(url, application_name="txverify-hub-audit")
        with self._connect() as conn:
            migrate_postgres(conn, "audit", AUDIT)
        # Every connection is made when first needed: a hub uses only the asyncio
        # ones (made on its loop, never in a supervisor before it forks), tools and
        # tests the blocking ones.
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._aconn: psycopg.AsyncConnection[TupleRow] | None = None
        self._alock = asyncio.Lock()  # one batch at a time on the asyncio connection
        self._apool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] | None = None
        self._apool_lock = asyncio.Lock()
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] | None = None
        self._pool_lock = threading.Lock()
        self._lookups = _Lookups(self)

    def _connect(self) -> psycopg.Connection[TupleRow]:
        conn = psycopg.connect(self.url, autocommit=True, **self._kwargs)  # explicit BEGIN
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if not _durable(row[0] if row else None):
            conn.execute("SET synchronous_commit = on")
            log.warning("synchronous_commit was off for the audit writer; set to on")
        return conn

    async def _aconnect(self) -> psycopg.AsyncConnection[TupleRow]:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **self._kwargs)
        row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
        if not _durable(row[0] if row else None):
            await conn.execute("SET synchronous_commit = on")
            log.warning("synchronous_commit was off for the audit writer; set to on")
        return conn

    def _writer(self) -> psycopg.Connection[TupleRow]:
        """The blocking writer's connection, connected again if it was lost."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("audit database connection lost; reconnecting")
                self._conn.close()
            self._conn = None
            self._conn = self._connect()
        return self._conn

    async def _awriter(self) -> psycopg.AsyncConnection[TupleRow]:
        """The event loop's writing connection, connected again if it was lost."""
        if self._aconn is None or self._aconn.closed or self._aconn.broken:
            if self._aconn is not None:
                log.warning("audit database connection lost; reconnecting")
                await self._aconn.close()
            self._aconn = None
            self._aconn = await self._aconnect()
        return self._aconn

    # -- writing ------------------------------------------------------------------------

    async def awrite_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        async with self._alock:
            for attempt in range(1, ATTEMPTS + 1):
                conn = await self._awriter()
                try:
                    return await _adrive(conn, _batch_steps(items, commit=True))
                except (errors.DeadlockDetected, errors.SerializationFailure):
                    await self._arollback()
                    if attempt == ATTEMPTS:
                        raise
                    _deadlock_victim(len(items))
                except BaseException:
                    await self._arollback()
                    raise
        raise AssertionError("unreachable")

    async def _arollback(self) -> None:
        conn = self._aconn
        if conn is None or conn.closed:
            return
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
        except psycopg.Error:
            await conn.close()  # unusable: the next batch connects again

    def write_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        return self._batch(items, commit=True)

    def stage_batch(self, items: Sequence[BatchItem], *, wait: bool = True) -> list[BatchResult]:
        return self._batch(items, commit=False)

    def _batch(self, items: Sequence[BatchItem], *, commit: bool) -> list[BatchResult]:
        for attempt in range(1, ATTEMPTS + 1):
            conn = self._writer()
            try:
                return _drive(conn, _batch_steps(items, commit=commit))
            except (errors.DeadlockDetected, errors.SerializationFailure):
                self.rollback()
                if attempt == ATTEMPTS:
                    raise
                _deadlock_victim(len(items))
            except BaseException:
                self.rollback()
                raise
        raise AssertionError("unreachable")

    def begin(self) -> None:
        """Nothing to wait for: PostgreSQL locks rows, not the database; a batch waits
        only for rows (a slip's counter, a request id) another batch holds."""

    def commit(self) -> None:
        if self._conn is None:  # never a new connection: its COMMIT would commit nothing
            raise psycopg.OperationalError("the audit database connection was lost")
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.close()  # unusable: the next batch connects again

    def forget_before(self, moment: datetime) -> int:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                cursor = self._writer().execute(
                    "DELETE FROM remembered_answers WHERE at < %s", (to_micros(moment),)
                )
                return cursor.rowcount
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    # -- reading ------------------------------------------------------------------------

    def _sync_pool(self) -> ConnectionPool[psycopg.Connection[TupleRow]]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=self.readers, open=True,
                    kwargs={"autocommit": True, **self._kwargs}, timeout=POOL_TIMEOUT,
                    name="audit-readers",
                )  # fmt: skip
            return self._pool

    async def _async_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
        if self._apool is None:
            async with self._apool_lock:
                if self._apool is None:
                    pool = AsyncConnectionPool(
                        self.url, min_size=1, max_size=self.readers, open=False,
                        kwargs={"autocommit": True, **self._kwargs}, timeout=POOL_TIMEOUT,
                        name="audit-readers-async",
                    )  # fmt: skip
                    await pool.open(wait=False)
                    self._apool = pool
        return self._apool

    def remembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        with self._sync_pool().connection() as conn:
            row = conn.execute(_REMEMBERED, (member, request_id, to_micros(since))).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    async def aremembered(
        self, member: str, request_id: str, since: datetime
    ) -> tuple[str, str, bytes] | None:
        return await self._lookups.get(member, request_id, since)

    def query(self, where: AuditFilter) -> list[AuditEntry]:
        sql, args = audit_query("%s", where)
        with self._sync_pool().connection() as conn:
            return [entry_of(r) for r in conn.execute(sql.encode(), args).fetchall()]

    async def aquery(self, where: AuditFilter) -> list[AuditEntry]:
        sql, args = audit_query("%s", where)
        try:
            pool = await self._async_pool()
            async with pool.connection() as conn:
                cursor = await conn.execute(sql.encode(), args)
                rows = await cursor.fetchall()
        except psycopg.Error as exc:
            raise _unavailable(exc) from exc
        return [entry_of(r) for r in rows]

    async def ausage(self, member: str, month: datetime, day: datetime) -> MemberUsage:
        args = usage_args(member, month, day, Reason.SLIP_NOT_FOUND.value)
        try:
            pool = await self._async_pool()
            async with pool.connection() as conn:
                cursor = await conn.execute(usage_query("%s").encode(), args)
                row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise _unavailable(exc) from exc
        assert row is not None  # an aggregate always has its one row
        return usage_of(row)

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        self._lookups.cancel()  # none is waiting once the server stopped
        if self._aconn is not None:
            await self._aconn.close()
            self._aconn = None
        if self._apool is not None:
            await self._apool.close()
            self._apool = None
        await asyncio.to_thread(self.close)


def _deadlock_victim(records: int) -> None:
    log.warning("audit batch of %d was a deadlock victim; running it again", records)
