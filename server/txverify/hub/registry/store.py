"""The member registry's storage: members, subscriptions and their history, behind one interface."""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

from txverify.hub.pg import CONNECT_TIMEOUT, connect_kwargs
from txverify.hub.registry import Member, MemberKind, MemberStatus, Role, Subscription
from txverify.hub.schema import REGISTRY, migrate_postgres, migrate_sqlite
from txverify.runtime.storage import (
    connect_sqlite,
    from_micros,
    is_postgres_url,
    to_micros,
    write_transaction,
)

# Every committed registry change is announced here (payload: the member's code),
# so each hub process re-reads the registry at once (server/txverify/hub/registry/watch.py).
CHANNEL = "txverify_registry"
# Saves on PostgreSQL take turns under this transaction-scoped advisory lock, so
# member_history ids are handed out in commit order (see Snapshot.last_change).
SAVE_LOCK = zlib.crc32(b"txverify:registry-save")


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a member's history."""

    code: str
    at: datetime
    actor: str
    action: str  # REGISTER, UPDATE, STATUS, SUBSCRIBE, UNSUBSCRIBE
    details: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The registry as one read saw it."""

    members: list[Member]
    # The newest member_history id the read saw (0: none). Ids are handed out in
    # commit order, so every change up to this one is in `members`.
    last_change: int


class RegistryStore(Protocol):
    """Durable members; the hub reads them all at start and writes each change."""

    @property
    def replicas(self) -> Replicas | None:
        """Where hub processes sharing this store say how far they follow it; None
        when they need not (SQLite)."""

    def load(self) -> Snapshot:
        """Every stored member, and the last change the read saw."""

    def load_all(self) -> list[Member]:
        """Every stored member."""

    def save(self, member: Member, change: Change) -> int:
        """Store the member as it now is, and the change that made it so, atomically;
        returns the change's id in the history."""

    def history(self, code: str) -> list[Change]:
        """The member's changes, oldest first."""

    def close(self) -> None:
        """Release the storage."""


def open_registry_store(url: str) -> RegistryStore:
    """The store for a URL: `sqlite:///path/hub.sqlite`, `sqlite://` (memory) or
    `postgresql://user@host:port/db` (also `postgres://`)."""
    if url.startswith("sqlite://"):
        return SqliteRegistryStore(url)
    if is_postgres_url(url):
        return PostgresRegistryStore(url)
    raise ValueError(
        f"unsupported registry URL {url!r}: use sqlite:///path, sqlite:// or postgresql://..."
    )


# One statement, so one snapshot: read in two, a change committed in between
# could pair a member with another version's subscriptions, or count a change in
# the last id that the members do not show yet. (No members, no rows: no history
# either, as every history entry names a member and members are never deleted.)
_LOAD_ALL = (
    "SELECT m.code, m.name, m.kind, m.issuer_endpoint, m.status, m.cert_identity, "
    "m.rate_limit_rps, m.rate_limit_burst, m.created_at, m.updated_at, "
    "s.service, s.role, s.since, (SELECT max(id) FROM member_history) "
    "FROM members m LEFT JOIN subscriptions s ON s.code = m.code "
    "ORDER BY m.code, s.{order}"
)
_HISTORY = "INSERT INTO member_history (code, at, actor, action, details) VALUES ({values})"
_UPSERT = (
    "INSERT INTO members (code, name, kind, issuer_endpoint, status, cert_identity, "
    "rate_limit_rps, rate_limit_burst, created_at, updated_at) VALUES ({values}) "
    "ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
    "issuer_endpoint = excluded.issuer_endpoint, status = excluded.status, "
    "cert_identity = excluded.cert_identity, rate_limit_rps = excluded.rate_limit_rps, "
    "rate_limit_burst = excluded.rate_limit_burst, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at"
)
_SQLITE = {
    "load_all": _LOAD_ALL.format(order="rowid"),
    "upsert": _UPSERT.format(values=", ".join("?" * 10)),
    "history": _HISTORY.format(values=", ".join("?" * 5)) + " RETURNING id",
}
_POSTGRES = {
    "load_all": _LOAD_ALL.format(order="id"),
    "upsert": _UPSERT.format(values=", ".join(["%s"] * 10)),
    "history": _HISTORY.format(values=", ".join(["%s"] * 5)) + " RETURNING id",
}


