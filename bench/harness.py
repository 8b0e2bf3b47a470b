"""The performance harness: the hub with every feature on against a bare pass-through yardstick,
side by side in one run, alternating, with the same simulated banks and the same load.

    python bench/harness.py [--seconds 5] [--rounds 2] [--json bench-results.json]
    make bench          # short: under 3 minutes on 2 cores
    make bench-full     # longer rounds, 2 hub workers too, and a 1-million-verification soak

Processes, all on loopback: the simulated banks (one process), the yardstick
(bench/yardstick.py: receives Verify, forwards IssuerInquiry, returns the
transaction, nothing else) and the hub (`txverify hub`: identity, membership,
rate limits, QR decoding, expectations, duplicates, durable audit, metrics and
its per-RPC log line, all on). The load comes from the project's load generator
(several processes, many HTTP/2 connections, each request with its own request
id) and, when `h2load` is installed (Debian package nghttp2-client), from h2load
too, a load source that costs far less CPU than a Python client.

Each measurement reports throughput, p50/p99/p99.9 latency, CPU seconds per
1,000 requests for every process (the server measured, the banks, the load) and
peak RSS; then the ratios hub/yardstick. On a machine with few cores the load,
the banks and the server under test share the cores, so the throughput ratio
understates what the hub would do alone; CPU per request is the figure that
does not depend on the core count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

import grpc  # noqa: E402

from txverify.cli.faultlab.processes import Server, start_banks, start_server  # noqa: E402
from txverify.cli.load.engine import run_load  # noqa: E402
from txverify.cli.load.plan import LoadPlan  # noqa: E402
from txverify.cli.network import cli_argv  # noqa: E402
from txverify.v1 import (  # noqa: E402
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

BANKS = "002,014"
REQUESTER = "014"  # the member the load speaks for (dev mode: x-member-id)
WORKERS = "hub-workers"  # the hub with --compare-workers processes, on its own database
POSTGRES = "hub-pg"  # the hub on PostgreSQL (--postgres)
LOW, LOW_RATE = "low", 200.0  # the PostgreSQL hub at 200 req/s: batches of one or two


# --- processes ------------------------------------------------------------------------------


def _hub_errors(log: Path, start: int) -> int:
    """Verify RPCs the hub logged with a status other than OK, after byte `start` of its log."""
    with log.open("rb") as f:
        f.seek(start)
        lines = f.read().splitlines()
    errors = 0
    for line in lines:
        if b'"message": "verify"' in line and b'"status": "OK"' not in line:
            errors += 1
    return errors


# --- measurements ---------------------------------------------------------------------------


def fsync_p50_ms(directory: Path, count: int = 300) -> float:
    """The disk's fsync p50 where the hub's database is: append 4 KiB, fdatasync, `count` times.

    The hub cannot answer before its audit record's fsync: this is the floor the
    added half-load latency is judged against."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"\0" * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


@dataclass
class Run:
    target: str  # yardstick | hub
    source: str  # loadgen | h2load
    mode: str  # max (closed loop) | half (open loop at half the hub's capacity)
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    failed: int
    cpu_s_per_1k: dict[str, float]  # process -> CPU seconds per 1,000 requests
    errors: dict[str, int] = field(default_factory=dict)  # outcome -> count, when failed


