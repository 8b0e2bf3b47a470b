"""Benchmark: hub throughput against the number of worker processes (`txverify hub --workers N`).

    python bench/workers_bench.py [--workers 1,2] [--seconds 5] [--rounds 3]
                                  [--concurrency 64] [--load-procs 2] [--json FILE]

Processes: the simulated banks (one process), the hub (a fresh supervisor and
its workers per run, audit on, one database file), and the load (--load-procs
processes, closed loop, --concurrency requests in flight in all, each with its
own request id, spread over 8 connections per process so that the kernel gives
every worker some). Printed per run: requests/s, p50/p99 latency, the hub's CPU
seconds per 1,000 verifications (supervisor and workers together) and the
banks'. Everything shares this machine's cores: on a small machine the load
generator and the banks take cores the workers would use, so read the
throughput next to `cores` and the CPU figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

import grpc  # noqa: E402

from txverify.v1 import (  # noqa: E402
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

BANKS = "002,014"
CONNECTIONS_PER_PROC = 8


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clients.cli", *args]


def _ready(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("TXVERIFY-READY "):
            ready: dict[str, Any] = json.loads(line.split(" ", 1)[1])
            return ready
    raise RuntimeError("process exited before it was ready")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[int]:
    """A process and its children (the supervisor and its workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


def load(address: str, qrs: list[str], concurrency: int, seconds: float, conn: Connection) -> None:
    async def main() -> list[float]:
        # A subchannel pool of its own per channel: one TCP connection each, which
        # SO_REUSEPORT hands to one worker (shared subchannels would be one connection).
        channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS_PER_PROC)
        ]
        stubs = [verification_pb2_grpc.VerificationServiceStub(c) for c in channels]
        rng = random.Random(os.getpid())
        latencies: list[float] = []
        errors = 0
        prefix = f"w{os.getpid()}-{time.monotonic_ns()}-"
        counter = 0
        start = time.perf_counter()

        async def worker(i: int) -> None:
            nonlocal errors, counter
            stub = stubs[i % len(stubs)]
            while (sent := time.perf_counter()) < start + seconds:
                counter += 1
                request = verification_pb2.VerifyRequest(
                    qr_text=rng.choice(qrs), request_id=f"{prefix}{counter}"
                )
                try:
                    await stub.Verify(request, timeout=10, metadata=(("x-member-id", "002"),))
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        for c in channels:
            await c.close()
        if errors:
            raise RuntimeError(f"{errors} verifications failed: the benchmark is invalid")
        return latencies

    conn.send(asyncio.run(main()))


def _clients(address: str, qrs: list[str], args: argparse.Namespace, seconds: float) -> list[float]:
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for i in range(args.load_procs):
        parent, child = ctx.Pipe()
        share = args.concurrency // args.load_procs + (i < args.concurrency % args.load_procs)
        procs.append(ctx.Process(target=load, args=(address, qrs, share, seconds, child)))
        pipes.append(parent)
    for p in procs:
        p.start()
    latencies = [x for parent in pipes for x in parent.recv()]
    for p in procs:
        p.join()
    return latencies


@dataclass
class Figures:
    workers: int
    round: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    hub_cpu_s_per_1k: float
    banks_cpu_s_per_1k: float


def measure(
    workers: int,
    rnd: int,
    members: Path,
    qrs: list[str],
    args: argparse.Namespace,
    tmp: Path,
    banks_pid: int,
) -> Figures:
    db = tmp / f"hub-{workers}-{rnd}.sqlite"
    hub = subprocess.Popen(
        _cli("hub", "--members", str(members), "--port", "0", "--ready-line",
             "--db", f"sqlite:///{db}", "--workers", str(workers), "--log-level", "WARNING"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        address = _ready(hub)["address"]
        _clients(address, qrs, args, 1.0)  # warm up
        family = _family(hub.pid)
        cpu0 = sum(_cpu_seconds(p) for p in family)
        banks0 = _cpu_seconds(banks_pid)
        latencies = _clients(address, qrs, args, args.seconds)
        cpu = sum(_cpu_seconds(p) for p in family) - cpu0
        banks = _cpu_seconds(banks_pid) - banks0
    finally:
        hub.terminate()
        hub.wait(timeout=30)
    latencies.sort()
    n = len(latencies)
    return Figures(workers, rnd, n, n / args.seconds, latencies[n // 2] * 1000,
                   latencies[int(n * 0.99)] * 1000, cpu / n * 1000, banks / n * 1000)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,4")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight in all")
    parser.add_argument("--load-procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="txverify-bench-") as tmpdir:
        tmp = Path(tmpdir)
        banks = subprocess.Popen(
            _cli("banks", "--codes", BANKS, "--transactions", "2000", "--log-level", "WARNING"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            ready = _ready(banks)
            members = tmp / "members.toml"
            members.write_text(
                "\n".join(
                    f'[[member]]\ncode = "{b["code"]}"\nname = "{b["name"]}"\n'
                    f'issuer_endpoint = "{b["address"]}"\n'
                    for b in ready["banks"]
                )
            )
            qrs: list[str] = []
            with grpc.insecure_channel(ready["control"]) as channel:
                stub = simulator_pb2_grpc.BankSimulatorStub(channel)
                for b in ready["banks"]:
                    page = stub.ListTransactions(
                        simulator_pb2.ListTransactionsRequest(bank=b["code"], page_size=1000)
                    )
                    qrs += [
                        s.qr_text for s in page.slips if s.state == simulator_pb2.SLIP_STATE_VISIBLE
                    ]
            results: list[Figures] = []
            header = f"{'workers':>7} {'round':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
            print(f"{header} {'hub CPU s/1k':>13} {'banks CPU s/1k':>15}")
            for rnd in range(1, args.rounds + 1):
                for workers in counts:
                    f = measure(workers, rnd, members, qrs, args, tmp, banks.pid)
                    results.append(f)
                    row = f"{f.workers:>7} {f.round:>5} {f.rps:>8.0f} {f.p50_ms:>8.2f}"
                    print(
                        f"{row} {f.p99_ms:>8.2f} {f.hub_cpu_s_per_1k:>13.3f}"
                        f" {f.banks_cpu_s_per_1k:>15.3f}",
                        flush=True,
                    )
        finally:
            banks.terminate()
            banks.wait(timeout=20)

    def med(workers: int, attr: str) -> float:
        return float(statistics.median(getattr(f, attr) for f in results if f.workers == workers))

    summary: dict[str, Any] = {
        "cores": os.cpu_count(),
        "median": {
            str(w): {a: med(w, a) for a in ("rps", "p50_ms", "p99_ms", "hub_cpu_s_per_1k")}
            for w in counts
        },
    }
    base = counts[0]
    for w in counts:
        ratio = med(w, "rps") / med(base, "rps")
        summary["median"][str(w)]["rps_over_" + str(base)] = ratio
        print(
            f"{w} workers (median): {med(w, 'rps'):.0f} req/s ({ratio:.2f}x of {base}), "
            f"p50 {med(w, 'p50_ms'):.2f} ms, hub CPU {med(w, 'hub_cpu_s_per_1k'):.3f} s/1k"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(f) for f in results], "summary": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
