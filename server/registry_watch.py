"""Keeps a hub process's member directory in step with changes other hub processes make."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from server.membership import Membership
from server.registry import Member
from server.registry_store import CHANNEL, connect_kwargs

log = logging.getLogger(__name__)

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
        self._listened = False  # the current connection got as far as LISTEN
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reader = (
            ThreadPoolExecutor(1, thread_name_prefix="registry-read") if offload else None
        )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow(), name="registry-refresh"))
        if self.listen_url is not None:
            self._tasks.append(loop.create_task(self._listen(), name="registry-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._reader is not None:
            # A read still running ends on its own (and fails once the store is closed).
            self._reader.shutdown(wait=False, cancel_futures=True)

    def poke(self) -> None:
        """Re-read soon: something changed."""
        self._wake.set()

    async def refresh(self) -> list[Member]:
        """Re-read the registry now; the members that changed."""
        if self._reader is None:
            return self.membership.refresh()
        loop = asyncio.get_running_loop()
        for _ in range(TAKE_ATTEMPTS):
            version = self.membership.version
            stored = await loop.run_in_executor(self._reader, self.membership.store.load_all)
            changed = self.membership.take(stored, version)
            if changed is not None:
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
                log.exception("re-reading the member registry failed; trying again")

    async def _listen(self) -> None:
        assert self.listen_url is not None
        retry = FIRST_RETRY
        while True:
            self._listened = False
            try:
                await self._listen_once(self.listen_url)
            except (psycopg.Error, OSError) as error:
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
