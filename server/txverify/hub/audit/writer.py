"""Group commit: Verify answers wait until their audit record is durable, sharing commits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from txverify.errors import Reason, ServiceError
from txverify.hub.audit import AuditStore, BatchItem, BatchResult, NullAuditStore, StoreBusy
from txverify.v1 import verification_pb2

log = logging.getLogger(__name__)
BatchHook = Callable[[int, float], None]  # (records in the batch, seconds until durable)
Waiting = list[tuple[BatchItem, "asyncio.Future[BatchResult]"]]


class AuditWriter:
    """Writes audit records in batches; each caller awaits the moment its record is durable.

    Group commit: one batch at a time is on its way to the disk, and the
    records that arrive meanwhile make the next batch, written as soon as that
    one is durable. Nothing waits on purpose: a lone request is written at
    once. (M10's writer also waited, up to three commit times, for requests
    still on their way: bigger batches at full load, fewer fsyncs, but
    milliseconds added at half load. M11 measured waiting only while 16 or
    more requests were in the hub: it seldom triggered under the bench's
    closed loop and saved no CPU that the rounds' spread could show, so it
    went: BENCHMARKS.md.)

    SQLite: the batch's statements run on the event loop (a few tens of µs a
    record: handing each to a thread would make it fight the busy loop for the
    GIL at every one), and its COMMIT, which writes the pages to the WAL and
    fsyncs it without the GIL, in the writer thread: one hand-over each way per
    batch. (A COMMIT on the loop, its fsync in a helper process, was tried:
    the loop then wrote the pages itself, ~50 µs a record, and throughput fell
    by half: BENCHMARKS.md.)
    shared: other processes (hub workers) write the same database; when one of
    them holds the write lock the loop does not wait for it: the thread does,
    and the loop stages the batch once the lock is held.

    PostgreSQL (`async_batches`): the loop awaits the batch's round trip.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        max_batch: int = 1024,
        on_batch: BatchHook | None = None,
        shared: bool = False,
    ) -> None:
        self.store = store
        self.shared = shared
        self.lock_waits = 0  # batches that found another process holding the write lock
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.store_is_null = isinstance(store, NullAuditStore)
        self._pending: Waiting = []
        self._busy = False  # a batch is on its way to the disk; the next one waits
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()  # PostgreSQL batches, lock waits
        # One thread: the durable COMMITs (and waits for another process's write lock).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")

    async def write(self, item: BatchItem) -> verification_pb2.VerifyResponse | None:
        """`item`'s result once it is durable: its final response (None for a failure's entry).

        A caller that gives up waiting does not take its record back: what the
        hub decided is audited whether or not the answer was delivered.
        """
        if self.store_is_null:  # nothing to wait for: no batching
            return _answer(self.store.write_batch([item])[0])
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchResult] = loop.create_future()
        self._pending.append((item, future))
        if not self._busy:
            self._busy = True
            self._idle.clear()
            # At the end of this turn of the loop: the records that other requests
            # write in the same turn join this batch.
            loop.call_soon(self._next_batch)
        return _answer(await future)

    # -- one batch ---------------------------------------------------------------------

    def _next_batch(self) -> None:
        if not self._pending:
            self._busy = False
            self._idle.set()
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        started = time.perf_counter()
        items = [item for item, _ in batch]
        if self.store.async_batches:
            self._spawn(self._remote(batch, items, started))
            return
        try:
            results = self.store.stage_batch(items, wait=not self.shared)
        except StoreBusy:
            self.lock_waits += 1
            self._spawn(self._after_lock(batch, items, started))
            return
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._commit(batch, results, started)

    def _commit(self, batch: Waiting, results: list[BatchResult], started: float) -> None:
        """The durable COMMIT in the writer thread; the batch is answered when it returns."""

        def committed(outcome: asyncio.Future[None]) -> None:
            error = outcome.exception()
            if error is not None:
                self.store.rollback()
                self._failed(batch, error)
            else:
                self._done(batch, results, started)

        loop = asyncio.get_running_loop()
        loop.run_in_executor(self._executor, self.store.commit).add_done_callback(committed)

    async def _after_lock(self, batch: Waiting, items: list[BatchItem], started: float) -> None:
        """Another process held the write lock: wait for it in a thread, then stage."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.store.begin)
            results = self.store.stage_batch(items)
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._commit(batch, results, started)

    async def _remote(self, batch: Waiting, items: list[BatchItem], started: float) -> None:
        try:
            results = await self.store.awrite_batch(items)
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._done(batch, results, started)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _done(self, batch: Waiting, results: list[BatchResult], started: float) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - started)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a caller that gave up has cancelled its future
                future.set_result(result)
        self._next_batch()

    def _failed(self, batch: Waiting, exc: BaseException) -> None:
        log.error(
            "audit batch of %d records failed; answering UNAVAILABLE: %r",
            len(batch), exc, exc_info=exc,
        )  # fmt: skip
        failure = ServiceError(
            Reason.AUDIT_UNAVAILABLE, "the hub cannot record this verification; retry"
        )
        for _, future in batch:
            if not future.done():
                future.set_exception(failure)
        self._next_batch()

    async def close(self) -> None:
        """Write what is queued, then release the store."""
        await self._idle.wait()
        if self.shared:
            log.info("audit: %d batches waited for another process's write lock", self.lock_waits)
        self._executor.shutdown(wait=True)
        await self.store.aclose()


def _answer(result: BatchResult) -> verification_pb2.VerifyResponse | None:
    """A batch item's outcome for its caller: the response, or its error raised."""
    if isinstance(result, ServiceError):
        raise result
    return result
