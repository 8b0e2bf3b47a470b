"""Benchmark: one simulated bank's IssuerInquiry rate against a bare grpc.aio yardstick.

The yardstick is a grpc.aio server answering IssuerInquiry with a constant
response of the same size as the bank's real answers (one real answer,
serialized once). Both run in their own process, one after the other and
alternating, against the same load (client processes apart from the server),
in one invocation: figures are ratios measured side by side.

    python bench/bank_bench.py [--seconds 5] [--rounds 3] [--rate 1500] [--json FILE]

On a 2-core machine a Python load generator saturates before a Python
server does, so "rate" is measured as capacity: the server's CPU seconds per
1,000 answers under the same offered load (open loop, --rate), whose inverse
is the answers one CPU-second buys. --rate 0 runs closed loop instead and
reports the throughput the client reached. Printed per configuration and
round: requests/s, p50/p99 latency, server CPU s/1k; then the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

import grpc  # noqa: E402

from txverify.cli.faultlab.processes import cpu_seconds  # noqa: E402
from txverify.v1 import common_pb2, issuer_pb2, issuer_pb2_grpc  # noqa: E402

BANK = "014"


# --- servers (each in its own process) -----------------------------------------------------


class _Constant(issuer_pb2_grpc.IssuerServiceServicer):
    def __init__(self, response: issuer_pb2.IssuerInquiryResponse) -> None:
        self.response = response

    async def IssuerInquiry(
        self, request: issuer_pb2.IssuerInquiryRequest, context: Any
    ) -> issuer_pb2.IssuerInquiryResponse:
        return self.response


def serve(kind: str, transactions: int, conn: Connection) -> None:
    """Run the bank or the yardstick; send (port, refs); stop when told."""

    async def main() -> None:
        from txverify.runtime.grpcserver import bind, new_server
        from txverify.simulators.server import start_simulator
        from txverify.simulators.settings import SimulatorSettings

        sim = await start_simulator(SimulatorSettings(codes=(BANK,), transactions=transactions))
        bank = sim.nodes[BANK].bank
        refs = [s.transaction.trans_ref for s in bank.list_slips(transactions, None)
                if bank.visibility(s.transaction).value == "VISIBLE"]  # fmt: skip
        from txverify.simulators.issuer import masked_transaction

        sample = issuer_pb2.IssuerInquiryResponse(
            transaction=masked_transaction(bank.ledger.get_transaction(refs[0]))  # type: ignore[arg-type]
        )
        server = None
        if kind == "bank":
            port = sim.nodes[BANK].port
        else:
            await sim.stop()
            server = new_server()
            issuer_pb2_grpc.add_IssuerServiceServicer_to_server(_Constant(sample), server)
            port = bind(server, "127.0.0.1", 0)
            await server.start()
        conn.send((port, refs))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "stop"
        if server is not None:
            await server.stop(0)
        else:
            await sim.stop()

    asyncio.run(main())


# --- load (client processes) ---------------------------------------------------------------


def load(
    address: str, refs: list[str], concurrency: int, rate: float, seconds: float, conn: Connection
) -> None:
    """Closed loop (`concurrency` workers) or, with a rate, open loop at `rate` requests/s
    (latency counted from each request's scheduled time); sends the latencies."""

    async def main() -> list[float]:
        channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
        stubs = [issuer_pb2_grpc.IssuerServiceStub(c) for c in channels]
        for c in channels:
            await c.channel_ready()
        rng = random.Random(os.getpid())
        latencies: list[float] = []
        errors = 0
        stop_at = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            nonlocal errors
            stub = stubs[i % len(stubs)]
            while (start := time.perf_counter()) < stop_at:
                request = issuer_pb2.IssuerInquiryRequest(
                    slip_ref=common_pb2.SlipRef(sending_bank=BANK, trans_ref=rng.choice(refs))
                )
                try:
                    await stub.IssuerInquiry(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        async def one(stub: Any, scheduled: float) -> None:
            nonlocal errors
            request = issuer_pb2.IssuerInquiryRequest(
                slip_ref=common_pb2.SlipRef(sending_bank=BANK, trans_ref=rng.choice(refs))
            )
            try:
                await stub.IssuerInquiry(request, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies.append(time.perf_counter() - scheduled)

        if rate > 0:
            start, tasks = time.perf_counter(), []
            for i in range(int(rate * seconds)):
                scheduled = start + i / rate
                if (wait := scheduled - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(one(stubs[i % len(stubs)], scheduled)))
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
        for c in channels:
            await c.close()
        if errors:
            raise RuntimeError(f"{errors} inquiries failed: the benchmark is invalid")
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
    server_cpu_s_per_1k: float


def measure(kind: str, rnd: int, args: argparse.Namespace) -> Figures:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve, args=(kind, args.transactions, child))
    server.start()
    port, refs = parent.recv()
    address = f"127.0.0.1:{port}"
    # Warm up (connections, caches), then measure.
    _run_clients(ctx, address, refs, args, 1.0)
    cpu0 = cpu_seconds(server.pid)  # type: ignore[arg-type]
    started = time.perf_counter()
    latencies = _run_clients(ctx, address, refs, args, args.seconds)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(server.pid) - cpu0  # type: ignore[arg-type]
    parent.send("stop")
    server.join(timeout=10)
    latencies.sort()
    n = len(latencies)
    return Figures(
        config=kind,
        round=rnd,
        requests=n,
        rps=n / elapsed,
        p50_ms=latencies[n // 2] * 1000,
        p99_ms=latencies[int(n * 0.99)] * 1000,
        server_cpu_s_per_1k=cpu / n * 1000,
    )


def _run_clients(
    ctx: Any, address: str, refs: list[str], args: argparse.Namespace, seconds: float
) -> list[float]:
    pipes, workers = [], []
    procs = args.client_procs
    for _ in range(procs):
        parent, child = ctx.Pipe()
        share = (address, refs, args.concurrency // procs, args.rate / procs, seconds, child)
        p = ctx.Process(target=load, args=share)
        p.start()
        pipes.append(parent)
        workers.append(p)
    latencies: list[float] = []
    for parent, p in zip(pipes, workers, strict=True):
        latencies += parent.recv()
        p.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--concurrency", type=int, default=64, help="closed loop: in flight")
    parser.add_argument(
        "--rate",
        type=float,
        default=1500,
        help="open loop: requests/s offered to both servers (0 = closed loop, max throughput)",
    )
    parser.add_argument("--client-procs", type=int, default=1, help="load processes")
    parser.add_argument("--transactions", type=int, default=5000, help="ledger size of the bank")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    results: list[Figures] = []
    print(
        f"{'config':<10} {'round':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'srv CPU s/1k':>13}"
    )
    for rnd in range(1, args.rounds + 1):
        for kind in ("bare", "bank"):
            f = measure(kind, rnd, args)
            results.append(f)
            print(
                f"{f.config:<10} {f.round:>5} {f.rps:>9.0f} {f.p50_ms:>8.2f} {f.p99_ms:>8.2f} "
                f"{f.server_cpu_s_per_1k:>13.3f}",
                flush=True,
            )

    def med(kind: str, attr: str) -> float:
        return float(statistics.median(getattr(f, attr) for f in results if f.config == kind))

    summary = {
        "rps_ratio_bank_over_bare": med("bank", "rps") / med("bare", "rps"),
        # capacity ratio: how many bank answers one CPU-second buys, relative to the yardstick
        "cpu_capacity_ratio_bank_over_bare": med("bare", "server_cpu_s_per_1k")
        / med("bank", "server_cpu_s_per_1k"),
        "cores": os.cpu_count(),
    }
    print(
        f"bank/bare throughput ratio (median): {summary['rps_ratio_bank_over_bare']:.2f}\n"
        f"bank/bare capacity ratio by server CPU per request (median): "
        f"{summary['cpu_capacity_ratio_bank_over_bare']:.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(f) for f in results], "summary": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
