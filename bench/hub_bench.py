"""Benchmark: the hub with audit, duplicate detection and idempotency on, against the same hub
with them off, side by side in one run.

    python bench/hub_bench.py [--seconds 5] [--rounds 3] [--rate 600] [--json FILE]

Processes: the simulated banks (one process), the hub (a fresh process per run,
`--no-audit` for "off"), and the load (another process, open loop at --rate
requests/s, each request with its own request id, so the idempotency lookup is
paid too). Printed per configuration and round: requests/s, p50/p99 latency
and the hub's CPU seconds per 1,000 verifications; then the ratios. On a 2-core
machine the load generator and the banks compete with the hub for the cores,
so the capacity ratio (from hub CPU per request, at equal offered load) is the
figure to read; --rate 0 runs closed loop and reports the throughput reached.
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

from txverify.cli.faultlab.processes import cpu_seconds  # noqa: E402
from txverify.cli.network import cli_argv  # noqa: E402
from txverify.v1 import (  # noqa: E402
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

BANKS = "002,014"


def _ready(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("TXVERIFY-READY "):
            ready: dict[str, Any] = json.loads(line.split(" ", 1)[1])
            return ready
    raise RuntimeError("process exited before it was ready")


def load(
    address: str, qrs: list[str], rate: float, concurrency: int, seconds: float, conn: Connection
) -> None:
    async def main() -> list[float]:
        channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
        stubs = [verification_pb2_grpc.VerificationServiceStub(c) for c in channels]
        rng = random.Random(os.getpid())
        latencies: list[float] = []
        errors = 0
        prefix = f"b{os.getpid()}-{time.monotonic_ns()}-"
        counter = 0

        async def one(stub: Any, scheduled: float) -> None:
            nonlocal errors, counter
            counter += 1
            request = verification_pb2.VerifyRequest(
                qr_text=rng.choice(qrs), request_id=f"{prefix}{counter}"
            )
            try:
                await stub.Verify(request, timeout=10, metadata=(("x-member-id", "002"),))
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies.append(time.perf_counter() - scheduled)

        start = time.perf_counter()
        if rate > 0:
            tasks = []
            for i in range(int(rate * seconds)):
                scheduled = start + i / rate
                if (wait := scheduled - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(one(stubs[i % len(stubs)], scheduled)))
            await asyncio.gather(*tasks)
        else:

            async def worker(i: int) -> None:
                while time.perf_counter() < start + seconds:
                    await one(stubs[i % len(stubs)], time.perf_counter())

            await asyncio.gather(*(worker(i) for i in range(concurrency)))
        for c in channels:
            await c.close()
        if errors:
            raise RuntimeError(f"{errors} verifications failed: the benchmark is invalid")
        return latencies

    conn.send(asyncio.run(main()))


@dataclass
class Figures:
    config: str
    round: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    hub_cpu_s_per_1k: float


def _clients(
    address: str, qrs: list[str], args: argparse.Namespace, seconds: float
) -> tuple[list[float], float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=load, args=(address, qrs, args.rate, args.concurrency, seconds, child))
    started = time.perf_counter()
    p.start()
    latencies: list[float] = parent.recv()
    elapsed = time.perf_counter() - started
    p.join()
    return latencies, elapsed


def measure(
    config: str, rnd: int, members: Path, qrs: list[str], args: argparse.Namespace, tmp: Path
) -> Figures:
    extra = (
        ["--no-audit"] if config == "off" else ["--db", f"sqlite:///{tmp / f'hub-{rnd}.sqlite'}"]
    )
    hub = subprocess.Popen(
        cli_argv("hub", "--members", str(members), "--port", "0", "--ready-line", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        address = _ready(hub)["address"]
        _clients(address, qrs, args, 1.0)  # warm up
        cpu0 = cpu_seconds(hub.pid)
        latencies, _ = _clients(address, qrs, args, args.seconds)
        cpu = cpu_seconds(hub.pid) - cpu0
    finally:
        hub.terminate()
        hub.wait(timeout=20)
    latencies.sort()
    n = len(latencies)
    return Figures(config, rnd, n, n / args.seconds, latencies[n // 2] * 1000,
                   latencies[int(n * 0.99)] * 1000, cpu / n * 1000)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=600, help="open loop rate; 0 = closed loop")
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: in flight")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="txverify-bench-") as tmpdir:
        tmp = Path(tmpdir)
        banks = subprocess.Popen(
            cli_argv("banks", "--codes", BANKS, "--transactions", "2000", "--log-level", "WARNING"),
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
            header = f"{'config':<8} {'round':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
            print(f"{header} {'hub CPU s/1k':>13}")
            for rnd in range(1, args.rounds + 1):
                for config in ("off", "on"):
                    f = measure(config, rnd, members, qrs, args, tmp)
                    results.append(f)
                    row = f"{f.config:<8} {f.round:>5} {f.rps:>8.0f} {f.p50_ms:>8.2f}"
                    print(f"{row} {f.p99_ms:>8.2f} {f.hub_cpu_s_per_1k:>13.3f}", flush=True)
        finally:
            banks.terminate()
            banks.wait(timeout=20)

    def med(config: str, attr: str) -> float:
        return float(statistics.median(getattr(f, attr) for f in results if f.config == config))

    summary = {
        "rps_ratio_on_over_off": med("on", "rps") / med("off", "rps"),
        "cpu_capacity_ratio_on_over_off": med("off", "hub_cpu_s_per_1k")
        / med("on", "hub_cpu_s_per_1k"),
        "p50_ms_on": med("on", "p50_ms"),
        "p50_ms_off": med("off", "p50_ms"),
        "cores": os.cpu_count(),
    }
    print(
        f"audit on/off throughput ratio (median): {summary['rps_ratio_on_over_off']:.2f}\n"
        f"audit on/off capacity ratio by hub CPU per request (median): "
        f"{summary['cpu_capacity_ratio_on_over_off']:.2f}\n"
        f"p50 latency: on {summary['p50_ms_on']:.2f} ms, off {summary['p50_ms_off']:.2f} ms"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(f) for f in results], "summary": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
