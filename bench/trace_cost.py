"""What tracing costs the hub: CPU per 1,000 verifications with tracing off, with a caller's
traceparent passed on, and with OpenTelemetry spans exported to an OTLP collector.

    python bench/trace_cost.py [--rounds 3] [--seconds 5] [--json bench-trace-cost.json]

Processes as in bench/harness.py (the simulated banks; hubs as `txverify hub` on
SQLite files of their own), loaded by h2load's closed loop (needs h2load: make
bench-tools), alternating, the order flipped each round:

- off: the hub as it runs by default; requests carry no traceparent;
- propagate: the same hub, every request with a traceparent (parsed, logged,
  audited, passed on to the issuer with a new parent id);
- on: a hub with --otlp-endpoint naming a collector in this script (OTLP/gRPC on
  loopback, which counts the spans and drops them), every request with a
  traceparent: two spans per verification, exported in batches.

Prints the medians and the ratios to "off", and how many spans per verification
reached the collector (about 2 when none were dropped), and writes them as JSON.
Needs the otel extra (pip install 'txverify[otel]').
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import (  # noqa: E402
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from harness import Bench, Run, bench_settings  # noqa: E402
from txverify.cli.faultlab.processes import start_server  # noqa: E402
from txverify.cli.network import cli_argv  # noqa: E402

TRACEPARENT = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MODES = ("off", "propagate", "on")
# Seconds for the hub's batch span processor to send what it holds (its schedule delay: 5 s).
FLUSH = 6.0


class DroppingCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC collector that accepts every export, counts its spans and drops them."""

    def __init__(self) -> None:
        self.spans = 0
        self.exports = 0
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self.spans += count
            self.exports += 1
        return trace_service_pb2.ExportTraceServiceResponse()


def start_collector() -> tuple[grpc.Server, DroppingCollector, int]:
    collector = DroppingCollector()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        collector, server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, collector, port


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--json", type=Path, default=Path("bench-trace-cost.json"))
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        parser.error("h2load is not installed: make bench-tools")
    settings = bench_settings(args.seconds)
    collector_server, collector, collector_port = start_collector()
    results: dict[str, list[Run]] = {mode: [] for mode in MODES}
    on_requests = spans = 0
    with tempfile.TemporaryDirectory(prefix="txverify-trace-cost-") as tmpdir:
        tmp = Path(tmpdir)
        bench = Bench(settings, tmp)
        try:
            bench.start()  # the banks, the yardstick (not measured here) and the plain hub
            bench.servers.pop("yardstick").stop()
            bench.servers["off"] = bench.servers.pop("hub")
            bench.servers["on"] = start_server(
                "on",
                cli_argv(
                    "hub", "--members", str(tmp / "members.toml"), "--port", "0",
                    "--ready-line", "--db", f"sqlite:///{tmp / 'on.sqlite'}",
                    "--metrics-port", "0", "--rate-limit-rps", "1000000",
                    "--rate-limit-burst", "100000",
                    "--otlp-endpoint", f"http://127.0.0.1:{collector_port}",
                ),
                tmp / "on.log",
            )  # fmt: skip
            bench._check("on", bench.servers["on"].address)
            # The propagate runs load the plain hub: its h2load log (the errors it
            # counts) is the one of its server's name.
            (tmp / "propagate.log").symlink_to(tmp / "hub.log")
            (tmp / "off.log").symlink_to(tmp / "hub.log")
            bench.servers["propagate"] = bench.servers["off"]
            for mode in MODES:  # warm-up
                bench.h2load(mode, 0, () if mode == "off" else (TRACEPARENT,))
            time.sleep(FLUSH)
            spans_before = collector.spans
            for rnd in range(1, args.rounds + 1):
                for mode in MODES if rnd % 2 else reversed(MODES):
                    run = bench.h2load(mode, rnd, () if mode == "off" else (TRACEPARENT,))
                    bench.record(run)
                    results[mode].append(run)
            on_requests = sum(r.requests for r in results["on"])
            time.sleep(FLUSH)
            spans = collector.spans - spans_before
        finally:
            bench.servers.pop("propagate", None)
            bench.stop()
            collector_server.stop(grace=1)
    cpu = {m: statistics.median(r.cpu_s_per_1k[m] for r in runs) for m, runs in results.items()}
    rps = {m: statistics.median(r.rps for r in runs) for m, runs in results.items()}
    summary: dict[str, Any] = {
        "cpu_s_per_1k": cpu,
        "rps": rps,
        "cpu_ratio_to_off": {m: cpu[m] / cpu["off"] for m in MODES},
        "cpu_added_ms_per_verification": {m: cpu[m] - cpu["off"] for m in MODES},
        # About 2 (Verify, IssuerInquiry) unless the hub's span queue overflowed.
        "spans_per_verification_on": spans / max(1, on_requests),
        "exports": collector.exports,
    }
    print("\nmedians, hub CPU seconds per 1,000 verifications (h2load, closed loop)")
    for mode in MODES:
        print(
            f"{mode:<10} {cpu[mode]:.3f} s  x{summary['cpu_ratio_to_off'][mode]:.3f}  "
            f"({summary['cpu_added_ms_per_verification'][mode] * 1000:+.1f} µs a verification)  "
            f"req/s {rps[mode]:7.0f}"
        )
    print(
        f"spans at the collector per 'on' verification: "
        f"{summary['spans_per_verification_on']:.2f} ({collector.exports} exports)"
    )
    args.json.write_text(
        json.dumps({"settings": vars(args) | {"json": str(args.json)}, "summary": summary,
                    "runs": {m: [r.__dict__ for r in runs] for m, runs in results.items()}},
                   indent=2) + "\n"
    )  # fmt: skip
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
