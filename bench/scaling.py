"""Scaling out (M8): hub replicas behind nginx on one PostgreSQL, and its audit ceiling.

    python bench/scaling.py [--seconds 8] [--rounds 2] [--replicas 1,2,3,4]
                            [--writers 1,2,4,8] [--json bench-scaling-results.json]
    python bench/scaling.py --quick     # smoke run: 2 s, one round, 1-2 replicas, 1-2 writers

Part A: in interleaved rounds, each on a fresh PostgreSQL schema, `direct-1` (one hub,
the load straight at it: the yardstick for nginx's cost) and `nginx-N` (N hubs behind
nginx as `txverify cluster up` runs them). Every hub feature is on; the load is the
M6 harness's, closed loop, every answer checked. CPU ms per verification of each part
(PostgreSQL: all `postgres` processes) counts between two progress reports of the
load; `other` is the cores busy with anything not measured (other work, the kernel).
Part B: K processes, each a PostgresAuditStore behind an AuditWriter as in a hub
(group commit), each with --writer-concurrency records of new slips in flight.
On few cores all parts share them: throughput stops growing once they are full;
CPU per verification is the figure that carries over to a bigger machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto"), str(ROOT / "bench")]

import grpc  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from growth_fill import sample_response  # noqa: E402
from harness import BANKS, REQUESTER, machine  # noqa: E402
from txverify.cli import nginx  # noqa: E402
from txverify.cli.faultlab.processes import Server, start_banks, start_server  # noqa: E402
from txverify.cli.load.engine import run_load  # noqa: E402
from txverify.cli.load.plan import LoadPlan  # noqa: E402
from txverify.cli.network import cli_argv, wait_serving  # noqa: E402
from txverify.hub.audit import AuditEntry, BatchItem, SlipUse, Verified  # noqa: E402
from txverify.hub.audit.postgres import PostgresAuditStore  # noqa: E402
from txverify.hub.audit.writer import AuditWriter  # noqa: E402
from txverify.hub.router import _finish  # noqa: E402
from txverify.v1 import simulator_pb2, simulator_pb2_grpc  # noqa: E402
from txverify.v1 import verification_pb2 as v1  # noqa: E402
from txverify.v1 import verification_pb2_grpc as v1_grpc  # noqa: E402

POSTGRES = os.environ.get("TXVERIFY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TICK, CORES = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
PARTS = ("hubs", "nginx", "postgres", "banks", "load")
# Printed columns: key, heading, format.
A_COLUMNS = [("config", "config", "<8"), ("round", "rd", ">2"), ("rps", "req/s", ">6.0f"),
             ("p50_ms", "p50 ms", ">6.1f"), ("p99_ms", "p99 ms", ">6.1f"), ("failed", "fail", ">4"),
             *((p, p, ">8.3f") for p in (*PARTS, "total")), ("busy", "busy", ">5.0%"),
             ("other", "other", ">5.2f"), ("wal_bytes", "WAL", ">5.0f")]  # fmt: skip
B_COLUMNS = [("writers", "writers", ">7"), ("records_per_s", "records/s", ">9.0f"),
             ("mean_batch", "batch", ">6.1f"), ("postgres_cpu_ms_per_record", "PG ms/rec", ">9.3f"),
             ("writer_cpu_ms_per_record", "writer ms", ">9.3f"),
             ("wal_bytes_per_record", "WAL B/rec", ">9.0f"), ("busy", "busy", ">5.0%"),
             ("other", "other", ">5.2f")]  # fmt: skip


def line(columns: list[tuple[str, str, str]], m: dict[str, Any] | None = None) -> str:
    """A row of figures, or the headings without `m`."""
    return " ".join(f"{m[k]:{f}}" if m else f"{h:{f.split('.')[0]}}" for k, h, f in columns)


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named `postgres` on the machine, by pid."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # gone meanwhile
            head, tail = stat.read_text().rsplit(")", 1)
            if head.partition("(")[2] == "postgres":
                fields = tail.split()
                out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


@dataclass
class Snapshot:
    at: float
    parts: dict[str, float]  # CPU seconds of each group of our processes
    postgres: dict[int, float]
    stat: tuple[int, int]  # busy and all jiffies of all cores (idle and iowait are idle)

    @classmethod
    def take(cls, groups: dict[str, list[Server]]) -> Snapshot:
        parts = {k: sum(s.cpu() for s in v) for k, v in groups.items()}
        cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return cls(time.monotonic(), parts, postgres_cpu(), (sum(cpu) - cpu[3] - cpu[4], sum(cpu)))

    def cpu_since(self, before: Snapshot) -> dict[str, float]:
        """CPU seconds of each part since `before` (that of a postgres process that exited
        meanwhile is lost: connections must stay open until the snapshot after)."""
        out = {k: v - before.parts.get(k, 0.0) for k, v in self.parts.items()}
        out["postgres"] = sum(v - before.postgres.get(p, 0.0) for p, v in self.postgres.items())
        return out

    def busy_since(self, before: Snapshot) -> float:
        """The machine's CPU use since `before`, 0-1 of all cores."""
        return (self.stat[0] - before.stat[0]) / max(1, self.stat[1] - before.stat[1])


