"""Durable SQLite commits without a thread: a helper process fsyncs the audit's WAL.

The hub commits audit batches on its event loop with synchronous=NORMAL: COMMIT
appends the batch to the write-ahead log (write() calls, tens of µs) and
returns without waiting for the disk. What makes the batch durable is an fsync
of the WAL file, and that wait must not block the loop. A thread could wait
for it, but after the fsync the thread needs the GIL back from a busy loop
to report (the "GIL ping-pong": measured, it cost the old writer thread more
CPU than its SQL and up to a switch interval, 5 ms, of latency each time).

So the wait happens in another process, which shares no GIL with the hub:
the loop writes one byte to the helper's pipe ("sync"), the helper
fdatasyncs the WAL and writes one byte back, and the loop reads it as any
other socket event (add_reader). An fsync makes durable everything written
to the file before it began, from any process, so one helper answer covers
every batch committed before the request; batches wait for the answer to
their own request, in order. The helper also checkpoints the WAL into the
database file in the background (PASSIVE: it never blocks a writer), so no
commit on the loop runs a checkpoint (the hub's writer connection has
wal_autocheckpoint=0).

What the fsync covers is what SQLite's synchronous=FULL would sync at each
commit in WAL mode: the WAL file (and, the first time it is opened, its
directory). The database file is synced by every checkpoint (NORMAL does that).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Done = Callable[[BaseException | None], None]  # called once the WAL is on disk (or not)
OK, FAILED = b"k", b"e"
# The helper, run by the same interpreter with -I (no site, no environment): only os
# and sqlite3. It answers one byte per request byte, in order, after one fdatasync
# for all the requests it read at once.
_HELPER = r"""
import os, sqlite3, sys, threading, time

wal, db, every = sys.argv[1], sys.argv[2], float(sys.argv[3])
fd, ino = -1, None

def wal_fd():
    global fd, ino
    try:
        st = os.stat(wal)
    except FileNotFoundError:
        return -1
    if st.st_ino != ino:
        if fd >= 0:
            os.close(fd)
        fd, ino = os.open(wal, os.O_RDONLY), st.st_ino
        d = os.open(os.path.dirname(wal) or ".", os.O_RDONLY)
        try:
            os.fsync(d)  # the WAL's directory entry, once per WAL file
        finally:
            os.close(d)
    return fd

def checkpoints():
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 0")
    while True:
        time.sleep(every)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # busy (another checkpoint) or not yet a WAL database: next time

threading.Thread(target=checkpoints, daemon=True).start()
while True:
    asked = os.read(0, 65536)
    if not asked:
        break
    answer = b"k"
    try:
        f = wal_fd()
        if f >= 0:
            os.fdatasync(f)
        else:  # no WAL (yet, or checkpointed away at a close): the database file
            f = os.open(db, os.O_RDONLY)
            try:
                os.fdatasync(f)
            finally:
                os.close(f)
    except OSError as exc:
        print(f"walsync: fdatasync {wal}: {exc}", file=sys.stderr, flush=True)
        answer = b"e"
    os.write(1, answer * len(asked))
"""
# How often the helper checkpoints the WAL into the database file.
CHECKPOINT_EVERY = 1.0


class WalSyncError(OSError):
    """The WAL could not be made durable (the disk failed the fsync, or the helper is gone)."""


class WalSyncer:
    """Asks the helper process to fsync `db`'s WAL; `sync(done)` calls done when it has."""

    def __init__(self, db: Path, *, checkpoint_every: float = CHECKPOINT_EVERY) -> None:
        self.db = db
        self.checkpoint_every = checkpoint_every
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: collections.deque[Done] = collections.deque()

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _HELPER, f"{self.db}-wal", str(self.db),
             str(self.checkpoint_every)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )  # fmt: skip
        assert self._proc.stdout is not None
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._loop.add_reader(self._proc.stdout.fileno(), self._answered)

    def sync(self, done: Done) -> None:
        """Make what was committed so far durable; `done(None)` once it is, on the loop."""
        if self._proc is None:
            self._start()
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._waiting.append(done)
        try:
            os.write(self._proc.stdin.fileno(), OK)
        except OSError as exc:
            self._gone(f"cannot reach the WAL sync helper: {exc}")

    def _answered(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        try:
            answers = os.read(self._proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._gone(f"WAL sync helper: {exc}")
            return
        if not answers:
            self._gone("the WAL sync helper exited")
            return
        waiting = self._waiting
        for answer in answers:
            done = waiting.popleft()
            done(None if answer == OK[0] else WalSyncError(f"fdatasync of {self.db}-wal failed"))

    def _gone(self, why: str) -> None:
        """The helper died: what waits is not known durable; the next sync starts a new one."""
        log.error("%s; %d commits fail, a new helper starts", why, len(self._waiting))
        proc = self._stop()
        if proc is not None:  # dead or of no use: reaped now (a kill takes µs)
            proc.kill()
            proc.wait()
        waiting, self._waiting = self._waiting, collections.deque()
        for done in waiting:
            done(WalSyncError(why))

    def _stop(self) -> subprocess.Popen[bytes] | None:
        proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None
            assert proc.stdout is not None
            assert self._loop is not None
            self._loop.remove_reader(proc.stdout.fileno())
            proc.stdin.close()
            proc.stdout.close()
        return proc

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def close(self) -> None:
        """Stop the helper (after every sync asked for has been answered)."""
        proc = self._stop()
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