def _snapshot(rows: Iterable[tuple[Any, ...]]) -> Snapshot:
    """The registry from _LOAD_ALL's rows: one row per (member, subscription), ordered by code."""
    fields: dict[str, tuple[Any, ...]] = {}
    subs: dict[str, list[Subscription]] = {}
    last_change = 0
    for row in rows:
        fields.setdefault(row[0], row[:10])
        listed = subs.setdefault(row[0], [])
        if row[10] is not None:  # LEFT JOIN: a member without subscriptions
            listed.append(Subscription(row[10], Role(row[11]), from_micros(row[12])))
        last_change = row[13] or 0  # the same in every row
    members = [
        Member(
            code=code,
            name=row[1],
            kind=MemberKind(row[2]),
            issuer_endpoint=row[3],
            status=MemberStatus(row[4]),
            subscriptions=tuple(subs[code]),
            cert_identity=row[5],
            rate_limit_rps=row[6],
            rate_limit_burst=row[7],
            created_at=from_micros(row[8]),
            updated_at=from_micros(row[9]),
        )
        for code, row in fields.items()
    ]
    return Snapshot(members, last_change)


def _member_row(member: Member) -> tuple[Any, ...]:
    assert member.created_at is not None
    assert member.updated_at is not None
    return (
        member.code,
        member.name,
        member.kind.value,
        member.issuer_endpoint,
        member.status.value,
        member.cert_identity,
        member.rate_limit_rps,
        member.rate_limit_burst,
        to_micros(member.created_at),
        to_micros(member.updated_at),
    )


def _subscription_rows(member: Member) -> list[tuple[str, str, str, int]]:
    assert member.updated_at is not None
    return [
        (member.code, s.service, s.role.value, to_micros(s.since or member.updated_at))
        for s in member.subscriptions
    ]


class SqliteRegistryStore:
    """RegistryStore in SQLite (sqlite-utils connection, shared pragmas)."""

    def __init__(self, url: str) -> None:
        self.db = connect_sqlite(url)
        self._conn: sqlite3.Connection = self.db.conn
        # Workers on one file learn of each other's changes by re-reading it every
        # second; none waits for the others (see Replicas).
        self.replicas: Replicas | None = None
        migrate_sqlite(self._conn, "registry", REGISTRY)

    def load(self) -> Snapshot:
        return _snapshot(self._conn.execute(_SQLITE["load_all"]))

    def load_all(self) -> list[Member]:
        return self.load().members

    def save(self, member: Member, change: Change) -> int:
        # The write lock (BEGIN IMMEDIATE) orders saves: ids follow commit order.
        with write_transaction(self._conn) as conn:
            conn.execute(_SQLITE["upsert"], _member_row(member))
            conn.execute("DELETE FROM subscriptions WHERE code = ?", (member.code,))
            conn.executemany(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?)", _subscription_rows(member)
            )
            (change_id,) = conn.execute(
                _SQLITE["history"],
                (change.code, to_micros(change.at), change.actor, change.action, change.details),
            ).fetchone()
        return int(change_id)

    def history(self, code: str) -> list[Change]:
        return [
            Change(code, from_micros(at), actor, action, details)
            for at, actor, action, details in self._conn.execute(
                "SELECT at, actor, action, details FROM member_history WHERE code = ? ORDER BY id",
                (code,),
            )
        ]

    def close(self) -> None:
        self._conn.close()