def quietly(args: argparse.Namespace, measure: Callable[[], dict[str, Any]],
            columns: list[tuple[str, str, str]]) -> dict[str, Any]:  # fmt: skip
    """measure() once the machine is idle (under 15% busy over a second, waiting up to
    --quiet-wait s); again, twice at most, if other work took over --max-other cores."""
    for attempt in itertools.count(1):
        deadline, idle = time.monotonic() + args.quiet_wait, Snapshot.take({})
        while time.monotonic() < deadline:
            time.sleep(1.0)
            idle, before = Snapshot.take({}), idle
            if idle.busy_since(before) < 0.15:
                break
        m = measure()
        if m["other"] <= args.max_other or attempt == 3:
            print(line(columns, m), flush=True)
            return m
        print(line(columns, m) + "  <- other work meanwhile: measuring again", flush=True)
    raise AssertionError("unreachable")


class Postgres:
    """An admin connection to the server: schemas and WAL positions."""

    def __init__(self, url: str) -> None:
        self.url, self.conn = url, psycopg.connect(url, autocommit=True)

    @contextlib.contextmanager
    def fresh_schema(self, label: str) -> Iterator[str]:
        """A URL whose connections see only a new, empty schema (dropped afterwards)."""
        name = sql.Identifier(f"bench_{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}")
        self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        try:
            sep = "&" if "?" in self.url else "?"
            yield f"{self.url}{sep}options=-csearch_path%3D{name.as_string(self.conn)}"
        finally:
            self.conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(name))

    def wal(self, since: str = "0/0") -> tuple[str, float]:
        """The WAL position, and the bytes written since `since`."""
        query = "SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), %s)"
        lsn, written = self.conn.execute(query, (since,)).fetchone() or ("0/0", 0)
        return lsn, float(written)


# --- part A: replicas behind nginx ----------------------------------------------------------


def stop_all(servers: list[Server]) -> None:
    for s in servers:  # all asked at once, then each waited for
        if s.popen.poll() is None:
            s.popen.terminate()
    for s in servers:
        s.stop()


