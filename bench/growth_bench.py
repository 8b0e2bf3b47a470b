"""Benchmark: do per-request costs stay flat as the databases grow?

    python bench/growth_bench.py [--seconds 5] [--rounds 2] [--rows 5000000]
                                 [--ledger-rows 1000000] [--cache DIR] [--json FILE]
                                 [--only audit|ledger]

(A) The hub's audit and duplicate tables: the same closed-loop load of
    verifications (each with its own request id, over thousands of distinct
    valid slips) against a hub started on an empty database and on one holding
    --rows verifications (audit, slip_uses, slip_scope_uses, remembered_answers
    rows; bench/growth_fill.py makes it, once, and caches it in --cache), a fresh
    hub process and a fresh copy of the database each run, alternating
    empty/full; --concurrency (32) verifications in flight. Before that, the
    hub's own AuditStore writes the same kind of batches in-process into copies
    of both databases, every SQL statement timed and its query plan taken: if
    the end-to-end cost grows, this names the statement that grows and shows why
    (a SCAN where a SEARCH was meant), and times it rewritten to use the index.
(B) The issuer inquiry: a simulated bank (bank 014, fresh process each run) on a
    ledger of 1,000 and of --ledger-rows transactions, IssuerInquiry straight
    to its issuer port, transRefs drawn at random from the whole ledger, closed
    loop at --ledger-concurrency (8) and at 1 (pure latency). Twice: the bank as
    shipped ("cache": its 20,000-entry LRU of transactions and masked answers
    holds all of a 1,000-row ledger, so there the figure is the cache's), and
    with those caches sized 0 ("nocache": every inquiry reads the ledger and
    masks, so the figure is the ledger lookup's at both sizes).

Printed: a table per part, then the ratios big/small (medians over rounds);
--json writes every figure with the machine's description. On 2 cores the load
generator, the banks and the server share the cores: CPU seconds per 1,000
requests of the server process (from /proc) is the figure that does not depend
on that; throughput and latency are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

import grpc  # noqa: E402

from bank_bench import BANK as INQUIRY_BANK  # noqa: E402
from bank_bench import _run_clients  # noqa: E402
from growth_fill import LEDGER_BANK, FillInfo, hub_db, ledger_dir, sample_response  # noqa: E402
from hub_bench import BANKS, _ready  # noqa: E402
from txverify.cli.faultlab.processes import cpu_seconds  # noqa: E402
from txverify.cli.network import cli_argv  # noqa: E402
from txverify.hub.audit import AuditEntry, BatchItem, SlipUse, Verified  # noqa: E402
from txverify.hub.audit.sqlite import SqliteAuditStore  # noqa: E402
from txverify.runtime.storage import to_micros  # noqa: E402
from txverify.v1 import (  # noqa: E402
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

assert INQUIRY_BANK == LEDGER_BANK, "bank_bench's load asks the bank whose ledger is filled"
SMALL_LEDGER = 1_000


# --- machine and tree -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What ran the benchmark: cores, CPU model, memory, versions, the tree's state."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    git: dict[str, Any] = {}
    try:
        git["head"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        git["modified"] = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split("\n")  # fmt: skip
        git["modified"] = [line.strip() for line in git["modified"] if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "git": git,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _files_size(path: Path) -> int:
    """The database with its WAL (what it occupies on disk)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _remove_db(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)


def fresh_copy(source: Path, dest: Path) -> float:
    """Copy a cached database for one run (the hub writes to it); flushed to disk first so
    that write-back of the copy does not compete with the run's fsyncs. Returns seconds."""
    started = time.perf_counter()
    _remove_db(dest)
    shutil.copyfile(source, dest)
    with dest.open("rb+") as f:
        os.fsync(f.fileno())
    os.sync()
    return time.perf_counter() - started


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --- (A) the hub's statements, in-process ---------------------------------------------------

_VALUES_LIST = re.compile(r"\(\?(?:, \?)*\)(?:, \(\?(?:, \?)*\))*")


def _statement_key(sql: str) -> str:
    """One name per statement shape: whitespace folded, VALUES lists of any length as (...)."""
    return _VALUES_LIST.sub("(...)", " ".join(sql.split()))


