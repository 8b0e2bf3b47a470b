"""The hub's database schemas, for every backend, in one place, and the migrations that apply them.

A store names its component ("registry", "audit") and calls `migrate_sqlite`
or `migrate_postgres` when it opens a database: the migrations not yet recorded
in `schema_migrations` run, in order, each in its own transaction with its
record. A new schema change is a new Migration at the end of a tuple here,
with the statements for both backends; released ones are never edited.

Times are integer µs since the epoch, UTC, in both backends (exact, sortable,
and the same numbers whichever database holds them).
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from txverify.runtime.storage import write_transaction

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sqlite: str
    postgres: str


REGISTRY: tuple[Migration, ...] = (
    Migration(
        1,
        "members, their subscriptions and history",
        sqlite="""
CREATE TABLE IF NOT EXISTS members (
    code             TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('BANK', 'NON_BANK')),
    issuer_endpoint  TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED', 'TERMINATED')),
    cert_identity    TEXT NOT NULL,
    rate_limit_rps   REAL NOT NULL,
    rate_limit_burst INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,   -- µs since the epoch, UTC
    updated_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    code    TEXT NOT NULL REFERENCES members (code),
    service TEXT NOT NULL,
    role    TEXT NOT NULL CHECK (role IN ('REQUESTER', 'ISSUER')),
    since   INTEGER NOT NULL,
    PRIMARY KEY (code, service, role)
);
CREATE TABLE IF NOT EXISTS member_history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    code    TEXT NOT NULL REFERENCES members (code),
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS member_history_code ON member_history (code, id);
""",
        postgres="""