class Replicas:
    def __init__(self, args: argparse.Namespace, work: Path, pg: Postgres) -> None:
        self.args, self.work, self.pg = args, work, pg
        self.qrs: list[str] = []
        self.banks: Server | None = None
        self.members = work / "members.toml"
        self.runs: list[dict[str, Any]] = []  # measurements

    def start_banks(self) -> None:
        self.banks, self.members = start_banks(
            self.work, "--codes", BANKS, "--transactions", str(self.args.transactions),
            "--log-level", "WARNING",
        )  # fmt: skip
        with grpc.insecure_channel(self.banks.ready["control"]) as channel:
            stub = simulator_pb2_grpc.BankSimulatorStub(channel)
            for b in self.banks.ready["banks"]:
                request = simulator_pb2.ListTransactionsRequest(bank=b["code"], page_size=1000)
                self.qrs += [s.qr_text for s in stub.ListTransactions(request).slips
                             if s.state == simulator_pb2.SLIP_STATE_VISIBLE]  # fmt: skip
        if len(self.qrs) < 1000:
            raise RuntimeError(f"only {len(self.qrs)} visible slips: raise --transactions")

    def start(self, url: str, n: int, via_nginx: bool) -> tuple[str, list[Server], list[Server]]:
        """N hubs on `url` (and nginx in front): the address to load, the hubs, nginx."""
        hubs: list[Server] = []
        try:
            for i in range(1, n + 1):
                hubs.append(start_server(f"hub-{i}", cli_argv(
                    "hub", "--members", str(self.members), "--port", "0", "--ready-line",
                    "--db", url, "--rate-limit-rps", "1000000", "--rate-limit-burst", "100000",
                    "--drain-delay", "0"), self.work / f"hub-{i}.log"))  # fmt: skip
            if not via_nginx:
                return hubs[0].address, hubs, []
            listen = f"127.0.0.1:{nginx.free_port()}"
            proxy = nginx.start(self.work / "nginx", listen, [h.address for h in hubs])
            return listen, hubs, [Server("nginx", proxy, listen)]
        except BaseException:
            stop_all(hubs)
            raise

    def check(self, address: str) -> None:
        """The first answer must be OK, or the bench would measure errors."""
        wait_serving(address, timeout=15)  # nginx may need a moment to listen
        with grpc.insecure_channel(address) as channel:
            answer = v1_grpc.VerificationServiceStub(channel).Verify(
                v1.VerifyRequest(qr_text=self.qrs[0]), timeout=10,
                metadata=(("x-member-id", REQUESTER),))  # fmt: skip
        if not answer.transaction.trans_ref:
            raise RuntimeError(f"{address} answered without a transaction")

    def measure(self, config: str, n: int, rnd: int) -> dict[str, Any]:
        """One measurement: figures per verification, CPU ms of each part under its name."""
        assert self.banks is not None
        marks: list[tuple[int, Snapshot]] = []
        with self.pg.fresh_schema(config) as url:
            address, hubs, proxy = self.start(url, n, config.startswith("nginx"))
            groups = {"hubs": hubs, "nginx": proxy, "banks": [self.banks]}
            first: list[float] = []

            def progress(answers: int, _errors: int) -> None:
                # From 1 s after the first report (every load process has reported),
                # a snapshot at most every 0.5 s; the window is the first to the last.
                now = time.monotonic()
                first[:] = first or [now]
                if now - first[0] >= 1.0 and (not marks or now - marks[-1][1].at >= 0.5):
                    marks.append((answers, Snapshot.take(groups)))

            try:
                self.check(address)
                a = self.args
                plan = LoadPlan(address, REQUESTER, {"valid": tuple(self.qrs)}, (("valid", 1),),
                                a.rate, a.concurrency, duration=a.seconds,
                                connections=a.connections, procs=a.procs)  # fmt: skip
                run_load(replace(plan, duration=min(2.0, a.seconds), run_id=f"w{plan.run_id}"))
                wal0, _ = self.pg.wal()
                result = run_load(plan, progress)
                _, wal = self.pg.wal(wal0)
            finally:
                stop_all([*proxy, *hubs])
        if len(marks) < 2 or result.requests == 0:
            raise RuntimeError(f"{config}: too few progress reports; raise --seconds")
        (a0, s0), (a1, s1) = marks[0], marks[-1]
        cpu = {k: v / (a1 - a0) * 1000 for k, v in s1.cpu_since(s0).items()}
        cpu["load"] = result.total.cpu_seconds / result.requests * 1000
        cpu["total"] = sum(cpu[k] for k in PARTS)
        busy, rps = s1.busy_since(s0), (a1 - a0) / (s1.at - s0.at)  # rps over the CPU window
        errors = result.total.failed + result.total.wrong
        return {
            "config": config, "replicas": n, "round": rnd, "requests": result.requests,
            "rps": rps, "p50_ms": result.latency_us(50) / 1000,
            "p99_ms": result.latency_us(99) / 1000,
            "failed": result.failed_count + result.wrong_count,  # not clean if any
            **cpu, "busy": busy, "other": busy * CORES - cpu["total"] * rps / 1000,
            "wal_bytes": wal / result.requests,
            "errors": {f"{k}/{o}": v for (k, o), v in errors.items()},
        }  # fmt: skip

    def run(self) -> None:
        configs = [("direct-1", 1)] + [(f"nginx-{n}", n) for n in self.args.replicas]
        a = self.args
        load = f"{a.rate:.0f} req/s offered" if a.rate else f"{a.concurrency} in flight"
        print(f"\nPart A: {len(self.qrs)} slips, {load}; CPU ms and WAL bytes per verification;"
              " busy: all cores; other: other work")  # fmt: skip
        print(line(A_COLUMNS))
        for rnd in range(1, self.args.rounds + 1):
            for config, n in configs if rnd % 2 else configs[::-1]:
                m = quietly(self.args, partial(self.measure, config, n, rnd), A_COLUMNS)
                self.runs.append(m)
                if m["failed"]:
                    print(f"  !! {m['failed']} failed, not a clean measurement: {m['errors']}")


