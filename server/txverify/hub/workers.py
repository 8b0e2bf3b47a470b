"""`txverify hub --workers N`: N hub processes on one port (SO_REUSEPORT) and one database.

The supervisor (this process) never creates a gRPC object. It prepares the
shared database (schema, members seeded from the file), reserves the port, and
only then forks the workers, each of which runs the ordinary hub
(`txverify.hub.app.serve`). gRPC's core state (its threads, pollers, connections)
does not survive a fork, so it must exist only in the children: importing
grpc here is harmless, creating a channel, a server or an event loop is not.

What the workers share: the port (the kernel spreads new connections over
them; a connection stays with one worker) and the database, a SQLite file or
PostgreSQL (audit, duplicate counts, idempotency, members). What each has
alone: rate-limit buckets, circuit breakers, issuer channels, metrics. A
worker that dies is restarted; one that dies `RESTARTS` times within
`RESTART_WINDOW` seconds stops the hub.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from txverify.hub.audit.stores import open_audit_store
from txverify.hub.membership import Membership
from txverify.hub.registry.store import open_registry_store
from txverify.hub.settings import HubSettings
from txverify.runtime.logs import FIELDS
from txverify.runtime.storage import sqlite_path

log = logging.getLogger(__name__)

RESTARTS = 5  # a worker slot that dies this often ...
RESTART_WINDOW = 60.0  # ... within this many seconds stops the hub
STARTUP_TIMEOUT = 60.0  # seconds for every worker to be listening
STOP_MARGIN = 10.0  # seconds beyond drain_delay + grace before a worker is killed
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


@dataclass
class _Worker:
    index: int
    pid: int
    ready_fd: int | None  # read end of the pipe the worker writes its port to once listening
    ready: bool = False


@dataclass
class _Slot:
    deaths: deque[float] = field(default_factory=deque)  # monotonic times of unexpected exits


def worker_settings(
    settings: HubSettings, index: int, port: int, db: str, json_port: int | None = None
) -> HubSettings:
    """What worker `index` runs: the shared ports (gRPC, and the JSON API's) and database;
    metrics on port + index.

    The members are not seeded again: the supervisor did it once, before forking.
    """
    metrics = settings.metrics_port
    return dataclasses.replace(
        settings,
        port=port,
        json_port=json_port,
        db=db,
        shared=True,
        members=(),
        members_file=None,
        metrics_port=metrics + index if metrics else metrics,  # 0 (any port) stays 0
    )


def prepare_database(settings: HubSettings) -> None:
    """Create the schema and seed the members once, before any worker exists, so N
    processes never bootstrap at the same time. Every connection is closed again
    (and a PostgreSQL pool's threads stopped): neither may cross a fork.

    On PostgreSQL other hubs may be using the database already: the bootstrap
    then works from fresh reads, as theirs do (Membership.shared)."""
    store = open_registry_store(settings.db)
    try:
        Membership(store, shared=settings.postgres).bootstrap(settings.bootstrap_members())
    finally:
        store.close()
    if settings.audit:
        open_audit_store(settings.db, shared=True).close()


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket on host:port (port 0: a free one).

    The workers bind the same port beside it; holding it until they have keeps
    the port from being taken in between. A probe without SO_REUSEPORT first
    makes sure nobody listens there already: sharing must never be by accident.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(
                f"cannot listen on {host}:{port}: is it in use? ({exc.strerror})"
            ) from None
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class _WorkerTag(logging.Filter):
    """Adds `worker=N` to every log line of a worker process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, FIELDS, {"worker": self.index, **(getattr(record, FIELDS, None) or {})})
        return True


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM (and drains) if the supervisor dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    """Forks the workers, restarts the ones that die, forwards SIGTERM/SIGINT, reaps."""

    def __init__(
        self,
        settings: HubSettings,
        workers: int,
        on_ready: Callable[[int, int | None], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if settings.metrics_port and settings.metrics_port + workers - 1 > 65535:
            raise ValueError(f"metrics ports {settings.metrics_port}+0..{workers - 1} exceed 65535")
        self.settings = settings
        self.count = workers
        self.on_ready = on_ready
        self.workers: dict[int, _Worker] = {}  # pid -> worker
        self.slots = [_Slot() for _ in range(workers)]
        self.port = 0
        self.json_port: int | None = None  # the JSON API's shared port, when it is served
        self.db = settings.db
        self.ok = True
        self.listening = False
        self.stopping = False
        self.stop_deadline = 0.0
        self._tmp: str | None = None
        self._reserved: socket.socket | None = None
        self._json_reserved: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[int, int] | None = None
        self._handlers: dict[int, Any] = {}  # the signal handlers to put back at the end
        self._parent = os.getpid()
        self.started_at = time.monotonic()

    def run(self) -> int:
        """Run until the workers are all stopped; 0 if they all drained and exited 0."""
        try:
            self._start()
            self._loop()
        finally:
            self._cleanup()
        return 0 if self.ok else 1

    # -- start-up ---------------------------------------------------------------------

    def _start(self) -> None:
        self._reserved = reserve_port(self.settings.host, self.settings.port)
        self.port = self._reserved.getsockname()[1]
        if self.settings.json_port is not None:
            self._json_reserved = reserve_port(self.settings.host, self.settings.json_port)
            self.json_port = self._json_reserved.getsockname()[1]
        if not self.settings.postgres and sqlite_path(self.settings.db) is None:
            # One temporary database for all workers (removed at exit), not one each.
            self._tmp = tempfile.mkdtemp(prefix="txverify-hub-")
            self.db = f"sqlite:///{self._tmp}/hub.sqlite"
            log.info("hub workers share the temporary database %s", self.db)
        prepare_database(dataclasses.replace(self.settings, db=self.db))
        self._selector = selectors.DefaultSelector()
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)
        self._selector.register(read_end, selectors.EVENT_READ)
        # Signals only write their number to the pipe; the loop below acts on them.
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
            self._handlers[sig] = signal.signal(sig, _ignore)
        for index in range(self.count):
            self._spawn(index)
        self.started_at = time.monotonic()

    def _spawn(self, index: int) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            self._child(index, write_end)
        os.close(write_end)
        assert self._selector is not None
        self._selector.register(read_end, selectors.EVENT_READ)
        self.workers[pid] = _Worker(index, pid, read_end)
        log.info("hub worker %d started (pid %d)", index, pid)

    def _child(self, index: int, ready_fd: int) -> NoReturn:
        """The worker process: the ordinary hub on the shared port and database."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            self._close_inherited()
            _die_with_parent()
            if os.getppid() != self._parent:  # the supervisor died before prctl
                os._exit(1)
            for handler in logging.getLogger().handlers:
                handler.addFilter(_WorkerTag(index))
            code = _run_worker(
                worker_settings(self.settings, index, self.port, self.db, self.json_port), ready_fd
            )
        except BaseException:
            log.exception("hub worker %d failed", index)
        finally:
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            os._exit(code)  # never the supervisor's exit path (its temp files, handlers)

    def _close_inherited(self) -> None:
        for reserved in (self._reserved, self._json_reserved):
            if reserved is not None:
                reserved.close()
        if self._selector is not None:
            self._selector.close()
        for fd in (*(self._wake or ()), *(w.ready_fd for w in self.workers.values())):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._selector is not None
        assert self._wake is not None
        while self.workers:
            for key, _ in self._selector.select(timeout=0.5):
                fd = key.fd
                if fd == self._wake[0]:
                    self._signals()
                else:
                    self._ready(fd)
            self._reap()
            self._check_time()

    def _signals(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(self._wake[0], 256):
                if signum in _STOP_SIGNALS:
                    self._stop(signal.Signals(signum))

    def _ready(self, fd: int) -> None:
        worker = next((w for w in self.workers.values() if w.ready_fd == fd), None)
        data = b""
        with contextlib.suppress(BlockingIOError):
            data = os.read(fd, 64)
        if worker is None or not data:  # EOF: the worker closed its end (or exited)
            self._forget_fd(fd, worker)
            return
        port = int(data.split()[0])
        if port != self.port:
            log.error("hub worker %d listens on port %d, not %d", worker.index, port, self.port)
            self.ok = False
            self._stop(signal.SIGTERM)
        worker.ready = True
        self._forget_fd(fd, worker)
        if self.listening:
            log.warning("hub worker %d (pid %d) is listening again", worker.index, worker.pid)
        elif all(w.ready for w in self.workers.values()) and len(self.workers) == self.count:
            self._all_listening()

    def _forget_fd(self, fd: int, worker: _Worker | None) -> None:
        assert self._selector is not None
        self._selector.unregister(fd)
        os.close(fd)
        if worker is not None:
            worker.ready_fd = None

    def _all_listening(self) -> None:
        self.listening = True
        for reserved in (self._reserved, self._json_reserved):  # every worker holds them now
            if reserved is not None:
                reserved.close()
        self._reserved = self._json_reserved = None
        log.info(
            "hub listening on %s:%d with %d workers (pids %s)",
            self.settings.host,
            self.port,
            self.count,
            ", ".join(str(pid) for pid in sorted(self.workers)),
        )
        if self.on_ready is not None and not self.stopping:
            self.on_ready(self.port, self.json_port)

    def _reap(self) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    self._exited(self.workers.pop(pid), os.waitstatus_to_exitcode(status))

    def _exited(self, worker: _Worker, code: int) -> None:
        if worker.ready_fd is not None:
            self._forget_fd(worker.ready_fd, worker)
        what = f"hub worker {worker.index} (pid {worker.pid})"
        if self.stopping:
            # Killed by the forwarded signal before it could handle it: it was not
            # serving yet, so nothing was lost.
            stopped_early = not worker.ready and -code in _STOP_SIGNALS
            if code == 0 or stopped_early:
                log.info("%s stopped", what)
            else:
                log.error("%s stopped with exit code %d", what, code)
                self.ok = False
            return
        if not self.listening:
            log.error("%s exited during start-up (code %d); stopping the hub", what, code)
            self.ok = False
            self._stop(signal.SIGTERM)
            return
        deaths = self.slots[worker.index].deaths
        now = time.monotonic()
        deaths.append(now)
        while deaths and deaths[0] < now - RESTART_WINDOW:
            deaths.popleft()
        if len(deaths) >= RESTARTS:
            log.error(
                "%s DIED (exit code %d), %d times in %.0fs: stopping the hub",
                what,
                code,
                len(deaths),
                RESTART_WINDOW,
            )
            self.ok = False
            self._stop(signal.SIGTERM)
            return
        log.error("%s DIED unexpectedly (exit code %d); starting a new one", what, code)
        self._spawn(worker.index)

    def _stop(self, sig: signal.Signals) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = (
                time.monotonic() + self.settings.drain_delay + self.settings.grace + STOP_MARGIN
            )
            log.info("hub stopping (%s): draining %d workers", sig.name, len(self.workers))
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _check_time(self) -> None:
        now = time.monotonic()
        if self.stopping and now > self.stop_deadline:
            for worker in self.workers.values():
                log.error(
                    "hub worker %d (pid %d) did not stop; killing it", worker.index, worker.pid
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            self.ok = False
            self.stop_deadline = float("inf")
        elif not self.listening and not self.stopping and now > self.started_at + STARTUP_TIMEOUT:
            log.error("hub workers not listening after %.0fs; stopping", STARTUP_TIMEOUT)
            self.ok = False
            self._stop(signal.SIGTERM)

    def _cleanup(self) -> None:
        if self._wake is not None:
            signal.set_wakeup_fd(-1)
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self._selector is not None:
            self._selector.close()
        for reserved in (self._reserved, self._json_reserved):
            if reserved is not None:
                reserved.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _ignore(signum: int, frame: object) -> None:
    """A handler is needed for the wake-up pipe to hear the signal; the loop acts on it."""


def _run_worker(settings: HubSettings, ready_fd: int) -> int:
    """In the forked child: the first gRPC objects of this process are made here."""
    from txverify.hub.app import RunningHub, run, serve

    def ready(hub: RunningHub) -> None:
        os.write(ready_fd, f"{hub.port}\n".encode())
        os.close(ready_fd)

    run(serve(settings, ready), event_loop=settings.event_loop)
    return 0


def run_workers(
    settings: HubSettings,
    workers: int,
    on_ready: Callable[[int, int | None], None] | None = None,
) -> int:
    """Run the hub as `workers` processes; on_ready(port, json_port) once all listen.
    Returns the exit code."""
    return Supervisor(settings, workers, on_ready).run()
