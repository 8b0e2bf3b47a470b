"""The audit writer alone: N concurrent callers writing named verifications of random slips.

    python bench/writer_bench.py [--concurrency 4 64] [--seconds 6]

Each caller sleeps 0-2 ms (an issuer's answer) and writes one record, as the hub
does. Prints records/s, CPU per record of this process (all threads), the average batch,
p50/p99 of a write (queue + commit) and the WAL's size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto"), str(ROOT / "bench")]

from commit_cost import named_record  # noqa: E402
from txverify.hub.audit.sqlite import SqliteAuditStore  # noqa: E402
from txverify.hub.audit.writer import AuditWriter  # noqa: E402
from txverify.v1 import verification_pb2  # noqa: E402

RESPONSE = verification_pb2.VerifyResponse(request_id="x" * 32).SerializeToString()


def _cpu() -> float:
    """CPU seconds of this process (all its threads)."""
    times = os.times()
    return times.user + times.system


async def _run(concurrency: int, seconds: float, db: Path) -> str:
    store = SqliteAuditStore(f"sqlite:///{db}")
    batches = [0, 0]

    def on_batch(records: int, _: float) -> None:
        batches[0] += 1
        batches[1] += records

    writer = AuditWriter(store, on_batch=on_batch)
    await writer.write(named_record(RESPONSE))
    latencies: list[float] = []
    cpu0, t0 = _cpu(), time.perf_counter()

    async def caller() -> None:
        while time.perf_counter() < t0 + seconds:
            await asyncio.sleep(random.random() * 0.002)
            start = time.perf_counter()
            await writer.write(named_record(RESPONSE))
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    wal = await asyncio.to_thread(os.path.getsize, f"{db}-wal")
    await writer.close()
    latencies.sort()
    n = len(latencies)
    return (
        f"concurrency {concurrency}: {n / elapsed:.0f} records/s, CPU {cpu / n * 1e6:.0f} µs a "
        f"record, batches of {batches[1] / max(1, batches[0]):.1f}, p50 "
        f"{latencies[n // 2] * 1e3:.2f} ms, p99 {latencies[int(n * 0.99)] * 1e3:.2f} ms, "
        f"WAL {wal / 1e6:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    for concurrency in args.concurrency:
        with tempfile.TemporaryDirectory() as tmp:
            print(asyncio.run(_run(concurrency, args.seconds, Path(tmp) / "a.sqlite")), flush=True)


if __name__ == "__main__":
    main()
