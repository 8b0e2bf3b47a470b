"""Fill, fast, the databases that bench/growth_bench.py measures, and cache them.

- A hub database (server/txverify/hub/schema.py: the audit's and the registry's tables) with N audit
  rows and the matching slip_uses, slip_scope_uses and remembered_answers rows:
  one successful verification per row, each of a distinct slip, by a few
  requesters, spread over the 24 hours before the fill (inside the hub's
  idempotency window), each remembering the bytes of one real VerifyResponse.
- A simulated bank's ledger (simulators/txverify/simulators/sqlite_ledger.py SCHEMA) for bank 014
  with N transactions over the last six days (all within the bank's retention),
  made from templates the simulator's own seeding draws.

Rows go in time order, as the hub and the bank write them, into tables whose
indexes already exist (so every index has the page fill that random inserts
give it in production, not the packed pages of an index built afterwards), in
big transactions with `synchronous=OFF` and no rollback journal; the file is
switched to WAL at the end, as the hub and the bank open it.

Each database is cached as FILE plus FILE.json (how it was made); a cache whose
schema or fill version differs, or a ledger older than MAX_LEDGER_AGE, is made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from txverify import miniqr  # noqa: E402
from txverify.hub import schema as hub_schema  # noqa: E402
from txverify.hub.checks import evaluate, verdict  # noqa: E402
from txverify.runtime.storage import to_micros  # noqa: E402
from txverify.simulators import sqlite_ledger  # noqa: E402
from txverify.simulators.issuer import masked_transaction  # noqa: E402
from txverify.simulators.ledger import LedgerTransaction, PartyRecord, ProxyKind  # noqa: E402
from txverify.simulators.profiles import profile  # noqa: E402
from txverify.simulators.seed import ACCOUNTS_PER_BANK, _history, seed_accounts  # noqa: E402
from txverify.v1 import verification_pb2  # noqa: E402

FILL_VERSION = 1  # bump when what the filler writes changes: caches are then made again
LEDGER_BANK = "014"
LEDGER_FILE = (
    f"bank-{LEDGER_BANK}.sqlite"  # txverify.simulators.server.SimulatorSettings.ledger_url
)
MAX_LEDGER_AGE = timedelta(days=2)  # slips are 0-6 days old at fill; retention is 7 days
CHUNK = 100_000  # rows a transaction
# Requesters and issuers of the filled verifications (weights: a few big requesters).
REQUESTERS = ("002", "004", "006", "014", "025", "900")
REQUESTER_WEIGHTS = (30, 25, 15, 15, 10, 5)
ISSUERS = ("002", "004", "006", "014", "025")
BULK_PRAGMAS = (
    "PRAGMA journal_mode = OFF",
    "PRAGMA synchronous = OFF",
    "PRAGMA cache_size = -4000000",  # 4 GB: the indexes being filled stay in memory
    "PRAGMA temp_store = MEMORY",
)

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class FillInfo:
    """How a cached database was made (stored beside it as JSON)."""

    kind: str  # "hub" or "ledger"
    rows: int
    created_at: str  # ISO 8601, UTC
    fill_seconds: float
    size_bytes: int
    schema_sha: str
    version: int = FILL_VERSION
    response_bytes: int = 0  # hub: size of the remembered VerifyResponse


def _sha(*texts: str) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


HUB_SCHEMA_SHA = _sha(
    hub_schema.sqlite_script(hub_schema.AUDIT), hub_schema.sqlite_script(hub_schema.REGISTRY)
)
LEDGER_SCHEMA_SHA = _sha(sqlite_ledger.SCHEMA)


# --- random text, fast --------------------------------------------------------------------


def _table(alphabet: str) -> bytes:
    """bytes.translate table mapping every byte to a character of `alphabet` (slight bias)."""
    return "".join(alphabet[i % len(alphabet)] for i in range(256)).encode()


_DIGITS = _table(string.digits)
_ALNUM = _table(string.ascii_letters + string.digits)
_UPPER_DIGITS = _table(string.ascii_uppercase + string.digits)


def _random_text(rng: random.Random, table: bytes, count: int, width: int) -> list[str]:
    """`count` random strings of `width` characters over the table's alphabet."""
    text = rng.randbytes(count * width).translate(table).decode()
    return [text[i : i + width] for i in range(0, count * width, width)]


_BANGKOK = timedelta(hours=7)


