"""Storage URLs (SQLite and PostgreSQL) and the one place SQLite connection pragmas are set."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

# WAL: readers never block the writer and a commit is one sequential append.
# foreign_keys: SQLite leaves them off unless asked.
# synchronous=NORMAL is durable across process crashes in WAL mode; only an
# OS crash or power loss can lose the last commits, acceptable for these stores.
SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
)
# busy_timeout: a second process (a CLI, a test, another hub worker) that finds
# the write lock taken waits for it this long instead of failing at once.
BUSY_TIMEOUT_MS = 5000
MEMORY_URL = "sqlite://"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    """Whether `url` names a PostgreSQL database (postgresql://... or postgres://...)."""
    return url.startswith(POSTGRES_SCHEMES)


def sqlite_path(url: str) -> Path | None:
    """`sqlite:///abs/path` or `sqlite://rel/path` -> the path; `sqlite://` -> None (in memory)."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r} (use sqlite:///path/to/file or sqlite://)")
    rest = url.removeprefix("sqlite://")
    if rest in ("", ":memory:"):
        return None
    return Path(rest)


def connect_sqlite(
    url: str, *, fsync_each_commit: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> sqlite_utils.Database:
    """Open a SQLite database from its URL with the project's pragmas.

    The connection may be used from another thread than the one that made it
    (one thread at a time): asyncio servers hand work to executors.
    fsync_each_commit (synchronous=FULL) makes every commit survive power
    loss, not only a crash of the process; stores that promise durability
    before answering (the audit log) ask for it and batch commits to pay it
    rarely. busy_timeout_ms 0 makes a taken lock fail at once (SQLITE_BUSY):
    for a caller that must not block where it runs and waits elsewhere instead.
    """
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        ":memory:" if path is None else str(path),
        check_same_thread=False,
        isolation_level=None,  # autocommit; transactions are explicit BEGIN ... COMMIT
    )
    set_busy_timeout(conn, busy_timeout_ms)  # first: setting WAL may wait for the lock
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    if fsync_each_commit:
        conn.execute("PRAGMA synchronous = FULL")
    return sqlite_utils.Database(conn)


def set_busy_timeout(conn: sqlite3.Connection, milliseconds: int) -> None:
    """Change how long this connection waits for a lock another connection holds."""
    conn.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(when: datetime) -> int:
    """An aware datetime -> integer µs since the epoch, UTC: exact and sortable in any database."""
    delta = when.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Integer µs since the epoch -> an aware datetime in UTC."""
    return _EPOCH + timedelta(microseconds=micros)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

    IMMEDIATE takes the write lock up front: what the transaction reads
    (a balance, a counter) cannot be changed by another writer before it commits.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