def index_friendly(sql: str) -> str | None:
    """`... IN (VALUES (?, ?), ...)` as `... IN (SELECT * FROM (VALUES (?, ?), ...))`, or None.

    SQLite (3.40 here) evaluates a row value IN a bare VALUES list by scanning the
    table and probing the list; IN a subquery over the same VALUES it searches the
    table's primary key once per listed row. Same rows, same parameters.
    """
    start = sql.find("IN (VALUES ")
    if start < 0:
        return None
    open_at = start + 3
    depth = 0
    for i in range(open_at, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        if depth == 0:
            inner = sql[open_at + 1 : i]  # "VALUES (...), ..."
            return f"{sql[:open_at]}(SELECT * FROM ({inner})){sql[i + 1 :]}"
    return None


def _timed_rows(conn: sqlite3.Connection, sql: str, params: Any) -> tuple[float, list[Any]]:
    """Best of three: seconds to run `sql` and fetch all its rows."""
    best, rows = float("inf"), []
    for _ in range(3):
        started = time.perf_counter()
        rows = conn.execute(sql, params).fetchall()
        best = min(best, time.perf_counter() - started)
    return best, rows


def scans_a_table(plan: Sequence[str]) -> bool:
    """Whether a query plan reads a whole table: a SCAN of something other than a list of
    constants, a subquery, or a co-routine / materialized view the plan itself builds."""
    built = {
        step.split()[1]
        for step in plan
        if step.startswith(("CO-ROUTINE ", "MATERIALIZE ")) and len(step.split()) > 1
    }
    for step in plan:
        if not step.startswith("SCAN ") or "CONSTANT ROWS" in step or "(subquery" in step:
            continue
        if step.split()[1] not in built:
            return True
    return False


class _Rows:
    """A fully fetched result (so that a statement's time includes all of its stepping)."""

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows


@dataclass
class StatementStats:
    sql: str
    calls: int = 0
    seconds: float = 0.0
    plan: list[str] = field(default_factory=list)
    sample: tuple[str, Any] = ("", ())  # the first call's SQL text and parameters


class TimedConnection:
    """Stands in for a store's sqlite3.Connection: times every statement (fetching all its
    rows) and takes each statement's query plan the first time it is seen."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.stats: dict[str, StatementStats] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _stats(self, sql: str, params: Any) -> StatementStats:
        key = _statement_key(sql)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = StatementStats(key, sample=(sql, params))
            verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if verb in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "REPLACE"):
                try:
                    stats.plan = [
                        str(r[3]) for r in self._conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)
                    ]
                except sqlite3.Error as exc:
                    stats.plan = [f"(no plan: {exc})"]
        return stats

    def execute(self, sql: str, params: Any = ()) -> _Rows:
        stats = self._stats(sql, params)
        started = time.perf_counter()
        cursor = self._conn.execute(sql, params)
        rows = cursor.fetchall()
        stats.seconds += time.perf_counter() - started
        stats.calls += 1
        return _Rows(rows, cursor.rowcount, cursor.lastrowid)

    def executemany(self, sql: str, seq: Any) -> _Rows:
        seq = list(seq)
        stats = self._stats(sql, seq[0] if seq else ())
        started = time.perf_counter()
        cursor = self._conn.executemany(sql, seq)
        rows = cursor.fetchall()
        stats.seconds += time.perf_counter() - started
        stats.calls += 1
        return _Rows(rows, cursor.rowcount, cursor.lastrowid)


@dataclass
class StatementProfile:
    db: str
    rows: int
    batches: int
    batch_size: int
    seconds_per_batch: float
    remembered_us_per_lookup: float
    statements: list[dict[str, Any]]
    fixes: list[dict[str, Any]]


def _batch(index: int, size: int, response: verification_pb2.VerifyResponse) -> list[BatchItem]:
    """One batch as the router hands it over: new slips, named requests, a few requesters."""
    now = datetime.now(UTC)
    items = []
    for k in range(size):
        member = ("002", "004", "006", "014")[k % 4]
        trans_ref = f"20261127000X{index:07d}Y{k:05d}"  # a new slip
        request_id = uuid.uuid4().hex
        use = SlipUse("014", trans_ref, member, "")
        entry = AuditEntry(
            at=now, request_id=request_id, requester=member, requester_reference="",
            issuer="014", trans_ref=trans_ref, status="OK", verdict=1, latency_us=5000,
        )  # fmt: skip
        items.append(BatchItem(entry, Verified(use, lambda _counts: response)))
    return items


def profile_statements(
    label: str, rows: int, source: Path, work: Path, args: argparse.Namespace
) -> StatementProfile:
    """The hub's AuditStore (txverify.hub.audit, as it is in this tree) writing batches into a
    copy of `source`: seconds per batch and per statement, and every statement's plan."""
    dest = work / f"statements-{label}.sqlite"
    fresh_copy(source, dest)
    store = SqliteAuditStore(f"sqlite:///{dest}")
    timed: list[TimedConnection] = []
    for name, value in list(vars(store).items()):
        if isinstance(value, sqlite3.Connection):
            proxy = TimedConnection(value)
            setattr(store, name, proxy)
            timed.append(proxy)
    response = sample_response()
    since = datetime.now(UTC) - timedelta(hours=24)
    fixes: list[dict[str, Any]] = []
    batches = lookups = 0
    lookup_seconds = batch_seconds = 0.0
    deadline = time.perf_counter() + args.seconds
    try:
        while batches < 3 or (batches < 300 and time.perf_counter() < deadline):
            items = _batch(batches, args.concurrency, response)
            started = time.perf_counter()
            for item in items:  # the router's idempotency look-up, one per named request
                store.remembered(item.entry.requester, item.entry.request_id, since)
            lookup_seconds += time.perf_counter() - started
            lookups += len(items)
            started = time.perf_counter()
            store.write_batch(items)
            batch_seconds += time.perf_counter() - started
            batches += 1
        # Each statement whose plan scans a table, against the same statement written so
        # that SQLite searches the primary key instead: same parameters, same rows?
        for proxy in timed:
            for stats in proxy.stats.values():
                rewritten = index_friendly(stats.sample[0])
                if rewritten is None or not scans_a_table(stats.plan):
                    continue
                raw: sqlite3.Connection = proxy._conn
                sql, params = stats.sample
                before, rows_before = _timed_rows(raw, sql, params)
                after, rows_after = _timed_rows(raw, rewritten, params)
                fixes.append(
                    {
                        "sql": stats.sql,
                        "rewritten": _statement_key(rewritten),
                        "listed_rows": len(rows_before),
                        "same_rows": sorted(rows_before) == sorted(rows_after),
                        "us_as_is": before * 1e6,
                        "us_rewritten": after * 1e6,
                        "plan_rewritten": [
                            str(r[3])
                            for r in raw.execute(f"EXPLAIN QUERY PLAN {rewritten}", params)
                        ],
                    }
                )
    finally:
        store.close()
        _remove_db(dest)
    merged: dict[str, StatementStats] = {}
    for proxy in timed:
        for key, stats in proxy.stats.items():
            into = merged.setdefault(key, StatementStats(key, plan=stats.plan))
            into.calls += stats.calls
            into.seconds += stats.seconds
    return StatementProfile(
        db=label,
        rows=rows,
        batches=batches,
        batch_size=args.concurrency,
        seconds_per_batch=batch_seconds / batches,
        remembered_us_per_lookup=lookup_seconds / lookups * 1e6,
        statements=[
            {
                "sql": s.sql,
                "calls_per_batch": s.calls / batches,
                "us_per_batch": s.seconds / batches * 1e6,
                "plan": s.plan,
            }
            for s in sorted(merged.values(), key=lambda s: -s.seconds)
        ],
        fixes=fixes,
    )


def _short(sql: str, width: int = 70) -> str:
    return sql if len(sql) <= width else sql[: width - 3] + "..."


def print_statements(empty: StatementProfile, full: StatementProfile) -> list[dict[str, Any]]:
    """Per statement: µs per batch at both ends and the ratio; statements whose plan scans."""
    by_sql = {s["sql"]: s for s in empty.statements}
    print(
        f"\n(A1) the hub's AuditStore in-process, batches of {full.batch_size}: "
        f"{empty.seconds_per_batch * 1e3:.2f} ms/batch empty, "
        f"{full.seconds_per_batch * 1e3:.2f} ms/batch at {full.rows:,} rows "
        f"(x{_ratio(full.seconds_per_batch, empty.seconds_per_batch):.1f}); "
        f"idempotency look-up {empty.remembered_us_per_lookup:.0f} / "
        f"{full.remembered_us_per_lookup:.0f} µs"
    )
    print(f"{'statement':<70} {'empty µs':>10} {'full µs':>10} {'ratio':>7}  plan")
    rows: list[dict[str, Any]] = []
    for s in full.statements:
        e = by_sql.get(s["sql"])
        e_us = e["us_per_batch"] if e else float("nan")
        plan = "; ".join(s["plan"]) or "-"
        print(
            f"{_short(s['sql']):<70} {e_us:>10.0f} {s['us_per_batch']:>10.0f} "
            f"{_ratio(s['us_per_batch'], e_us):>7.1f}  {_short(plan, 60)}"
        )
        rows.append(
            {
                "sql": s["sql"],
                "us_per_batch_empty": e_us,
                "us_per_batch_full": s["us_per_batch"],
                "ratio": _ratio(s["us_per_batch"], e_us),
                "plan": s["plan"],
                "scans_a_table": scans_a_table(s["plan"]),
            }
        )
    for r in rows:
        if r["scans_a_table"]:
            print(f"  ! full table scan: {_short(r['sql'], 200)}\n      plan: {r['plan']}")
    for label, prof in (("empty", empty), ("full", full)):
        for f in prof.fixes:
            print(
                f"  {label}: {_short(f['sql'], 60)}\n"
                f"      as is {f['us_as_is']:,.0f} µs; as IN (SELECT * FROM (VALUES ...)) "
                f"{f['us_rewritten']:,.0f} µs, same rows: {f['same_rows']} "
                f"({f['listed_rows']}), plan {f['plan_rewritten']}"
            )
    return rows


# --- (A) the hub, end to end ----------------------------------------------------------------

REQUEST_TIMEOUT = 120.0  # seconds: a hub that slows down with its database is measured, not failed


def verify_load(
    address: str, qrs: list[str], concurrency: int, seconds: float, conn: Connection
) -> None:
    """Closed loop: `concurrency` workers verify random slips, each with a new request id,
    for `seconds`; sends (latencies, errors, elapsed, first error). hub_bench.load's closed
    loop, except that failures and slow answers (up to REQUEST_TIMEOUT) are counted and
    reported instead of failing the run, and the time to the last answer is measured."""

    async def main() -> tuple[list[float], int, float, str]:
        channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
        stubs = [verification_pb2_grpc.VerificationServiceStub(c) for c in channels]
        rng = random.Random(os.getpid())
        latencies: list[float] = []
        errors = 0
        first_error = ""
        prefix = f"g{os.getpid()}-{time.monotonic_ns()}-"
        counter = 0
        start = time.perf_counter()
        stop_at = start + seconds

        async def worker(i: int) -> None:
            nonlocal errors, first_error, counter
            stub = stubs[i % len(stubs)]
            while (sent := time.perf_counter()) < stop_at:
                counter += 1
                request = verification_pb2.VerifyRequest(
                    qr_text=rng.choice(qrs), request_id=f"{prefix}{counter}"
                )
                try:
                    await stub.Verify(
                        request, timeout=REQUEST_TIMEOUT, metadata=(("x-member-id", "002"),)
                    )
                except grpc.aio.AioRpcError as exc:
                    errors += 1
                    first_error = first_error or f"{exc.code().name}: {exc.details()}"
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
        for c in channels:
            await c.close()
        return latencies, errors, elapsed, first_error

    conn.send(asyncio.run(main()))


def run_load(
    address: str, qrs: list[str], concurrency: int, seconds: float
) -> tuple[list[float], int, float, str]:
    """verify_load in its own process (apart from the hub, as hub_bench runs it)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=verify_load, args=(address, qrs, concurrency, seconds, child))
    p.start()
    try:
        result: tuple[list[float], int, float, str] = parent.recv()
    finally:
        p.join()
    return result


@dataclass
class HubRun:
    db: str  # "empty" or "full"
    rows: int
    round: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    hub_cpu_s_per_1k: float
    hub_start_s: float
    copy_s: float
    db_bytes_after: int
    load_seconds: float = 0.0  # from the first request to the last answer
    errors: int = 0
    error: str = ""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def measure_hub(
    label: str,
    rows: int,
    source: Path,
    rnd: int,
    members: Path,
    qrs: list[str],
    args: argparse.Namespace,
    work: Path,
) -> HubRun:
    """A fresh hub on a fresh copy of `source`: warm-up, then --seconds of closed-loop load."""
    dest = work / f"hub-{label}-{rnd}.sqlite"
    copy_s = fresh_copy(source, dest)
    log = work / f"hub-{label}-{rnd}.log"
    started = time.perf_counter()
    with log.open("w") as stderr:
        hub = subprocess.Popen(
            cli_argv("hub", "--members", str(members), "--port", "0", "--ready-line",
                 "--db", f"sqlite:///{dest}"),
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    run = HubRun(label, rows, rnd, 0, 0.0, 0.0, 0.0, 0.0, 0.0, copy_s, 0)
    try:
        address = _ready(hub)["address"]
        run.hub_start_s = time.perf_counter() - started
        # Warm up: connections, the issuers' caches, the hub's page cache.
        run_load(address, qrs, args.concurrency, 1.0)
        cpu0 = cpu_seconds(hub.pid)
        latencies, run.errors, run.load_seconds, run.error = run_load(
            address, qrs, args.concurrency, args.seconds
        )
        cpu = cpu_seconds(hub.pid) - cpu0
    finally:
        hub.terminate()
        try:
            hub.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
        run.db_bytes_after = _files_size(dest)
        _remove_db(dest)
    if run.errors:
        print(f"  {label} round {rnd}: {run.errors} failed, first: {run.error}\n{_tail(log)}")
    latencies.sort()
    n = len(latencies)
    run.requests = n
    if n:
        run.rps = n / run.load_seconds
        run.p50_ms = latencies[n // 2] * 1000
        run.p99_ms = latencies[min(n - 1, int(n * 0.99))] * 1000
        run.hub_cpu_s_per_1k = cpu / n * 1000
    return run


def _slips(control: str, limit: int) -> list[str]:
    """QR texts of every visible slip the banks hold (paging through ListTransactions)."""
    qrs: list[str] = []
    with grpc.insecure_channel(control) as channel:
        stub = simulator_pb2_grpc.BankSimulatorStub(channel)
        for bank in BANKS.split(","):
            token = ""
            while True:
                page = stub.ListTransactions(
                    simulator_pb2.ListTransactionsRequest(
                        bank=bank, page_size=1000, page_token=token
                    )
                )
                qrs += [
                    s.qr_text for s in page.slips if s.state == simulator_pb2.SLIP_STATE_VISIBLE
                ]
                token = page.next_page_token
                if not token or len(qrs) >= limit:
                    break
    return qrs


def part_audit(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    full_path, full_info, full_reused = hub_db(args.cache, args.rows)
    empty_path, empty_info, _ = hub_db(args.cache, 0)
    fill = asdict(full_info) | {"reused_from_cache": full_reused}
    print(
        f"\n(A) hub database: {args.rows:,} verifications, {full_info.size_bytes / 2**30:.2f} GiB "
        f"(filled in {full_info.fill_seconds:.0f} s"
        f"{', reused from the cache' if full_reused else ''}); empty: "
        f"{empty_info.size_bytes / 2**10:.0f} KiB; remembered response "
        f"{full_info.response_bytes} bytes"
    )
    result: dict[str, Any] = {"rows": args.rows, "fill": fill, "empty_fill": asdict(empty_info)}

    empty_profile = profile_statements("empty", 0, empty_path, work, args)
    full_profile = profile_statements("full", args.rows, full_path, work, args)
    result["statements"] = {
        "empty": asdict(empty_profile),
        "full": asdict(full_profile),
        "compared": print_statements(empty_profile, full_profile),
    }

    banks = subprocess.Popen(
        cli_argv("banks", "--codes", BANKS, "--transactions", str(args.bank_transactions),
             "--log-level", "WARNING"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    runs: list[HubRun] = []
    try:
        ready = _ready(banks)
        members = work / "members.toml"
        members.write_text(
            "\n".join(
                f'[[member]]\ncode = "{b["code"]}"\nname = "{b["name"]}"\n'
                f'issuer_endpoint = "{b["address"]}"\n'
                for b in ready["banks"]
            )
        )
        qrs = _slips(ready["control"], 100_000)
        result["distinct_slips"] = len(qrs)
        print(
            f"\n(A2) the hub end to end: closed loop, {args.concurrency} in flight, "
            f"{len(qrs):,} distinct valid slips, a fresh hub and database copy per run"
        )
        print(
            f"{'db':<6} {'rows':>10} {'round':>5} {'answers':>8} {'errors':>6} {'req/s':>8} "
            f"{'p50 ms':>9} {'p99 ms':>9} {'hub CPU s/1k':>13} {'start s':>8} {'db after':>10}"
        )
        for rnd in range(1, args.rounds + 1):
            for label, rows, path in (("empty", 0, empty_path), ("full", args.rows, full_path)):
                r = measure_hub(label, rows, path, rnd, members, qrs, args, work)
                runs.append(r)
                if not r.requests:
                    print(f"{r.db:<6} {r.rows:>10,} {r.round:>5}  no answers: {r.error}")
                    continue
                print(
                    f"{r.db:<6} {r.rows:>10,} {r.round:>5} {r.requests:>8} {r.errors:>6} "
                    f"{r.rps:>8.1f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f} "
                    f"{r.hub_cpu_s_per_1k:>13.3f} {r.hub_start_s:>8.2f} "
                    f"{r.db_bytes_after / 2**20:>8.0f}Mi",
                    flush=True,
                )
    finally:
        banks.terminate()
        banks.wait(timeout=30)

    def med(label: str, attr: str) -> float:
        return _median([getattr(r, attr) for r in runs if r.db == label and r.requests])

    summary = {
        "cpu_per_request_ratio_full_over_empty": _ratio(
            med("full", "hub_cpu_s_per_1k"), med("empty", "hub_cpu_s_per_1k")
        ),
        "rps_ratio_full_over_empty": _ratio(med("full", "rps"), med("empty", "rps")),
        "p50_ratio_full_over_empty": _ratio(med("full", "p50_ms"), med("empty", "p50_ms")),
        "p99_ratio_full_over_empty": _ratio(med("full", "p99_ms"), med("empty", "p99_ms")),
        "batch_seconds_ratio_full_over_empty": _ratio(
            full_profile.seconds_per_batch, empty_profile.seconds_per_batch
        ),
    }
    for label in ("empty", "full"):
        for attr in ("rps", "p50_ms", "p99_ms", "hub_cpu_s_per_1k"):
            summary[f"{label}_{attr}"] = med(label, attr)
    result["runs"] = [asdict(r) for r in runs]
    result["summary"] = summary
    print(
        f"\n(A) ratios full ({args.rows:,} rows) / empty, medians:\n"
        f"  hub CPU per request  {summary['cpu_per_request_ratio_full_over_empty']:.2f}\n"
        f"  throughput           {summary['rps_ratio_full_over_empty']:.2f}\n"
        f"  p50 / p99 latency    {summary['p50_ratio_full_over_empty']:.2f} / "
        f"{summary['p99_ratio_full_over_empty']:.2f}\n"
        f"  in-process batch     {summary['batch_seconds_ratio_full_over_empty']:.2f}"
    )
    return result


# --- (B) the issuer inquiry -----------------------------------------------------------------


def serve_bank(data_dir: str, cached: bool, conn: Connection) -> None:
    """Run bank 014 on the ledger in `data_dir` (as `txverify banks --data` does); send its
    issuer port; stop when told. Not cached: its transaction and answer caches hold nothing."""

    async def main() -> None:
        if not cached:
            import txverify.simulators.bank
            import txverify.simulators.issuer

            # Both modules read CACHE_SIZE when they trim their LRU (issuer.py imported
            # the name from bank.py, so it has its own binding to change).
            txverify.simulators.bank.CACHE_SIZE = 0
            setattr(txverify.simulators.issuer, "CACHE_SIZE", 0)  # noqa: B010 (not re-exported)
        from txverify.simulators.server import start_simulator
        from txverify.simulators.settings import SimulatorSettings

        sim = await start_simulator(
            SimulatorSettings(codes=(LEDGER_BANK,), data_dir=Path(data_dir), transactions=0)
        )
        conn.send(sim.nodes[LEDGER_BANK].port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        await sim.stop()

    asyncio.run(main())


def visible_refs(data_dir: Path) -> list[str]:
    """Every transRef of the ledger that an inquiry finds today (within 7 Bangkok days)."""
    bangkok = timezone(timedelta(hours=7))
    today = datetime.now(bangkok).date()
    cutoff = datetime.combine(today - timedelta(days=7), datetime.min.time(), tzinfo=bangkok)
    conn = sqlite3.connect(str(data_dir / f"bank-{LEDGER_BANK}.sqlite"))
    try:
        return [
            r[0]
            for r in conn.execute(
                "SELECT trans_ref FROM transactions WHERE trans_time >= ?", (to_micros(cutoff),)
            )
        ]
    finally:
        conn.close()


def ledger_lookups(data_dir: Path, refs: list[str], count: int = 20_000) -> dict[str, Any]:
    """The ledger read an uncached inquiry makes (SqliteLedger.get_transaction, in-process,
    on the same file): µs per lookup of random transRefs (best of three passes), and the
    statement's plan."""
    from txverify.simulators.sqlite_ledger import _TX_SELECT, SqliteLedger

    ledger = SqliteLedger(f"sqlite:///{data_dir / f'bank-{LEDGER_BANK}.sqlite'}")
    try:
        rng = random.Random(1)
        found, seconds = 0, float("inf")
        for _ in range(3):  # best of three passes over fresh random transRefs
            picks = [rng.choice(refs) for _ in range(count)]
            started = time.perf_counter()
            found = sum(ledger.get_transaction(ref) is not None for ref in picks)
            seconds = min(seconds, time.perf_counter() - started)
        sql = f"{_TX_SELECT} WHERE trans_ref = ?"
        plan = [str(r[3]) for r in ledger.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("x",))]
    finally:
        ledger.close()
    return {"lookups": count, "found": found, "us_per_lookup": seconds / count * 1e6, "plan": plan}


