"""open_audit_store: the AuditStore for a database URL.

Apart from audit.py (the interface) because each store imports that interface:
the factory in it made audit.py, audit_sqlite.py and audit_postgres.py a cycle.
"""

from __future__ import annotations

from txverify.hub.audit import AuditStore
from txverify.hub.audit.sqlite import SqliteAuditStore
from txverify.runtime.storage import is_postgres_url


def open_audit_store(url: str, *, shared: bool = False) -> AuditStore:
    """The store for a URL: `sqlite:///path/hub.sqlite`, `sqlite://` (memory), or
    `postgresql://...` (also `postgres://`).

    shared: other processes (hub workers) write the same database (a PostgreSQL
    store is always ready for that)."""
    if url.startswith("sqlite://"):
        return SqliteAuditStore(url, shared=shared)
    if is_postgres_url(url):
        # Imported here: psycopg is loaded only by a hub on PostgreSQL.
        from txverify.hub.audit.postgres import PostgresAuditStore

        return PostgresAuditStore(url)
    raise ValueError(
        f"unsupported audit URL {url!r}: use sqlite:///path, sqlite:// or postgresql://..."
    )