CREATE TABLE members (
    code             TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('BANK', 'NON_BANK')),
    issuer_endpoint  TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED', 'TERMINATED')),
    cert_identity    TEXT NOT NULL,
    rate_limit_rps   DOUBLE PRECISION NOT NULL,
    rate_limit_burst INTEGER NOT NULL,
    created_at       BIGINT NOT NULL,   -- µs since the epoch, UTC
    updated_at       BIGINT NOT NULL
);
CREATE TABLE subscriptions (
    id      BIGINT GENERATED ALWAYS AS IDENTITY,  -- keeps the order they were given in
    code    TEXT NOT NULL REFERENCES members (code),
    service TEXT NOT NULL,
    role    TEXT NOT NULL CHECK (role IN ('REQUESTER', 'ISSUER')),
    since   BIGINT NOT NULL,
    PRIMARY KEY (code, service, role)
);
CREATE TABLE member_history (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code    TEXT NOT NULL REFERENCES members (code),
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX member_history_code ON member_history (code, id);
""",
    ),
    Migration(
        2,
        "hub processes following the registry, and how far each has applied it",
        # SQLite: nothing. Its workers share a file and re-read it every second;
        # a row per worker would be one more write to the lock the audit needs.
        sqlite="\n-- nothing on SQLite: see Replicas in server/txverify/hub/registry/store.py\n",
        postgres="""
CREATE TABLE registry_replicas (
    replica    TEXT PRIMARY KEY,         -- host:pid:random, one per hub process
    applied    BIGINT NOT NULL,          -- member_history ids up to this one are in its directory
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL      -- gone (not waited for) after this, unless seen again
);
""",
    ),
)

AUDIT: tuple[Migration, ...] = (
    Migration(
        1,
        "audit records, slip uses (global and per scope), remembered answers",
        sqlite="""
CREATE TABLE IF NOT EXISTS audit (
    id                  INTEGER PRIMARY KEY,  -- no AUTOINCREMENT: append-only; it cost a write
    at                  INTEGER NOT NULL,            -- µs since the epoch, UTC
    request_id          TEXT NOT NULL,
    requester           TEXT NOT NULL,
    requester_reference TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    trans_ref           TEXT NOT NULL,
    status              TEXT NOT NULL,
    reason              TEXT NOT NULL,
    verdict             INTEGER NOT NULL,
    latency_us          INTEGER NOT NULL,
    replayed            INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_requester ON audit (requester, at);
CREATE INDEX IF NOT EXISTS audit_trans_ref ON audit (trans_ref);
CREATE INDEX IF NOT EXISTS audit_request_id ON audit (request_id);
CREATE TABLE IF NOT EXISTS slip_uses (
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    first_at     INTEGER NOT NULL,
    first_by     TEXT NOT NULL,
    uses         INTEGER NOT NULL,
    PRIMARY KEY (sending_bank, trans_ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slip_scope_uses (
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    member       TEXT NOT NULL,
    reference    TEXT NOT NULL,
    first_at     INTEGER NOT NULL,
    uses         INTEGER NOT NULL,
    PRIMARY KEY (sending_bank, trans_ref, member, reference)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS remembered_answers (
    member       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    at           INTEGER NOT NULL,
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    response     BLOB NOT NULL,
    PRIMARY KEY (member, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS remembered_at ON remembered_answers (at);
""",
        postgres="""
CREATE TABLE audit (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                  BIGINT NOT NULL,            -- µs since the epoch, UTC
    request_id          TEXT NOT NULL,
    requester           TEXT NOT NULL,
    requester_reference TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    trans_ref           TEXT NOT NULL,
    status              TEXT NOT NULL,
    reason              TEXT NOT NULL,
    verdict             INTEGER NOT NULL,
    latency_us          BIGINT NOT NULL,
    replayed            INTEGER NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_requester ON audit (requester, at);
CREATE INDEX audit_trans_ref ON audit (trans_ref);
CREATE INDEX audit_request_id ON audit (request_id);
CREATE TABLE slip_uses (
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    first_at     BIGINT NOT NULL,
    first_by     TEXT NOT NULL,
    uses         BIGINT NOT NULL,
    PRIMARY KEY (sending_bank, trans_ref)
);
CREATE TABLE slip_scope_uses (
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    member       TEXT NOT NULL,
    reference    TEXT NOT NULL,
    first_at     BIGINT NOT NULL,
    uses         BIGINT NOT NULL,
    PRIMARY KEY (sending_bank, trans_ref, member, reference)
);
CREATE TABLE remembered_answers (
    member       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    at           BIGINT NOT NULL,
    sending_bank TEXT NOT NULL,
    trans_ref    TEXT NOT NULL,
    response     BYTEA NOT NULL,
    PRIMARY KEY (member, request_id)
);
CREATE INDEX remembered_at ON remembered_answers (at);
""",
    ),
    Migration(
        2,
        "the W3C trace id of each audited Verify",
        # A constant default: SQLite writes nothing to existing rows, and PostgreSQL
        # (11+) only records the default, so neither rewrites the table. No index:
        # the audit is not queried by trace id, and every index costs each insert.
        sqlite="ALTER TABLE audit ADD COLUMN trace_id TEXT NOT NULL DEFAULT ''",
        postgres="ALTER TABLE audit ADD COLUMN trace_id TEXT NOT NULL DEFAULT ''",
    ),
)

_LEDGER = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,  -- UTC
    PRIMARY KEY (component, version)
)""",
    "postgres": """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)""",
}


def sqlite_script(migrations: Sequence[Migration]) -> str:
    """Every SQLite statement of `migrations`, as one script (for tools that fill a database)."""
    return "".join(m.sqlite for m in migrations)


def _pending(done: set[int], migrations: Sequence[Migration], component: str) -> list[Migration]:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{component} migrations must be numbered 1, 2, ... in order")
    if done - set(versions):
        newer = max(done - set(versions))
        raise RuntimeError(
            f"the database's {component} schema is at version {newer}, newer than this "
            f"txverify knows ({len(versions)}): upgrade txverify"
        )
    return [m for m in migrations if m.version not in done]


def migrate_sqlite(
    conn: sqlite3.Connection, component: str, migrations: Sequence[Migration]
) -> None:
    """Apply to a SQLite connection the migrations of `component` it has not recorded."""
    conn.execute(_LEDGER["sqlite"])
    done = {
        v for (v,) in conn.execute(
            "SELECT version FROM schema_migrations WHERE component = ?", (component,)
        )
    }  # fmt: skip
    for migration in _pending(done, migrations, component):
        with write_transaction(conn):
            # executescript would COMMIT first; one statement at a time stays inside.
            for statement in _statements(migration.sqlite):
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO schema_migrations (component, version) VALUES (?, ?)",
                (component, migration.version),
            )


def migrate_postgres(
    conn: psycopg.Connection[tuple[object, ...]], component: str, migrations: Sequence[Migration]
) -> None:
    """Apply to a PostgreSQL connection the migrations of `component` it has not recorded.

    Replicas starting together take turns: each migration runs under a
    transaction-scoped advisory lock and re-reads what is applied first.
    """
    lock = zlib.crc32(f"txverify:{component}".encode())
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        conn.execute(_LEDGER["postgres"])
        done = {
            int(str(row[0]))
            for row in conn.execute(
                "SELECT version FROM schema_migrations WHERE component = %s", (component,)
            )
        }
        for migration in _pending(done, migrations, component):
            for statement in _statements(migration.postgres):
                conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO schema_migrations (component, version) VALUES (%s, %s)",
                (component, migration.version),
            )


def _statements(script: str) -> list[str]:
    """The statements of a script of plain DDL (no semicolons inside strings or bodies)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
