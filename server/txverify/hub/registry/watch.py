"""Keeps a hub process's member directory in step with changes other hub processes make."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg
from psycopg import sql

from txverify.hub.membership import Membership
from txverify.hub.pg import connect_kwargs
from txverify.hub.registry import Member
from txverify.hub.registry.store import CHANNEL

log = logging.getLogger(__name__)
T = TypeVar("T")

# Reconnecting the listener: the first retry soon (a restarted database is back
# in a second or two), then doubling up to a cap, so a long outage costs a
# connection attempt every few seconds per hub process, not a storm.
FIRST_RETRY = 0.1
LAST_RETRY = 5.0
# TCP keepalive on the listening connection: it only ever reads, so without
# keepalive a peer that vanished without a FIN (a cable, a failover) would
# leave it waiting for ever. With these, about 20 s of silence ends it.
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
}
TAKE_ATTEMPTS = 3  # reads that lost a race with a change made here, before waiting for the next
# A process that reports how far it applied the registry (with each re-read) is
# waited for until this long after its last report: three of its re-read periods
# and a margin, so one slow or failed read does not drop it, and one that died
# (SIGKILL, a lost host) stops delaying changes within seconds.
LEASE_PERIODS = 3
LEASE_MARGIN = 1.0
FORGET_TIMEOUT = 2.0  # seconds a clean stop spends removing its row, the database down
STOP_TIMEOUT = 2.0  # seconds stop() waits for each cancellation of the follow/listen tasks


class RegistryWatch:
    """Re-reads the registry when told a change happened, and at least every `every`
    seconds whatever it hears.

    listen_url (PostgreSQL): a connection of its own LISTENs on `CHANNEL`; every
    notification (sent by each committed save, in any process) wakes a re-read,
    so a change reaches this process in milliseconds. If the connection drops,
    it reconnects with backoff and re-reads once listening again (what it
    missed). The periodic re-read is the safety net for the time in between, a
    connection that died silently, and a change written without NOTIFY.

    offload: reads run in a thread of their own, so a slow or unreachable
    database delays the re-read, never the event loop (Verify only ever reads
    the directory in memory). SQLite files (hub workers) are read on the loop,
    as a local read takes microseconds and their connection is not to be
    shared between threads.

    Where the store keeps replicas (PostgreSQL), the process reports after each
    re-read how far its directory goes (and that it is alive), in the same
    thread, so a change made elsewhere can wait until this process has it
    (Membership.wait_applied); `start` reports before the process answers
    anything, `stop` removes the report.
    """

    def __init__(
        self,
        membership: Membership,
        *,
        every: float,
        listen_url: str | None = None,
        offload: bool = False,
    ) -> None:
        self.membership = membership
        self.every = every
        self.listen_url = listen_url
        self.listener_pid: int | None = None  # the LISTEN backend, while listening
        self.replicas = membership.store.replicas
        self.lease = LEASE_PERIODS * every + LEASE_MARGIN
        self._listened = False  # the current connection got as far as LISTEN
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._reader = (
            ThreadPoolExecutor(1, thread_name_prefix="registry-read") if offload else None
        )

    def start(self) -> None:
        """Follow changes from now on. With replicas, first joins them, on the loop:
        call it before the process answers anything (see `_join`)."""
        if self.replicas is not None:
            self._join()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow(), name="registry-refresh"))
        if self.listen_url is not None:
            self._tasks.append(loop.create_task(self._listen(), name="registry-listen"))

    async def stop(self) -> None:
        # psycopg may turn a cancellation that lands inside a connect or a query into a
        # psycopg.Error, which the listen loop takes for a lost connection and retries:
        # the flag ends the loops, and the wait is bounded (a CI run hung here 60 s).
        self._stopping = True
        pending = set(self._tasks)
        for _ in range(2):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_TIMEOUT)
        if pending:
            log.warning(
                "registry watch tasks did not stop: %s", sorted(t.get_name() for t in pending)
            )
        self._tasks.clear()
        if self.replicas is not None:
            # In the reader thread, after a report it may still be making.
            forget = functools.partial(self.replicas.forget, self.membership.replica)
            try:
                await asyncio.wait_for(self._offloaded(forget), FORGET_TIMEOUT)
            except Exception as error:  # its row expires by itself
                log.warning("could not remove this process from registry_replicas: %r", error)
        if self._reader is not None:
            # A read still running ends on its own (and fails once the store is closed).
            self._reader.shutdown(wait=False, cancel_futures=True)

    def _join(self) -> None:
        """Report first (changes from now on wait for this process), then re-read (so
        it has every change before): no change is answered between the directory
        read at start and this process being waited for. Blocks the loop for two
        short statements and a read, once, while the hub starts."""
        assert self.replicas is not None
        try:
            self.replicas.report(self.membership.replica, self.membership.applied, self.lease)
            self.membership.refresh()
            self.replicas.report(self.membership.replica, self.membership.applied, self.lease)
            gone = self.replicas.sweep()  # else each process that ever died stays listed
        except Exception:
            log.exception("joining the registry's replicas failed; the next re-read tries again")
        else:
            log.info(
                "following the registry as replica %s (at change %d; %d expired replicas removed)",
                self.membership.replica,
                self.membership.applied,
                gone,
            )

    async def _offloaded(self, call: Callable[[], T]) -> T:
        """`call()` in the reader thread, or here when reads run on the loop."""
        if self._reader is None:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self._reader, call)

    def poke(self) -> None:
        """Re-read soon: something changed."""
        self._wake.set()

    async def refresh(self) -> list[Member]:
        """Re-read the registry now; the members that changed."""
        for _ in range(TAKE_ATTEMPTS):
            version = self.membership.version
            snapshot = await self._offloaded(self.membership.store.load)
            changed = self.membership.take(snapshot, version)
            if changed is not None:
                if self.replicas is not None:
                    await self._offloaded(
                        functools.partial(
                            self.replicas.report,
                            self.membership.replica,
                            self.membership.applied,
                            self.lease,
                        )
                    )
                return changed
        return []  # changes here keep coming: the next wake or period reads again

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every)
            self._wake.clear()  # before reading: a change told during the read wakes again
            try:
                await self.refresh()
            except Exception:
                if self._stopping:
                    return
                log.exception("re-reading the member registry failed; trying again")

    async def _listen(self) -> None:
        assert self.listen_url is not None
        retry = FIRST_RETRY
        while True:
            self._listened = False
            try:
                await self._listen_once(self.listen_url)
            except (psycopg.Error, OSError) as error:
                if self._stopping:  # a cancellation psycopg reported as an error
                    return
                if self._listened:
                    retry = FIRST_RETRY  # it worked until now: try again at once
                text = str(error).strip()
                log.warning(
                    "registry listener %s (%s); reconnecting in %.1fs, re-reading every %.1fs "
                    "meanwhile",
                    "lost its connection" if self._listened else "cannot connect",
                    text.splitlines()[0] if text else type(error).__name__,
                    retry,
                    self.every,
                )
                await asyncio.sleep(retry)
                retry = min(retry * 2, LAST_RETRY)

    async def _listen_once(self, url: str) -> None:
        kwargs = connect_kwargs(url, application_name="txverify-hub-listener", **KEEPALIVE)
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, **kwargs)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            self._listened = True
            self.listener_pid = conn.info.backend_pid
            log.info("registry listener on channel %s (backend %d)", CHANNEL, self.listener_pid)
            self.poke()  # what changed while not listening
            # aclosing: the generator holds the connection's lock until it is closed.
            async with contextlib.aclosing(conn.notifies()) as notifies:
                async for _ in notifies:
                    self.poke()
        finally:
            self.listener_pid = None
            await conn.close()