def bench_settings(seconds: float, **changed: Any) -> argparse.Namespace:
    """The harness's settings for a script that drives a Bench of its own (compare.py,
    image_mix.py): one round of `seconds`, h2load on, the load generator's usual shape."""
    settings = argparse.Namespace(
        seconds=seconds, rounds=1, procs=2, connections=8, concurrency=64,
        transactions=2000, workers=1, half_rate=0.0, h2load=True, soak=0, profile=None,
        compare_workers=0, postgres="",
    )  # fmt: skip
    for name, value in changed.items():
        setattr(settings, name, value)
    return settings


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.servers: dict[str, Server] = {}
        self.banks: Server | None = None
        self.qrs: list[str] = []
        self.runs: list[Run] = []
        self.postgres_url = ""  # a fresh schema's, when the PostgreSQL hub is measured
        self.fsync_p50_ms = float("nan")

    # set-up

    def start(self) -> None:
        a = self.args
        self.banks, members = start_banks(
            self.tmp, "--codes", BANKS, "--transactions", str(a.transactions),
            "--log-level", "WARNING",
        )  # fmt: skip
        ready = self.banks.ready
        with grpc.insecure_channel(ready["control"]) as channel:
            stub = simulator_pb2_grpc.BankSimulatorStub(channel)
            for b in ready["banks"]:
                page = stub.ListTransactions(
                    simulator_pb2.ListTransactionsRequest(bank=b["code"], page_size=1000)
                )
                self.qrs += [
                    s.qr_text for s in page.slips if s.state == simulator_pb2.SLIP_STATE_VISIBLE
                ]
        bank_args = [f"--bank={b['code']}={b['address']}" for b in ready["banks"]]
        self.servers["yardstick"] = start_server(
            "yardstick",
            [sys.executable, str(ROOT / "bench" / "yardstick.py"), *bank_args],
            self.tmp / "yardstick.log",
        )
        hub = ["hub", "--members", str(members), "--port", "0", "--ready-line",
               "--metrics-port", "0", "--rate-limit-rps", "1000000",
               "--rate-limit-burst", "100000"]  # fmt: skip
        self.servers["hub"] = start_server(
            "hub",
            cli_argv(*hub, "--db", f"sqlite:///{self.tmp / 'hub.sqlite'}",
                 *(["--workers", str(a.workers)] if a.workers != 1 else [])),
            self.tmp / "hub.log",
        )  # fmt: skip
        if a.compare_workers:
            self.servers[WORKERS] = start_server(
                WORKERS,
                cli_argv(*hub, "--db", f"sqlite:///{self.tmp / 'hub-workers.sqlite'}",
                     "--workers", str(a.compare_workers)),
                self.tmp / f"{WORKERS}.log",
            )  # fmt: skip
        if self.postgres_url:
            self.servers[POSTGRES] = start_server(
                POSTGRES, cli_argv(*hub, "--db", self.postgres_url), self.tmp / f"{POSTGRES}.log"
            )
        for name, server in self.servers.items():
            self._check(name, server.address)

    def _check(self, name: str, address: str) -> None:
        """One verification through `address` must answer OK, or the bench measures errors."""
        with grpc.insecure_channel(address) as channel:
            stub = verification_pb2_grpc.VerificationServiceStub(channel)
            answer = stub.Verify(
                verification_pb2.VerifyRequest(qr_text=self.qrs[0]),
                metadata=(("x-member-id", REQUESTER),),
                timeout=10,
            )
        if not answer.transaction.trans_ref:
            raise RuntimeError(f"{name} answered without a transaction")

    def stop(self) -> None:
        for server in [*self.servers.values(), self.banks]:
            if server is not None:
                server.stop()

    # one measurement

    def _cpu(self, target: str) -> dict[str, float]:
        assert self.banks is not None
        return {target: self.servers[target].cpu(), "banks": self.banks.cpu()}

    def loadgen(self, target: str, mode: str, rnd: int, rate: float = 0.0) -> Run:
        a = self.args
        plan = LoadPlan(
            hub=self.servers[target].address,
            member=REQUESTER,
            pools={"valid": tuple(self.qrs)},
            mix=(("valid", 1),),
            rate=rate,
            concurrency=a.concurrency,
            duration=a.seconds,
            connections=a.connections,
            procs=a.procs,
            check=False,
        )
        before = self._cpu(target)
        result = run_load(plan)
        after = self._cpu(target)
        n = result.requests
        cpu = {k: (after[k] - before[k]) / n * 1000 for k in before}
        cpu["load"] = result.total.cpu_seconds / n * 1000
        return Run(
            target, "loadgen", mode, rnd, n, result.total.elapsed, result.throughput,
            result.latency_us(50) / 1000, result.latency_us(99) / 1000,
            result.latency_us(99.9) / 1000, result.failed_count + result.wrong_count, cpu,
            {f"{k}/{o}": v for (k, o), v in (result.total.failed + result.total.wrong).items()},
        )  # fmt: skip

    def h2load(self, target: str, rnd: int, headers: tuple[str, ...] = ()) -> Run:
        """h2load's closed loop on `target`; `headers` ("name: value") go with each request."""
        a = self.args
        request = verification_pb2.VerifyRequest(qr_text=self.qrs[0]).SerializeToString()
        body = self.tmp / "verify.grpc"
        body.write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
        log = self.tmp / "h2load.log"
        log.unlink(missing_ok=True)  # h2load appends to its log file
        server = self.servers[target]
        hub_log = self.tmp / f"{target}.log"
        log_start = hub_log.stat().st_size if target != "yardstick" else 0
        before = self._cpu(target)
        t0 = time.perf_counter()
        out = subprocess.run(
            ["h2load", "-c", str(a.connections), "-m", str(max(1, a.concurrency // a.connections)),
             "-D", str(max(1, round(a.seconds))), "--log-file", str(log), "-d", str(body),
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             "-H", f"x-member-id: {REQUESTER}", *(f for h in headers for f in ("-H", h)),
             f"http://{server.address}/txverify.v1.VerificationService/Verify"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
        after = self._cpu(target)
        times = sorted(
            int(line.split("\t")[2])
            for line in log.read_text().splitlines()
            if line.count("\t") == 2 and line.split("\t")[1] == "200"
        )
        n = len(times)
        failed = sum(1 for line in log.read_text().splitlines() if "\t200\t" not in line)
        if target != "yardstick":
            # gRPC errors travel as HTTP 200 with a grpc-status trailer, which h2load does
            # not read: count them from the hub's log line per RPC.
            failed += _hub_errors(hub_log, log_start)
        if not n:
            raise RuntimeError(f"h2load got no answers from {target}:\n{out.stdout}")
        cpu = {k: (after[k] - before[k]) / n * 1000 for k in before}
        cpu["load"] = float("nan")  # h2load's own CPU is not measured (it is C, and small)

        def pct(p: float) -> float:
            return times[min(n - 1, int(n * p / 100))] / 1000

        return Run(target, "h2load", "max", rnd, n, elapsed, n / max(1, round(a.seconds)),
                   pct(50), pct(99), pct(99.9), failed, cpu)  # fmt: skip

    def record(self, run: Run) -> None:
        self.runs.append(run)
        cpu = "  ".join(f"{k} {v:.3f}" for k, v in run.cpu_s_per_1k.items() if v == v)
        print(
            f"{run.target:<9} {run.source:<7} {run.mode:<4} {run.round:>2} "
            f"{run.rps:>8.0f} {run.p50_ms:>7.2f} {run.p99_ms:>7.2f} {run.p999_ms:>8.2f} "
            f"{run.failed:>6}  {cpu}",
            flush=True,
        )
        if run.failed:
            print(
                f"  !! {run.failed} requests failed, this measurement is not clean: {run.errors}",
                flush=True,
            )

    # the whole run

    def measure(self) -> None:
        a = self.args
        print(
            f"{'target':<9} {'source':<7} {'mode':<4} {'rd':>2} {'req/s':>8} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'p99.9 ms':>8} {'failed':>6}  CPU s per 1,000 requests",
            flush=True,
        )
        # A first short run warms both servers (channels up, caches, JIT-free Python anyway).
        for target in self.servers:
            self.loadgen(target, "max", 0)
        if a.profile:
            self.profile(a.profile)
        targets = list(self.servers)
        for rnd in range(1, a.rounds + 1):
            order = targets if rnd % 2 else targets[::-1]
            for target in order:
                self.record(self.loadgen(target, "max", rnd))
            if a.h2load:
                for target in order:
                    self.record(self.h2load(target, rnd))
        rate = a.half_rate or 0.5 * self.median("hub", "loadgen", "max", "rps")
        self.half_rate = rate
        for rnd in range(1, a.rounds + 1):
            order = targets if rnd % 2 else targets[::-1]
            for target in order:
                self.record(self.loadgen(target, "half", rnd, rate=rate))
            if POSTGRES in self.servers:  # batches of one or two: its cost per record
                self.record(self.loadgen(POSTGRES, LOW, rnd, rate=LOW_RATE))
                # The same rate through the yardstick: what gRPC alone costs more a
                # request at low load (a reference for the target, not a target).
                self.record(self.loadgen("yardstick", LOW, rnd, rate=LOW_RATE))

    def profile(self, out: Path) -> None:
        """A py-spy flame graph of the hub under the closed-loop load (not a measurement)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            raise SystemExit("--profile needs py-spy: make bench installs it (the bench extra)")
        hub = self.servers["hub"].popen.pid
        seconds = max(1, round(self.args.seconds))
        # An .svg is a flame graph; any other name gets py-spy's collapsed stacks
        # (one line a stack, with its sample count), for summing by function.
        fmt = "flamegraph" if out.suffix == ".svg" else "raw"
        with subprocess.Popen(
            [spy, "record", "--pid", str(hub), "--duration", str(seconds), "--rate", "250",
             "--nonblocking", "--format", fmt, "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ) as recorder:  # fmt: skip
            self.loadgen("hub", "max", 0)
            recorder.wait()
        print(f"profile of the hub under load: {out}", flush=True)

    def median(self, target: str, source: str, mode: str, attr: str) -> float:
        values = [
            getattr(r, attr)
            for r in self.runs
            if (r.target, r.source, r.mode) == (target, source, mode)
        ]
        return float(statistics.median(values)) if values else float("nan")

    def median_cpu(self, target: str, source: str, mode: str, process: str) -> float:
        values = [
            r.cpu_s_per_1k[process]
            for r in self.runs
            if (r.target, r.source, r.mode) == (target, source, mode)
        ]
        return float(statistics.median(values)) if values else float("nan")

    def soak(self, requests: int) -> dict[str, Any]:
        """`requests` verifications through the hub; its RSS sampled every few seconds."""
        hub = self.servers["hub"]
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not done.wait(5.0):
                samples.append((round(time.monotonic() - t0, 1), round(hub.rss_mb(), 1)))
                print(f"  soak: {samples[-1][0]:>6.0f} s  hub RSS {samples[-1][1]:.1f} MB",
                      flush=True)  # fmt: skip

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        plan = LoadPlan(
            hub=hub.address,
            member=REQUESTER,
            pools={"valid": tuple(self.qrs)},
            mix=(("valid", 1),),
            concurrency=self.args.concurrency,
            duration=None,
            requests=requests,
            connections=self.args.connections,
            procs=self.args.procs,
            check=False,
            timeout=30.0,
        )
        print(f"soak: {requests:,} verifications through the hub", flush=True)
        result = run_load(plan)
        done.set()
        thread.join()
        return {
            "requests": result.requests,
            "failed": result.failed_count,
            "seconds": round(result.total.elapsed, 1),
            "rps": round(result.throughput, 1),
            "rss_mb_samples": samples,
            "rss_mb_end": round(hub.rss_mb(), 1),
            "peak_rss_mb": round(hub.peak_rss_mb(), 1),
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "kernel": platform.release(),
    }


Target = tuple[str, float, str, float]  # (what, measured, operator, bound)


def summarise(bench: Bench, soak: dict[str, Any] | None) -> dict[str, Any]:
    def ratio(target: str, source: str, mode: str, attr: str, base: str = "yardstick") -> float:
        return bench.median(target, source, mode, attr) / bench.median(base, source, mode, attr)

    def cpu(target: str, source: str = "loadgen", mode: str = "max") -> float:
        return bench.median_cpu(target, source, mode, target)

    def added(target: str, attr: str) -> float:
        return bench.median(target, "loadgen", "half", attr) - bench.median(
            "yardstick", "loadgen", "half", attr
        )

    fsync = bench.fsync_p50_ms
    s: dict[str, Any] = {
        "throughput_ratio_loadgen": ratio("hub", "loadgen", "max", "rps"),
        "cpu_per_request_ratio_loadgen": cpu("hub") / cpu("yardstick"),
        "cpu_per_request_ratio_half_load": cpu("hub", mode="half") / cpu("yardstick", mode="half"),
        "hub_cpu_s_per_1k": cpu("hub"),
        "yardstick_cpu_s_per_1k": cpu("yardstick"),
        "half_load_rps": bench.half_rate,
        "added_p50_ms_half_load": added("hub", "p50_ms"),
        "added_p99_ms_half_load": added("hub", "p99_ms"),
        "fsync_p50_ms": fsync,
        "peak_rss_mb": {name: round(s.peak_rss_mb(), 1) for name, s in bench.servers.items()},
    }
    targets: list[Target] = [
        ("hub CPU per verification <= 1.2 x yardstick, full load (loadgen)",
         s["cpu_per_request_ratio_loadgen"], "<=", 1.2),
    ]  # fmt: skip
    if bench.args.h2load:
        s["throughput_ratio_h2load"] = ratio("hub", "h2load", "max", "rps")
        s["cpu_per_request_ratio_h2load"] = cpu("hub", "h2load") / cpu("yardstick", "h2load")
        targets.append(
            ("hub CPU per verification <= 1.2 x yardstick, full load (h2load)",
             s["cpu_per_request_ratio_h2load"], "<=", 1.2)
        )  # fmt: skip
    targets += [
        ("hub CPU per verification <= 1.3 x yardstick, half load (loadgen)",
         s["cpu_per_request_ratio_half_load"], "<=", 1.3),
        ("hub throughput >= 0.85 x yardstick (loadgen)", s["throughput_ratio_loadgen"], ">=", 0.85),
    ]  # fmt: skip
    if bench.args.h2load:
        targets.append(
            ("hub throughput >= 0.85 x yardstick (h2load)",
             s["throughput_ratio_h2load"], ">=", 0.85)
        )  # fmt: skip
    targets += [
        (f"added p50 at half load <= fsync p50 + 0.3 ms ({fsync + 0.3:.2f} ms)",
         s["added_p50_ms_half_load"], "<=", fsync + 0.3),
        ("added p99 at half load <= 5 ms", s["added_p99_ms_half_load"], "<=", 5.0),
    ]  # fmt: skip
    if POSTGRES in bench.servers:
        s["postgres_cpu_s_per_1k"] = cpu(POSTGRES)
        s["postgres_cpu_s_per_1k_at_200"] = cpu(POSTGRES, mode=LOW)
        s["cpu_per_request_ratio_postgres"] = cpu(POSTGRES) / cpu("hub")
        s["cpu_per_request_ratio_postgres_200_vs_full"] = cpu(POSTGRES, mode=LOW) / cpu(POSTGRES)
        s["cpu_per_request_ratio_yardstick_200_vs_full"] = cpu("yardstick", mode=LOW) / cpu(
            "yardstick"
        )
        targets += [
            ("PostgreSQL hub CPU per verification <= 1.1 x SQLite hub's, full load (loadgen)",
             s["cpu_per_request_ratio_postgres"], "<=", 1.1),
            (f"PostgreSQL hub CPU per verification at {LOW_RATE:.0f} req/s <= 1.5 x its full load",
             s["cpu_per_request_ratio_postgres_200_vs_full"], "<=", 1.5),
        ]  # fmt: skip
    if WORKERS in bench.servers:
        n = bench.args.compare_workers
        s["workers"] = n
        s["cpu_per_request_ratio_workers"] = cpu(WORKERS) / cpu("hub")
        s["added_p50_ms_half_load_workers"] = added(WORKERS, "p50_ms")
        s["added_p99_ms_half_load_workers"] = added(WORKERS, "p99_ms")
        targets += [
            (f"{n} workers: hub CPU per verification <= 1.1 x one worker's, full load (loadgen)",
             s["cpu_per_request_ratio_workers"], "<=", 1.1),
            (f"{n} workers: added p50 at half load <= fsync p50 + 0.3 ms ({fsync + 0.3:.2f} ms)",
             s["added_p50_ms_half_load_workers"], "<=", fsync + 0.3),
            (f"{n} workers: added p99 at half load <= 5 ms",
             s["added_p99_ms_half_load_workers"], "<=", 5.0),
        ]  # fmt: skip
    if soak is not None:
        s["soak"] = soak
        targets.append(
            (f"hub peak RSS < 150 MB after {soak['requests']:,} verifications",
             soak["peak_rss_mb"], "<", 150.0)
        )  # fmt: skip
    s["targets"] = [
        {
            "target": name,
            "measured": round(value, 3),
            "bound": round(bound, 3),
            "met": {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op],
        }
        for name, value, op, bound in targets
    ]
    return s


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema (dropped afterwards); "" when
    PostgreSQL cannot be reached (its targets are then reported as not measured)."""
    if not url:
        yield ""
        return
    try:
        import psycopg
        from psycopg import sql

        admin = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except Exception as exc:
        print(f"PostgreSQL at {url} not reachable ({exc}): its targets are not measured")
        yield ""
        return
    name = sql.Identifier(f"bench_harness_{os.getpid()}_{int(time.time())}")
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        try:
            sep = "&" if "?" in url else "?"
            yield f"{url}{sep}options=-csearch_path%3D{name.as_string(admin)}"
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(name))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=8, help="HTTP/2 connections in all")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight in all")
    parser.add_argument("--transactions", type=int, default=2000, help="per simulated bank")
    parser.add_argument("--workers", type=int, default=1, help="hub worker processes")
    parser.add_argument(
        "--compare-workers",
        type=int,
        default=0,
        metavar="N",
        help="also measure a hub of N workers against the one of --workers (0: not)",
    )
    parser.add_argument(
        "--postgres",
        default="",
        metavar="URL",
        help="also measure a hub on this PostgreSQL (a fresh schema, dropped afterwards)",
    )
    parser.add_argument("--half-rate", type=float, default=0.0, help="default: half the hub's max")
    parser.add_argument(
        "--h2load",
        action=argparse.BooleanOptionalAction,
        default=shutil.which("h2load") is not None,
        help="also load with h2load (default: when installed)",
    )
    parser.add_argument(
        "--soak", type=int, default=0, help="then this many verifications, watching hub RSS"
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--profile",
        type=Path,
        help="also profile the hub under load (py-spy): .svg a flame graph, else collapsed stacks",
    )
    args = parser.parse_args()
    if args.h2load and shutil.which("h2load") is None:
        parser.error("--h2load: h2load is not installed (Debian package nghttp2-client)")
    print(json.dumps(machine()), flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="txverify-harness-") as tmpdir,
        postgres_schema(args.postgres) as postgres_url,
    ):
        bench = Bench(args, Path(tmpdir))
        bench.postgres_url = postgres_url
        bench.fsync_p50_ms = fsync_p50_ms(Path(tmpdir))
        print(f"fsync p50 where the hub's database is: {bench.fsync_p50_ms:.3f} ms", flush=True)
        try:
            bench.start()
            bench.measure()
            soak = bench.soak(args.soak) if args.soak else None
            summary = summarise(bench, soak)
        finally:
            bench.stop()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {
        "machine": machine(),
        "settings": settings,
        "runs": [asdict(r) for r in bench.runs],
        "summary": summary,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(
        f"hub/yardstick, medians: throughput (loadgen) {summary['throughput_ratio_loadgen']:.2f}"
        + (
            f", throughput (h2load) {summary['throughput_ratio_h2load']:.2f}"
            if "throughput_ratio_h2load" in summary
            else ""
        )
        + f"; CPU per request {summary['cpu_per_request_ratio_loadgen']:.2f} "
        f"(hub {summary['hub_cpu_s_per_1k']:.3f} s, "
        f"yardstick {summary['yardstick_cpu_s_per_1k']:.3f} s per 1,000)"
    )
    print(
        f"added latency at half load ({summary['half_load_rps']:.0f} req/s): "
        f"p50 {summary['added_p50_ms_half_load']:+.3f} ms, "
        f"p99 {summary['added_p99_ms_half_load']:+.3f} ms"
    )
    print("peak RSS: " + ", ".join(f"{k} {v} MB" for k, v in summary["peak_rss_mb"].items()))
    print("targets:")
    for t in summary["targets"]:
        print(f"  [{'met' if t['met'] else 'NOT met':>7}] {t['target']}: {t['measured']}")
    if args.postgres and POSTGRES not in bench.servers:
        print("  [not measured] the PostgreSQL targets: PostgreSQL was not reachable")
    if "cpu_per_request_ratio_yardstick_200_vs_full" in summary:
        print(
            f"  (reference: the yardstick at {LOW_RATE:.0f} req/s costs "
            f"{summary['cpu_per_request_ratio_yardstick_200_vs_full']:.2f} x its full-load CPU "
            "per request)"
        )
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