def _prefixes(code: str, micros: int) -> str:
    """The date part of a transRef of `code`'s style (txverify.simulators.profiles), at `micros`."""
    local = datetime(1970, 1, 1) + timedelta(microseconds=micros) + _BANGKOK
    if code == "002":  # BBL, 18: yymmdd + 12 upper/digits
        return local.strftime("%y%m%d")
    if code == "004":  # KBANK, 20: yy + day of year + time + BTF + 6 digits
        return local.strftime("%y%j%H%M%S") + "BTF"
    if code == "006":  # KTB, 22: yymmddHHMMSS + 10 digits
        return local.strftime("%y%m%d%H%M%S")
    if code == "014":  # SCB, 25: yyyymmdd + 3 digits + 14 mixed case
        return local.strftime("%Y%m%d")
    return "BAY" + local.strftime("%y%m%d")  # BAY, 20: BAY + yymmdd + 11 digits


# (table, width) of the random part of each style's transRef.
_SUFFIXES: dict[str, tuple[bytes, int]] = {
    "002": (_UPPER_DIGITS, 12),
    "004": (_DIGITS, 6),
    "006": (_DIGITS, 10),
    "014": (_ALNUM, 17),  # 3 digits (branch) + 14 mixed: mixed throughout, same length
    "025": (_DIGITS, 11),
}


# --- the hub database ---------------------------------------------------------------------


def sample_response() -> verification_pb2.VerifyResponse:
    """One real VerifyResponse as the hub remembers it: a masked transaction from the
    simulator's seeding, an amount expectation checked, the status check, duplicate info."""
    rng = random.Random(7)
    member = profile("014")
    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    accounts = seed_accounts(rng, member, ACCOUNTS_PER_BANK, now)
    tx = LedgerTransaction(
        trans_ref=member.ref_style(rng, now),
        sending_bank="014",
        receiving_bank="004",
        trans_time=now,
        sender=PartyRecord(
            accounts[0].name_th, accounts[0].name_en, "014", accounts[0].account_number
        ),
        receiver=PartyRecord(
            "สุดา รักไทย", "SUDA RAKTHAI", "004", "", ProxyKind.MSISDN, "0812345678"
        ),
        amount=4_524_809,
        fee=0,
    )
    transaction = masked_transaction(tx)
    expect = verification_pb2.Expectations(
        amount=verification_pb2.AmountExpectation(equals_satang=tx.amount), receiving_bank="004"
    )
    checks = evaluate(expect, transaction)
    response = verification_pb2.VerifyResponse(
        transaction=transaction,
        request_id="pos-7f3a9c2e4b1d4e8f9a6b5c4d3e2f1a0b",
        checks=checks,
        verdict=verdict(checks, 0),
    )
    response.duplicate.previous_count = 0
    return response