# --- part B: audit writes without the hub ----------------------------------------------------


def writer_main(index: int, conn: Connection, url: str, seconds: float, concurrency: int,
                go: Event) -> None:  # fmt: skip
    """One writer process: `concurrency` callers writing records until `seconds` are up."""
    batches = [0, 0]  # batches, records in them

    def on_batch(records: int, _took: float) -> None:
        batches[0] += 1
        batches[1] += records

    base = sample_response()
    checks = list(base.checks)
    numbers = itertools.count()

    def item() -> BatchItem:
        """What the router hands the writer for a named Verify of a new slip."""
        k = next(numbers)
        ref, member = f"W{index:03d}X{k:012d}", ("002", "014")[k % 2]
        entry = AuditEntry(datetime.now(UTC), f"w{index}-{k}", member, "", "014", ref, "OK",
                           verdict=1, latency_us=5000)  # fmt: skip
        response = type(base)()
        response.CopyFrom(base)  # each item its own response: the batch completes it in place
        use = SlipUse("014", ref, member, "")
        return BatchItem(entry, Verified(use, _finish(response, checks)))

    async def run() -> None:
        writer = AuditWriter(PostgresAuditStore(url), on_batch=on_batch)
        await writer.write(item())  # connected, warm
        conn.send("ready")
        await asyncio.to_thread(go.wait)
        batches[:], done = [0, 0], 0
        cpu0, t0 = os.times(), time.perf_counter()

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < t0 + seconds:
                await writer.write(item())
                done += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed, cpu1 = time.perf_counter() - t0, os.times()
        cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
        conn.send({"records": done, "seconds": elapsed, "cpu": cpu,
                   "batches": batches[0], "batched": batches[1]})  # fmt: skip
        await asyncio.to_thread(conn.recv)  # connected until PostgreSQL's CPU is read
        await writer.close()

    asyncio.run(run())


