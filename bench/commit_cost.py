"""What one audit record costs SQLite: the batch's statements and its COMMIT, by batch size.

    python bench/commit_cost.py [--records 2000]

Stages batches of N named verifications (random slips of 4,000, random request
ids, as the harness sends them) on a fresh SqliteAuditStore and COMMITs them,
timing CPU (process time, this thread) for each part. No fsync is counted apart:
the COMMIT includes it (synchronous=FULL), and its kernel CPU with it.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from txverify.hub.audit import AuditEntry, BatchItem, SlipUse, UseCounts, Verified  # noqa: E402
from txverify.hub.audit.sqlite import SqliteAuditStore  # noqa: E402
from txverify.v1 import verification_pb2  # noqa: E402


def named_record(raw: bytes) -> BatchItem:
    """A named verification of a random slip of 4,000, answered with `raw`, as the
    harness's load sends them (also bench/writer_bench.py's)."""
    ref = f"REF{random.randrange(4000)}"
    entry = AuditEntry(
        datetime.now(UTC), f"{random.getrandbits(128):032x}", "014", "", "002", ref, "OK"
    )

    def finish(_: UseCounts) -> verification_pb2.VerifyResponse:
        return verification_pb2.VerifyResponse.FromString(raw)

    return BatchItem(entry, Verified(SlipUse("002", ref, "014", ""), finish))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2000, help="per batch size")
    args = parser.parse_args()
    response = verification_pb2.VerifyResponse(request_id="x" * 32)
    response.transaction.trans_ref, response.transaction.sending_bank = "2026120201400000123", "014"
    raw = response.SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "audit.sqlite"
        store = SqliteAuditStore(f"sqlite:///{db}")
        for n in (1, 2, 4, 8, 16, 32):
            batches = max(50, args.records // n)
            staging = committing = 0.0
            for _ in range(batches):
                items = [named_record(raw) for _ in range(n)]
                t0 = time.thread_time()
                store.stage_batch(items)
                t1 = time.thread_time()
                store.commit()
                committing += time.thread_time() - t1
                staging += t1 - t0
            per = batches * n
            wal = Path(f"{db}-wal").stat().st_size / 1e6
            print(
                f"batch {n:3d}: statements {staging / per * 1e6:6.1f} µs/record, "
                f"COMMIT {committing / batches * 1e6:7.1f} µs/batch = "
                f"{committing / per * 1e6:6.1f} µs/record (WAL {wal:.1f} MB)",
                flush=True,
            )
        store.close()


if __name__ == "__main__":
    main()