def _hub_chunks(rows: int, now_us: int, seed: int) -> Iterator[list[tuple[Any, ...]]]:
    """Verifications in time order, CHUNK at a time, each
    (at, request_id, requester, reference, issuer, trans_ref, latency_us)."""
    rng = random.Random(seed)
    span = 24 * 3600 * 1_000_000 - 60_000_000  # the 24 h before the fill, less a minute
    start = now_us - span - 30_000_000
    seen: set[tuple[str, str]] = set()
    done = 0
    while done < rows:
        count = min(CHUNK, rows - done)
        ats = [start + (done + i) * span // max(rows, 1) for i in range(count)]
        issuers = rng.choices(ISSUERS, k=count)
        requesters = rng.choices(REQUESTERS, weights=REQUESTER_WEIGHTS, k=count)
        request_ids = rng.randbytes(16 * count).hex()
        suffixes = {
            code: _random_text(rng, table, count, width)
            for code, (table, width) in _SUFFIXES.items()
        }
        # The date/time part changes slowly: one per chunk and bank (a chunk spans minutes).
        prefixes = {code: _prefixes(code, ats[0]) for code in ISSUERS}
        out: list[tuple[Any, ...]] = []
        for i in range(count):
            issuer = issuers[i]
            ref = prefixes[issuer] + suffixes[issuer][i]
            if (issuer, ref) in seen:  # a collision of random parts: skip it, made up below
                continue
            seen.add((issuer, ref))
            reference = f"pos-{rng.randrange(1, 500)}" if i % 5 == 0 else ""
            out.append(
                (ats[i], request_ids[32 * i : 32 * i + 32], requesters[i], reference,
                 issuer, ref, 3000 + (ats[i] % 17_000))
            )  # fmt: skip
        done += len(out)
        yield out


def fill_hub(path: Path, rows: int, *, seed: int = 1, progress: Progress = _stderr) -> FillInfo:
    """Make a hub database with `rows` verifications at `path` (replaced)."""
    started = time.perf_counter()
    tmp = path.with_name(path.name + ".filling")
    for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        stale.unlink(missing_ok=True)
    blob = sample_response().SerializeToString()
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    for pragma in BULK_PRAGMAS:
        conn.execute(pragma)
    hub_schema.migrate_sqlite(conn, "registry", hub_schema.REGISTRY)
    hub_schema.migrate_sqlite(conn, "audit", hub_schema.AUDIT)
    now_us = to_micros(datetime.now(UTC))
    valid = verification_pb2.VERDICT_VALID
    done = 0
    for chunk in _hub_chunks(rows, now_us, seed):
        # Each chunk's keys in order: neighbouring inserts touch neighbouring pages (faster),
        # while across chunks the keys still land all over each tree, as in production.
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO audit (at, request_id, requester, requester_reference, issuer, "
            "trans_ref, status, reason, verdict, latency_us, replayed) "
            "VALUES (?, ?, ?, ?, ?, ?, 'OK', '', ?, ?, 0)",
            [(at, rid, req, ref, iss, tr, valid, lat) for at, rid, req, ref, iss, tr, lat in chunk],
        )
        conn.executemany(
            "INSERT INTO slip_uses VALUES (?, ?, ?, ?, 1)",
            sorted((iss, tr, at, req) for at, _, req, _, iss, tr, _ in chunk),
        )
        conn.executemany(
            "INSERT INTO slip_scope_uses VALUES (?, ?, ?, ?, ?, 1)",
            sorted((iss, tr, req, ref, at) for at, _, req, ref, iss, tr, _ in chunk),
        )
        conn.executemany(
            "INSERT INTO remembered_answers VALUES (?, ?, ?, ?, ?, ?)",
            sorted((req, rid, at, iss, tr, blob) for at, rid, req, _, iss, tr, _ in chunk),
        )
        conn.execute("COMMIT")
        done += len(chunk)
        elapsed = time.perf_counter() - started
        progress(
            f"  hub fill: {done:>10,}/{rows:,} rows  {elapsed:6.1f} s  "
            f"{done / elapsed if elapsed else 0:,.0f} rows/s"
        )
    return _finish(conn, tmp, path, "hub", rows, started, HUB_SCHEMA_SHA, len(blob))


# --- the ledger ---------------------------------------------------------------------------


def fill_ledger(path: Path, rows: int, *, seed: int = 1, progress: Progress = _stderr) -> FillInfo:
    """Make bank 014's ledger with `rows` transactions at `path` (replaced)."""
    started = time.perf_counter()
    tmp = path.with_name(path.name + ".filling")
    for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        stale.unlink(missing_ok=True)
    member = profile(LEDGER_BANK)
    rng = random.Random(f"{seed}:{LEDGER_BANK}")
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    accounts = seed_accounts(rng, member, ACCOUNTS_PER_BANK, anchor)
    # Templates drawn as the simulator seeds (names, proxies, bill payments, reversals, fees);
    # each row takes one and gets its own transRef, time and amount.
    templates = [
        sqlite_ledger._tx_row(tx)
        for tx in (_history(rng, member, accounts, anchor, i) for i in range(2000))
    ]
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    for pragma in BULK_PRAGMAS:
        conn.execute(pragma)
    conn.executescript(sqlite_ledger.SCHEMA)
    conn.execute("BEGIN")
    for a in accounts:
        conn.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
            (a.account_number, a.name_th, a.name_en, a.balance, to_micros(a.opened_at)),
        )
        conn.executemany(
            "INSERT INTO proxies VALUES (?, ?, ?)",
            [(p.kind.value, p.value, a.account_number) for p in a.proxies],
        )
    conn.execute("COMMIT")
    span = 6 * 24 * 3600 * 1_000_000  # six days back from five minutes ago
    end = to_micros(anchor) - 5 * 60 * 1_000_000
    start = end - span
    columns = f"{sqlite_ledger._TX_COLUMNS}, from_account, credit_account"
    insert_tx = f"INSERT INTO transactions ({columns}) VALUES ({', '.join('?' * 24)})"
    seen: set[str] = set()
    done = 0
    while done < rows:
        count = min(CHUNK, rows - done)
        times = [start + (done + i) * span // max(rows, 1) for i in range(count)]
        times = [t - t % 1_000_000 for t in times]  # whole seconds, as the seeding has them
        suffixes = _random_text(rng, _ALNUM, count, 17)
        picks = rng.choices(templates, k=count)
        amounts = [rng.randrange(100, 5_000_000) for _ in range(count)]
        tx_rows: list[tuple[Any, ...]] = []
        slips: list[tuple[str, str]] = []
        day_prefix: dict[int, str] = {}
        for i in range(count):
            day = (times[i] + 7 * 3600 * 1_000_000) // 86_400_000_000
            prefix = day_prefix.get(day)
            if prefix is None:
                prefix = day_prefix[day] = _prefixes(LEDGER_BANK, times[i])
            ref = prefix + suffixes[i]
            if ref in seen:
                continue
            seen.add(ref)
            t = picks[i]
            tx_rows.append((ref, t[1], t[2], times[i], *t[4:14], amounts[i], *t[15:], None, None))
            slips.append((ref, miniqr.build(LEDGER_BANK, ref)))
        conn.execute("BEGIN")
        conn.executemany(insert_tx, tx_rows)
        conn.executemany("INSERT INTO slips VALUES (?, ?)", slips)
        conn.execute("COMMIT")
        done += len(tx_rows)
        elapsed = time.perf_counter() - started
        progress(f"  ledger fill: {done:>10,}/{rows:,} transactions  {elapsed:6.1f} s")
    return _finish(conn, tmp, path, "ledger", rows, started, LEDGER_SCHEMA_SHA)


# --- both ---------------------------------------------------------------------------------


def _finish(
    conn: sqlite3.Connection,
    tmp: Path,
    path: Path,
    kind: str,
    rows: int,
    started: float,
    schema_sha: str,
    response_bytes: int = 0,
) -> FillInfo:
    """WAL (as the hub and the bank open it), durable, then renamed into place with its info."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    for leftover in (Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(tmp, path)
    info = FillInfo(
        kind=kind,
        rows=rows,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fill_seconds=round(time.perf_counter() - started, 1),
        size_bytes=path.stat().st_size,
        schema_sha=schema_sha,
        response_bytes=response_bytes,
    )
    _info_path(path).write_text(json.dumps(asdict(info), indent=2))
    return info


def _info_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _cached(path: Path, kind: str, rows: int, schema_sha: str) -> FillInfo | None:
    try:
        info = FillInfo(**json.loads(_info_path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if (
        not path.exists()
        or info.kind != kind
        or info.rows != rows
        or info.schema_sha != schema_sha
        or info.version != FILL_VERSION
    ):
        return None
    if kind == "ledger":
        age = datetime.now(UTC) - datetime.fromisoformat(info.created_at)
        if age > MAX_LEDGER_AGE:
            return None
    return info


def hub_db(cache: Path, rows: int, *, progress: Progress = _stderr) -> tuple[Path, FillInfo, bool]:
    """The cached hub database of `rows` verifications, made if needed: (path, info, reused)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"hub-{rows}.sqlite"
    info = _cached(path, "hub", rows, HUB_SCHEMA_SHA)
    if info is not None:
        return path, info, True
    progress(f"filling a hub database with {rows:,} verifications into {path}")
    return path, fill_hub(path, rows, progress=progress), False


def ledger_dir(
    cache: Path, rows: int, *, progress: Progress = _stderr
) -> tuple[Path, FillInfo, bool]:
    """A cached data directory holding bank 014's ledger of `rows` transactions (for
    `txverify banks --data DIR`), made if needed: (directory, info, reused)."""
    directory = cache / f"ledger-{rows}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LEDGER_FILE
    info = _cached(path, "ledger", rows, LEDGER_SCHEMA_SHA)
    if info is not None:
        return directory, info, True
    progress(f"filling bank {LEDGER_BANK}'s ledger with {rows:,} transactions into {path}")
    return directory, fill_ledger(path, rows, progress=progress), False


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Make (or reuse) the growth benchmark's databases."
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/txverify-bench-cache"))
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    for what in (hub_db(args.cache, args.rows), ledger_dir(args.cache, args.ledger_rows)):
        print(what[0], asdict(what[1]), "reused" if what[2] else "made")