def audit_writes(args: argparse.Namespace, pg: Postgres, k: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with pg.fresh_schema(f"writers-{k}") as url:
        PostgresAuditStore(url).close()  # the tables, made once before the writers start
        go = ctx.Event()
        pipes = [ctx.Pipe() for _ in range(k)]
        a = (url, args.seconds, args.writer_concurrency, go)
        procs = [ctx.Process(target=writer_main, args=(i, pipes[i][1], *a)) for i in range(k)]
        for p in procs:
            p.start()
        try:
            for mine, _ in pipes:
                if not mine.poll(60) or mine.recv() != "ready":
                    raise RuntimeError("an audit writer did not start")
            before, (wal0, _) = Snapshot.take({}), pg.wal()
            go.set()
            out = [mine.recv() for mine, _ in pipes]
            after, (_, wal) = Snapshot.take({}), pg.wal(wal0)
        finally:
            for mine, _ in pipes:
                with contextlib.suppress(OSError):
                    mine.send("close")
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
    records = sum(o["records"] for o in out)
    rate = sum(o["records"] / o["seconds"] for o in out)
    pg_ms = after.cpu_since(before)["postgres"] / records * 1000
    writer_ms = sum(o["cpu"] for o in out) / records * 1000
    busy = after.busy_since(before)
    return {
        "writers": k, "records": records, "records_per_s": rate,
        "mean_batch": sum(o["batched"] for o in out) / max(1, sum(o["batches"] for o in out)),
        "postgres_cpu_ms_per_record": pg_ms, "writer_cpu_ms_per_record": writer_ms,
        "wal_bytes_per_record": wal / records, "busy": busy,
        "other": busy * CORES - (pg_ms + writer_ms) * rate / 1000,
    }  # fmt: skip


# --- the whole run ---------------------------------------------------------------------------


def show(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {show(x)}" for k, x in v.items())
    return (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}") if isinstance(v, float) else str(v)


def summarise(a: Replicas, audit: list[dict[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if audit:
        s["audit_ceiling_records_per_s"] = max(r["records_per_s"] for r in audit)
        pg_ms = statistics.median(r["postgres_cpu_ms_per_record"] for r in audit)
        s["audit_records_per_s_per_postgres_core"] = 1000 / pg_ms
    if not a.runs:
        return s
    configs = list(dict.fromkeys(m["config"] for m in a.runs))  # as in the first round
    keys = ("rps", "p50_ms", "p99_ms", "busy", "other", "wal_bytes", *PARTS, "total")
    per = {c: {k: statistics.median(m[k] for m in a.runs if m["config"] == c) for k in keys}
           for c in configs}  # fmt: skip
    direct, one = per["direct-1"], per.get("nginx-1", per["direct-1"])
    nginx_n = [c for c in configs if c != "direct-1"]
    return s | {
        "medians": per,
        "all_clean": all(m["failed"] == 0 for m in a.runs),
        "verifications_per_hub_core": {c: 1000 / per[c]["hubs"] for c in configs},
        "nginx_cpu_over_hub_cpu": {c: per[c]["nginx"] / per[c]["hubs"] for c in nginx_n},
        "rps_nginx_1_over_direct_1": one["rps"] / direct["rps"],
        "rps_over_nginx_1": {c: per[c]["rps"] / one["rps"] for c in nginx_n},
        "postgres_ms_per_verification": statistics.median(per[c]["postgres"] for c in configs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def counts(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    add = parser.add_argument
    add("--seconds", type=float, default=8.0, help="per measurement")
    add("--rounds", type=int, default=2, help="interleaved rounds (part A)")
    add("--replicas", type=counts, default=[1, 2, 3, 4], help="N of each nginx-N (part A)")
    add("--writers", type=counts, default=[1, 2, 4, 8], help="K writer processes (part B)")
    add("--writer-concurrency", type=int, default=64, help="records in flight per writer")
    add("--procs", type=int, default=2, help="load generator processes")
    add("--connections", type=int, default=8, help="HTTP/2 connections in all")
    add("--concurrency", type=int, default=64, help="requests in flight in all")
    add("--rate", type=float, default=0.0, help="open loop at this rate (default: closed loop)")
    add("--transactions", type=int, default=2000, help="per simulated bank")
    add("--postgres", default=POSTGRES, help="the server (a fresh schema per measurement)")
    add("--quiet-wait", type=float, default=30.0, help="most seconds to wait for an idle machine")
    add("--max-other", type=float, default=0.25, help="cores of other work that void a figure")
    add("--skip-replicas", action="store_true", help="part B only")
    add("--quick", action="store_true", help="smoke run: 2 s, one round, 1-2 replicas and writers")
    add("--json", type=Path, default=Path("bench-scaling-results.json"))
    if parser.parse_args().quick:  # new defaults; what is given still counts
        parser.set_defaults(seconds=2.0, rounds=1, replicas=[1, 2], writers=[1, 2])
    args = parser.parse_args()
    pg = Postgres(args.postgres)
    query = "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)"
    names = ["fsync", "synchronous_commit", "wal_sync_method", "server_version", "shared_buffers"]
    settings: dict[str, str] = dict(pg.conn.execute(query, (names,)).fetchall())
    info = machine() | {"postgres": settings, "nginx": nginx.nginx_binary(),
                        "date": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    print(json.dumps(info), flush=True)
    with tempfile.TemporaryDirectory(prefix="txverify-scaling-") as tmp:
        a = Replicas(args, Path(tmp), pg)
        if not args.skip_replicas:
            try:
                a.start_banks()
                a.run()
            finally:
                if a.banks is not None:
                    a.banks.stop()
    print(f"\nPart B: audit writers, {args.writer_concurrency} records in flight each")
    print(line(B_COLUMNS))
    audit = []
    for k in args.writers:
        audit.append(quietly(args, partial(audit_writes, args, pg, k), B_COLUMNS))
    s = summarise(a, audit)
    report = {"machine": info, "settings": {k: str(v) for k, v in vars(args).items()},
              "replicas": a.runs, "audit": audit, "summary": s}  # fmt: skip
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print()
    for key, value in s.items():
        if key != "medians":
            print(f"{key}: {show(value)}")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
