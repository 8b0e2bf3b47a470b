"""What every PostgreSQL connection of the hub shares: libpq settings it always asks for."""

from __future__ import annotations

from typing import Any

from psycopg import conninfo

CONNECT_TIMEOUT = 5  # seconds; libpq waits for ever otherwise


def connect_kwargs(url: str, **wanted: Any) -> dict[str, Any]:
    """libpq settings for a connection to `url`: a connect timeout and `wanted`
    (application_name, keepalives), each unless the URL says otherwise."""
    given = conninfo.conninfo_to_dict(url)
    wanted = {"connect_timeout": CONNECT_TIMEOUT, **wanted}
    return {k: v for k, v in wanted.items() if k not in given}
