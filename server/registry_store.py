"""The member registry's storage: members, subscriptions and their history, behind one interface."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.registry import Member, MemberKind, MemberStatus, Role, Subscription
from server.schema import REGISTRY, migrate_sqlite
from txverify.storage import connect_sqlite, from_micros, to_micros, write_transaction


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a member's history."""

    code: str
    at: datetime
    actor: str
    action: str  # REGISTER, UPDATE, STATUS, SUBSCRIBE, UNSUBSCRIBE
    details: str


class RegistryStore(Protocol):
    """Durable members; the hub reads them all at start and writes each change."""

    def load_all(self) -> list[Member]:
        """Every stored member."""

    def save(self, member: Member, change: Change) -> None:
        """Store the member as it now is, and the change that made it so, atomically."""

    def history(self, code: str) -> list[Change]:
        """The member's changes, oldest first."""

    def close(self) -> None:
        """Release the storage."""


def open_registry_store(url: str) -> RegistryStore:
    """The store for a URL: `sqlite:///path/hub.sqlite` or `sqlite://` (memory)."""
    if url.startswith("sqlite://"):
        return SqliteRegistryStore(url)
    raise ValueError(f"unsupported registry URL {url!r}: use sqlite:///path or sqlite://")


class SqliteRegistryStore:
    """RegistryStore in SQLite (sqlite-utils connection, shared pragmas)."""

    def __init__(self, url: str) -> None:
        self.db = connect_sqlite(url)
        self._conn: sqlite3.Connection = self.db.conn
        migrate_sqlite(self._conn, "registry", REGISTRY)

    def load_all(self) -> list[Member]:
        subs: dict[str, list[Subscription]] = {}
        for code, service, role, since in self._conn.execute(
            "SELECT code, service, role, since FROM subscriptions ORDER BY rowid"
        ):
            subs.setdefault(code, []).append(Subscription(service, Role(role), from_micros(since)))
        return [
            Member(
                code=row[0],
                name=row[1],
                kind=MemberKind(row[2]),
                issuer_endpoint=row[3],
                status=MemberStatus(row[4]),
                subscriptions=tuple(subs.get(row[0], ())),
                cert_identity=row[5],
                rate_limit_rps=row[6],
                rate_limit_burst=row[7],
                created_at=from_micros(row[8]),
                updated_at=from_micros(row[9]),
            )
            for row in self._conn.execute(
                "SELECT code, name, kind, issuer_endpoint, status, cert_identity, "
                "rate_limit_rps, rate_limit_burst, created_at, updated_at "
                "FROM members ORDER BY code"
            )
        ]

    def save(self, member: Member, change: Change) -> None:
        assert member.created_at is not None
        assert member.updated_at is not None
        with write_transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO members VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
                "issuer_endpoint = excluded.issuer_endpoint, status = excluded.status, "
                "cert_identity = excluded.cert_identity, rate_limit_rps = excluded.rate_limit_rps, "
                "rate_limit_burst = excluded.rate_limit_burst, created_at = excluded.created_at, "
                "updated_at = excluded.updated_at",
                (
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
                ),
            )
            conn.execute("DELETE FROM subscriptions WHERE code = ?", (member.code,))
            conn.executemany(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?)",
                [
                    (member.code, s.service, s.role.value, to_micros(s.since or member.updated_at))
                    for s in member.subscriptions
                ],
            )
            conn.execute(
                "INSERT INTO member_history (code, at, actor, action, details) "
                "VALUES (?, ?, ?, ?, ?)",
                (change.code, to_micros(change.at), change.actor, change.action, change.details),
            )

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
