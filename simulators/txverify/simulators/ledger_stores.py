"""open_ledger: the LedgerStore for a database URL.

Apart from ledger.py (the records and the interface) because the SQLite ledger
imports that interface: the factory in it made the two modules a cycle.
"""

from __future__ import annotations

from txverify.simulators.ledger import LedgerStore
from txverify.simulators.sqlite_ledger import SqliteLedger


def open_ledger(url: str) -> LedgerStore:
    """The ledger backend for a URL: `sqlite:///path/bank.sqlite` or `sqlite://` (memory)."""
    if url.startswith("sqlite://"):
        return SqliteLedger(url)
    raise ValueError(f"unsupported ledger URL {url!r}: use sqlite:///path or sqlite://")
