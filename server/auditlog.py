"""Group commit: Verify answers wait until their audit record is durable, sharing commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from server.audit import AuditStore, BatchItem, BatchResult, NullAuditStore, StoreBusy
from txverify.errors import Reason, ServiceError
from txverify.v1 import verification_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")
BatchHook = Callable[[int, float], None]  # (records in the batch, seconds to commit)
# Before a batch, wait for records on their way for up to this many times what a
# commit has lately taken. Measured (hub CPU per verification at full load; p50
# at half load): x1 0.806 ms, 3.6 ms; x3 0.757 ms, 3.2 ms; x8 0.735 ms, 3.7 ms
# with a p99 four times higher. See BENCHMARKS.md.
COMMITS_TO_WAIT = 3


class Announcement:
    """A request that will write an audit record soon; released when it writes (or gives up)."""

    def __init__(self, writer: AuditWriter) -> None:
        self._writer: AuditWriter | None = writer
        writer.announced += 1

    def release(self) -> None:
        if self._writer is not None:
            self._writer.announced -= 1
            self._writer = None


class AuditWriter:
    """Writes audit batches in one thread; each caller awaits the commit of its batch.

    Group commit: while a batch is being committed, new records queue up and go
    together in the next one. Before a batch, the writer also waits up to
    `window` seconds while requests that announced a record are still on their
    way (their issuer is answering), so that under load many requests share one
    commit and its fsync. That wait lasts COMMITS_TO_WAIT times what recent
    commits took (at most `window`): short when the hub is idle, longer under
    load, where commits take longer, so that batches grow until they pay. The
    event loop never waits on disk.

    shared: other processes (hub workers) write the same database, so the write
    lock may be taken when a batch starts. The loop then does not wait for it:
    the writer thread does, and the loop stages the batch once the lock is held.
    A store whose round trips wait on the network (PostgreSQL, `async_batches`)
    has the loop await the whole batch instead; no thread.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        max_batch: int = 1024,
        # A lone request never waits: the wait only runs while others are on
        # their way. A fixed 20 ms wait made batches of ~20 at full load but
        # cost ~3 ms of p50 at half load (BENCHMARKS.md).
        window: float = 0.020,
        on_batch: BatchHook | None = None,
        shared: bool = False,
    ) -> None:
        self.store = store
        self.shared = shared
        self.lock_waits = 0  # batches that found another process holding the write lock
        self.max_batch = max_batch
        self.window = window
        # The wait before a batch follows what the last commits took (moving
        # average): under load commits take longer (more records, the GIL
        # shared with a busy loop), so batches grow until they pay.
        self._commit_time = 0.0
        self.on_batch = on_batch
        self.announced = 0  # requests expected to write a record soon
        self._arrived = asyncio.Event()  # a record was queued
        # One thread: SQLite has one writer at a time anyway, the PostgreSQL store
        # one writing connection, and the order of batches is the order of commits.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._pending: list[tuple[BatchItem, asyncio.Future[Any]]] = []
        self.store_is_null = isinstance(store, NullAuditStore)
        self._flusher: asyncio.Task[None] | None = None

    def announce(self) -> Announcement:
        """Say a record is coming (call when a request starts); release it when written."""
        return Announcement(self)

    async def write(
        self, item: BatchItem, announcement: Announcement | None = None
    ) -> verification_pb2.VerifyResponse | None:
        if announcement is not None:
            announcement.release()
        if self.store_is_null:  # nothing to wait for: no thread hop, no batching
            return _answer(self.store.write_batch([item])[0])
        return await self._write(item)

    async def _write(self, item: BatchItem) -> verification_pb2.VerifyResponse | None:
        """Queue `item`; return once it is committed (its final response, if any).

        A caller that gives up waiting does not take its record back: what the
        hub decided is audited whether or not the answer was delivered.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._arrived.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        result: BatchResult = await asyncio.shield(future)
        return _answer(result)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                await self._gather(loop)
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                started = time.perf_counter()
                try:
                    results = await self._commit([item for item, _ in batch], loop)
                except Exception:
                    log.exception(
                        "audit batch of %d records failed; answering UNAVAILABLE", len(batch)
                    )
                    failure = ServiceError(
                        Reason.AUDIT_UNAVAILABLE, "the hub cannot record this verification; retry"
                    )
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                took = time.perf_counter() - started
                self._commit_time += (took - self._commit_time) / 8
                if self.on_batch is not None:
                    self.on_batch(len(batch), took)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._flusher = None

    async def _commit(
        self, items: list[BatchItem], loop: asyncio.AbstractEventLoop
    ) -> list[BatchResult]:
        """The batch, durably committed; where its statements run depends on the store."""
        if self.store.async_batches:
            # Each round trip waits on the network (PostgreSQL): the loop awaits them
            # (a few, in pipeline mode) and runs other requests meanwhile. A thread
            # would block instead, but would take the GIL back from the busy loop
            # after every one (measured: see BENCHMARKS.md).
            return await self.store.awrite_batch(items)
        # The statements run here, on the event loop (a few tens of µs a record in
        # SQLite); only the COMMIT, which waits for the disk, runs in the writer
        # thread. Handing every statement to a thread would make it fight the busy
        # loop for the GIL at each one: measured, that costs several times the
        # statements themselves.
        results = await self._stage(items, loop)
        try:
            await loop.run_in_executor(self._executor, self.store.commit)
        except BaseException:
            self.store.rollback()
            raise
        return results

    async def _stage(
        self, items: list[BatchItem], loop: asyncio.AbstractEventLoop
    ) -> list[BatchResult]:
        """stage_batch on the loop; if another process holds the write lock, wait for
        it in the writer thread (SQLite's busy handler sleeps there without the GIL)."""
        if not self.shared:
            return self.store.stage_batch(items)
        try:
            return self.store.stage_batch(items, wait=False)
        except StoreBusy:
            self.lock_waits += 1
        await loop.run_in_executor(self._executor, self.store.begin)
        return self.store.stage_batch(items)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let announced records join this batch, for about as long as a commit takes."""
        deadline = loop.time() + min(self.window, COMMITS_TO_WAIT * self._commit_time)
        while self.announced > 0 and len(self._pending) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the writer thread (it owns the writing connection)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Commit what is queued, then release the store."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self.shared:
            log.info("audit: %d batches waited for another process's write lock", self.lock_waits)
        self._executor.shutdown(wait=True)
        await self.store.aclose()


def _answer(result: BatchResult) -> verification_pb2.VerifyResponse | None:
    """A batch item's outcome for its caller: the response, or its error raised."""
    if isinstance(result, ServiceError):
        raise result
    return result