class PostgresRegistryStore:
    """RegistryStore in PostgreSQL (psycopg 3, a small pool).

    Each save is one transaction that also NOTIFYs `CHANNEL` with the member's
    code; PostgreSQL delivers a notification only when its transaction commits,
    so listeners hear of durable changes only, and never of a failed one. Saves
    take turns (SAVE_LOCK), so history ids follow commit order: a read that sees
    a change sees every earlier one (Snapshot.last_change), whichever process
    made them. Operator changes are rare: the turns cost nothing.

    The pool (one connection kept; up to three for the watch's read in its
    thread, a wait for replicas in another and a write on the event loop at the
    same time) checks a connection before lending it, so the store recovers by
    itself after the database restarts.
    """

    def __init__(self, url: str) -> None:
        kwargs = connect_kwargs(url, application_name="txverify-hub")
        # Connecting once by hand first makes an unreachable database fail here with
        # libpq's own message, not a pool timeout; the migrations run on it.
        with psycopg.connect(url, autocommit=True, **kwargs) as conn:
            migrate_postgres(conn, "registry", REGISTRY)
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=3,
            kwargs={"autocommit": True, **kwargs},
            check=ConnectionPool.check_connection,
            # Writes run on the event loop (rare operator calls): with the database
            # down, one waits this long for a connection, not the pool's default 30 s.
            timeout=CONNECT_TIMEOUT,
            name="txverify-registry",
            open=False,
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        self.replicas: Replicas | None = Replicas(self._pool)

    def load(self) -> Snapshot:
        with self._pool.connection() as conn:
            return _snapshot(conn.execute(_POSTGRES["load_all"]))

    def load_all(self) -> list[Member]:
        return self.load().members

    def save(self, member: Member, change: Change) -> int:
        with self._pool.connection() as conn, conn.transaction():
            # Saves run on the event loop: a save stuck elsewhere holding the lock
            # fails this one after a while rather than freezing the process.
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{CONNECT_TIMEOUT}s",))
            # First: an id taken before the lock could commit after a later one.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SAVE_LOCK,))
            conn.execute(_POSTGRES["upsert"], _member_row(member))
            conn.execute("DELETE FROM subscriptions WHERE code = %s", (member.code,))
            with conn.cursor() as cursor:
                # The identity column numbers them in this order: load_all keeps it.
                cursor.executemany(
                    "INSERT INTO subscriptions (code, service, role, since) "
                    "VALUES (%s, %s, %s, %s)",
                    _subscription_rows(member),
                )
            row = conn.execute(
                _POSTGRES["history"],
                (change.code, to_micros(change.at), change.actor, change.action, change.details),
            ).fetchone()
            assert row is not None
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, member.code))
        return int(row[0])

    def history(self, code: str) -> list[Change]:
        with self._pool.connection() as conn:
            return [
                Change(code, from_micros(at), actor, action, details)
                for at, actor, action, details in conn.execute(
                    "SELECT at, actor, action, details FROM member_history "
                    "WHERE code = %s ORDER BY id",
                    (code,),
                )
            ]

    def close(self) -> None:
        self._pool.close()


class Replicas:
    """The hub processes following a registry on PostgreSQL, and how far each has
    applied it (table registry_replicas): so a change can be answered once every
    live one has it, and a client sent to any of them next sees it.

    Each process (server/txverify/hub/registry/watch.py) upserts its row after every re-read,
    which is also its heartbeat, and deletes it when it stops cleanly. One that
    dies leaves its row, which stops counting at its expires_at: the process
    sets that from its own re-read period, so processes with different periods
    judge each other rightly. Every time is the database's (now()), so the
    hosts' clocks do not matter.

    SQLite has none: its workers share a file and re-read it every second, and a
    row per worker would be one more writer on the lock the audit needs.
    """

    def __init__(self, pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]]) -> None:
        self._pool = pool

    def report(self, replica: str, applied: int, lease: float) -> None:
        """`replica` has applied every change up to `applied` (never moves back) and
        counts as alive for `lease` seconds more."""
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO registry_replicas AS r (replica, applied, expires_at) "
                "VALUES (%s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (replica) DO UPDATE SET "
                "applied = greatest(r.applied, excluded.applied), "
                "seen_at = excluded.seen_at, expires_at = excluded.expires_at",
                (replica, applied, lease),
            )

    def behind(self, change: int, excluding: str) -> dict[str, int]:
        """The live replicas but `excluding` that have not applied `change` yet, with
        the last change each has."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT replica, applied FROM registry_replicas "
                "WHERE applied < %s AND expires_at > now() AND replica <> %s ORDER BY replica",
                (change, excluding),
            )
            return {str(replica): int(applied) for replica, applied in rows}

    def sweep(self) -> int:
        """Remove the rows of processes that died (expired: no longer waited for);
        how many."""
        with self._pool.connection() as conn:
            return conn.execute("DELETE FROM registry_replicas WHERE expires_at < now()").rowcount

    def forget(self, replica: str) -> None:
        """`replica` stops following the registry: no change waits for it any more."""
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM registry_replicas WHERE replica = %s", (replica,))