@dataclass
class InquiryRun:
    ledger_rows: int
    mode: str  # "cache" (as shipped) or "nocache"
    concurrency: int
    round: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    bank_cpu_s_per_1k: float


def measure_bank(
    rows: int, data_dir: Path, mode: str, rnd: int, args: argparse.Namespace
) -> list[InquiryRun]:
    """A fresh bank process on the ledger; at each concurrency a warm-up, then --seconds."""
    refs = visible_refs(data_dir)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve_bank, args=(str(data_dir), mode == "cache", child))
    server.start()
    assert server.pid is not None
    runs = []
    try:
        address = f"127.0.0.1:{parent.recv()}"
        for concurrency in (args.ledger_concurrency, 1):
            load = argparse.Namespace(client_procs=1, concurrency=concurrency, rate=0.0)
            _run_clients(ctx, address, refs, load, 1.0)  # warm up
            cpu0 = cpu_seconds(server.pid)
            latencies = _run_clients(ctx, address, refs, load, args.seconds)
            cpu = cpu_seconds(server.pid) - cpu0
            latencies.sort()
            n = len(latencies)
            runs.append(
                InquiryRun(
                    ledger_rows=rows,
                    mode=mode,
                    concurrency=concurrency,
                    round=rnd,
                    requests=n,
                    rps=n / args.seconds,
                    p50_ms=latencies[n // 2] * 1000,
                    p99_ms=latencies[min(n - 1, int(n * 0.99))] * 1000,
                    bank_cpu_s_per_1k=cpu / n * 1000,
                )
            )
    finally:
        parent.send("stop")
        server.join(timeout=30)
        if server.is_alive():
            server.kill()
    return runs


def part_ledger(args: argparse.Namespace) -> dict[str, Any]:
    sizes: list[tuple[int, Path, FillInfo, bool]] = []
    for rows in (SMALL_LEDGER, args.ledger_rows):
        directory, info, reused = ledger_dir(args.cache, rows)
        sizes.append((rows, directory, info, reused))
    big = args.ledger_rows
    print(
        "\n(B) ledgers of bank 014: "
        + "; ".join(
            f"{rows:,} transactions {info.size_bytes / 2**20:.1f} MiB (filled in "
            f"{info.fill_seconds:.1f} s{', cached' if reused else ''})"
            for rows, _, info, reused in sizes
        )
    )
    lookups = {
        rows: ledger_lookups(directory, visible_refs(directory)) for rows, directory, _, _ in sizes
    }
    for rows, lookup in lookups.items():
        print(
            f"  ledger read in-process, {rows:>9,} rows: {lookup['us_per_lookup']:.1f} µs per "
            f"get_transaction ({lookup['found']:,}/{lookup['lookups']:,} found), "
            f"plan {lookup['plan']}"
        )
    print(
        f"IssuerInquiry straight to the bank's port, closed loop, random transRefs over the "
        f"whole ledger; a fresh bank process per ledger, mode and round\n"
        f"{'ledger':>10} {'mode':<8} {'conc':>4} {'round':>5} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'bank CPU s/1k':>14}"
    )
    runs: list[InquiryRun] = []
    for rnd in range(1, args.rounds + 1):
        for rows, directory, _, _ in sizes:
            for mode in ("cache", "nocache"):
                for r in measure_bank(rows, directory, mode, rnd, args):
                    runs.append(r)
                    print(
                        f"{r.ledger_rows:>10,} {r.mode:<8} {r.concurrency:>4} {r.round:>5} "
                        f"{r.rps:>8.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
                        f"{r.bank_cpu_s_per_1k:>14.3f}",
                        flush=True,
                    )

    def med(rows: int, mode: str, concurrency: int, attr: str) -> float:
        return _median(
            [
                getattr(r, attr)
                for r in runs
                if (r.ledger_rows, r.mode, r.concurrency) == (rows, mode, concurrency)
            ]
        )

    summary: dict[str, Any] = {}
    print(f"\n(B) ratios {big:,} / {SMALL_LEDGER:,} ledger rows, medians:")
    print(f"{'mode':<8} {'conc':>4} {'p50':>6} {'p99':>6} {'req/s':>6} {'CPU/req':>8}")
    for mode in ("cache", "nocache"):
        for concurrency in (args.ledger_concurrency, 1):
            key = f"{mode}_c{concurrency}"
            summary[key] = {
                attr: {
                    "small": med(SMALL_LEDGER, mode, concurrency, attr),
                    "big": med(big, mode, concurrency, attr),
                    "ratio_big_over_small": _ratio(
                        med(big, mode, concurrency, attr),
                        med(SMALL_LEDGER, mode, concurrency, attr),
                    ),
                }
                for attr in ("p50_ms", "p99_ms", "rps", "bank_cpu_s_per_1k")
            }
            s = summary[key]
            print(
                f"{mode:<8} {concurrency:>4} {s['p50_ms']['ratio_big_over_small']:>6.2f} "
                f"{s['p99_ms']['ratio_big_over_small']:>6.2f} "
                f"{s['rps']['ratio_big_over_small']:>6.2f} "
                f"{s['bank_cpu_s_per_1k']['ratio_big_over_small']:>8.2f}"
            )
    summary["ledger_read_us_ratio_big_over_small"] = _ratio(
        lookups[big]["us_per_lookup"], lookups[SMALL_LEDGER]["us_per_lookup"]
    )
    print(
        f"ledger read (in-process get_transaction) {big:,} / {SMALL_LEDGER:,}: "
        f"{summary['ledger_read_us_ratio_big_over_small']:.2f}"
    )
    return {
        "ledgers": [
            {
                "rows": rows,
                "fill": asdict(info),
                "reused_from_cache": reused,
                "ledger_read": lookups[rows],
            }
            for rows, _, info, reused in sizes
        ],
        "runs": [asdict(r) for r in runs],
        "summary": summary,
    }


# --- main -----------------------------------------------------------------------------------


@contextmanager
def _workdir(cache: Path) -> Iterator[Path]:
    """Per-invocation scratch space beside the cache (the same file system: copies are fast)."""
    work = cache / f"run-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--rows", type=int, default=5_000_000, help="(A) verifications filled")
    parser.add_argument(
        "--ledger-rows", type=int, default=1_000_000, help="(B) transactions of the big ledger"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/txverify-bench-cache"), help="filled databases"
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--only", choices=("audit", "ledger"), help="run one part only")
    parser.add_argument("--concurrency", type=int, default=32, help="(A) verifications in flight")
    parser.add_argument(
        "--bank-transactions", type=int, default=5000, help="(A) slips per simulated bank"
    )
    parser.add_argument(
        "--ledger-concurrency", type=int, default=8, help="(B) inquiries in flight (and 1)"
    )
    args = parser.parse_args()
    args.cache = args.cache.resolve()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens under nohup

    report: dict[str, Any] = {"machine": machine(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
    }}  # fmt: skip
    m = report["machine"]
    print(
        f"{m['cpu_count']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, SQLite {m['sqlite']}"
    )
    with _workdir(args.cache) as work:
        if args.only in (None, "audit"):
            report["audit"] = part_audit(args, work)
        if args.only in (None, "ledger"):
            report["ledger"] = part_ledger(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
